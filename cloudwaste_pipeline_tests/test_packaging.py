"""The code location loads from a non-editable install (as in a Docker image), migrations
included, and `dg` finds it from pyproject."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHECK = """
import sys, tempfile
import cloudwaste_pipeline
from cloudwaste_pipeline.definitions import defs
from cloudwaste_pipeline.warehouse.engine import make_engine, upgrade
assert cloudwaste_pipeline.__file__.startswith(sys.argv[1]), cloudwaste_pipeline.__file__
keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
assert len(keys) == 12 and {"active_waste_model", "cost_forecast"} <= keys, keys
upgrade(make_engine(f"sqlite:///{tempfile.mkdtemp()}/warehouse.db"))
print("ok", len(keys))
"""


def test_definitions_load_from_a_non_editable_install(tmp_path):
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        timeout=600,
    )
    wheel = next(wheels.glob("cloudwaste_pipeline-*.whl"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        timeout=600,
    )
    env = {**os.environ, "PYTHONPATH": str(target), "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", CHECK, str(target)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok 12"


def test_dg_finds_the_code_location_from_pyproject(tmp_path):
    dg = Path(sys.executable).with_name("dg")
    result = subprocess.run(
        [str(dg), "list", "defs", "--json"],
        cwd=ROOT,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("raw_cloud_scans", "user_action_sensor", "weekly_ml_export_schedule"):
        assert name in result.stdout


def test_the_readme_documents_every_setting_the_code_reads():
    """Every ``CLOUDWASTE_*`` / ``DAGSTER_*`` variable read anywhere in the package is in the
    README's configuration table."""
    import re

    read = set()
    for path in (ROOT / "cloudwaste_pipeline").rglob("*.py"):
        read |= set(re.findall(r"\"((?:CLOUDWASTE|DAGSTER)_[A-Z0-9_]+)\"", path.read_text()))
    section = (ROOT / "README.md").read_text().split("\n## Configuration\n", 1)[1]
    table = section.split("\n## ", 1)[0]
    documented = set(re.findall(r"`((?:CLOUDWASTE|DAGSTER)_[A-Z0-9_]+)`", table))
    assert "CLOUDWASTE_DATABASE_URL" in read  # the scan sees the package's settings
    assert read <= documented, sorted(read - documented)
