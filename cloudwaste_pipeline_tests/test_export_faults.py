"""Exports under faults: a process killed while writing or publishing (in a child process, at
the named crash points), a full disk, a folder it may not write. Whatever happens, a reader
trusts only what ``verify_export`` confirms, and the next run leaves no staging folder, no file
its manifest does not list, and a verified manifest."""

import errno
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import boto3
import pytest
from sqlalchemy.engine import Engine

from cloudwaste_pipeline import exports, manifests, publish
from cloudwaste_pipeline.errors import CloudWasteError
from cloudwaste_pipeline.exports import (
    ExportError,
    LocalDestination,
    S3Destination,
    export_window,
    sweep_orphans,
    sweep_staging,
    verify_export,
)
from cloudwaste_pipeline.faults import CRASH_ENV, CRASH_EXIT_CODE
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline_tests.test_exports import (
    MONDAY,
    STAMP,
    SUNDAY,
    cost_row,
    fill_week,
    insert,
)

MANIFEST = f"manifest_{STAMP}.json"

CHILD = """
import sys
from datetime import date
from pathlib import Path

import boto3
import sqlalchemy as sa

from cloudwaste_pipeline.exports import LocalDestination, S3Destination, export_window

url, target, staging_root = sys.argv[1:]
if target.startswith("s3://"):
    bucket, _, prefix = target[len("s3://"):].partition("/")
    destination = S3Destination(boto3.client("s3"), bucket, prefix, Path(staging_root))
else:
    destination = LocalDestination(Path(target))
export_window(sa.create_engine(url), destination, date(2026, 11, 9), date(2026, 11, 15))
"""


def export_killed_at(point: str, engine: Engine, target: str, staging_root: Path) -> None:
    """Run an export in a child process armed to die at ``point``; it must die there."""
    url = engine.url.render_as_string(hide_password=False)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, url, target, str(staging_root)],
        env={**os.environ, CRASH_ENV: point},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == CRASH_EXIT_CODE, done.stderr[-2000:]


def staging_left(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"{publish.STAGING_PREFIX}*") if p.is_dir()]


def listed(files: dict) -> set[str]:
    """The names of a manifest's (or an ExportResult's) ``files``."""
    return {entry["name"] for entry in files.values()}


def assert_clean_and_verified(folder: Path) -> None:
    """Only the manifest and what it lists, all verified; no staging folder."""
    manifest = json.loads((folder / MANIFEST).read_text())
    assert verify_export(folder / MANIFEST) == [] and verify_export(folder) == []
    assert {p.name for p in folder.iterdir()} == listed(manifest["files"]) | {MANIFEST}


def two_versions(engine: Engine, tmp_path: Path) -> tuple[Path, dict]:
    """A published export of the week, and new rows since, so the next export differs."""
    fill_week(engine)
    insert(engine, schema.cost_trend_data, [cost_row("2026-11")])
    folder = tmp_path / "out"
    export_window(engine, LocalDestination(folder), MONDAY, SUNDAY)
    fill_week(engine, first=100, count=5)
    return folder, json.loads((folder / MANIFEST).read_text())


# --- killed -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "database"),
    [  # the write path differs per database (COPY on PostgreSQL); publishing does not
        ("export.write", "sqlite"),
        ("export.write", "postgres"),
        ("export.publish", "sqlite"),
        ("export.committed", "sqlite"),
    ],
)
def test_a_killed_export_never_shows_a_half_export_and_the_next_run_recovers(
    point: str, database: str, tmp_path: Path, request: pytest.FixtureRequest
):
    engine = request.getfixturevalue(f"{database}_engine")
    folder, before = two_versions(engine, tmp_path)
    export_killed_at(point, engine, str(folder), tmp_path)

    after = json.loads((folder / MANIFEST).read_text())
    old, new = listed(before["files"]), listed(after["files"])
    assert verify_export(folder / MANIFEST) == []  # the old export, or the whole new one
    names = {p.name for p in folder.iterdir() if p.is_file()}
    if point == "export.write":
        assert after == before and staging_left(folder), "killed while writing staging"
    elif point == "export.publish":
        assert after == before and names - old - {MANIFEST}, "some new files placed"
    else:
        assert new != old and names & (old - new), "committed, old files not yet removed"

    result = export_window(engine, LocalDestination(folder), MONDAY, SUNDAY)
    assert not staging_left(folder)
    assert_clean_and_verified(folder)
    assert result.row_counts["ml_training_data"] == 17


def test_a_killed_s3_export_leaves_the_old_manifest_valid_and_the_next_run_recovers(
    week: Engine, moto_url: str, tmp_path: Path
):
    s3 = boto3.client("s3")
    bucket = f"faults-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    staging_root = tmp_path / "s3-staging"
    destination = S3Destination(s3, bucket, "ml/weekly/x/", staging_root)
    first = export_window(week, destination, MONDAY, SUNDAY)
    fill_week(week, first=100, count=5)

    export_killed_at("export.write", week, f"s3://{bucket}/ml/weekly/x/", staging_root)
    assert staging_left(staging_root)  # what the erasure would otherwise never see
    export_killed_at("export.publish", week, f"s3://{bucket}/ml/weekly/x/", staging_root)
    keys = s3_names(bucket, "ml/weekly/x/")
    assert keys - listed(first.files) - {MANIFEST}, "some new objects uploaded"
    assert verify_export(first.manifest, s3) == []  # still the first export, whole

    again = export_window(week, destination, MONDAY, SUNDAY)
    assert not staging_left(staging_root)
    assert verify_export(again.manifest, s3) == []
    assert s3_names(bucket, "ml/weekly/x/") == listed(again.files) | {MANIFEST}
    assert again.row_counts["ml_training_data"] == 17


def s3_names(bucket: str, prefix: str) -> set[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", [])}


@pytest.fixture
def week(sqlite_engine: Engine) -> Engine:
    fill_week(sqlite_engine)
    insert(sqlite_engine, schema.cost_trend_data, [cost_row("2026-11")])
    return sqlite_engine


# --- disk full, no permission -------------------------------------------------------------------


def fail_on(monkeypatch, owner, name: str, code: int, when=lambda *a, **k: True) -> None:
    """``owner.name`` raises OSError(code) when ``when(*args)`` holds; works otherwise."""
    real = getattr(owner, name)

    def failing(*args, **kwargs):
        if when(*args, **kwargs):
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)


FAULTS = {
    "disk full while writing a dataset": (
        lambda mp: fail_on(
            mp,
            exports._Writers,
            "write",
            errno.ENOSPC,
            lambda self, rows: "action_at" in self.columns,
        ),
        "no space is left on the device",
    ),
    "disk full writing the manifest": (
        lambda mp: fail_on(
            mp, Path, "write_text", errno.ENOSPC, lambda self, *a, **k: "manifest" in self.name
        ),
        "no space is left on the device",
    ),
    "no permission to create staging": (
        lambda mp: fail_on(mp, tempfile, "mkdtemp", errno.EACCES),
        "permission is denied",
    ),
    "no permission to publish a file": (
        lambda mp: fail_on(
            mp, os, "replace", errno.EACCES, lambda src, dst: "user_action" in str(dst)
        ),
        "permission is denied",
    ),
    "disk full publishing the manifest": (
        lambda mp: fail_on(mp, os, "replace", errno.ENOSPC, lambda src, dst: MANIFEST in str(dst)),
        "no space is left on the device",
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_disk_full_or_no_permission_is_one_sentence_and_leaves_the_old_export(
    week: Engine, tmp_path: Path, monkeypatch, fault: str
):
    folder = tmp_path / "out"
    destination = LocalDestination(folder)
    export_window(week, destination, MONDAY, SUNDAY)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    fill_week(week, first=100, count=5)
    inject, cause = FAULTS[fault]
    inject(monkeypatch)

    with pytest.raises(ExportError) as raised:
        export_window(week, destination, MONDAY, SUNDAY)

    message = str(raised.value)
    assert message == f"cannot write the export to {folder}: {cause}"
    assert isinstance(raised.value, CloudWasteError)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no staging, no new file
    assert verify_export(folder / MANIFEST) == []


def test_a_full_local_disk_under_an_s3_export_names_the_staging_folder(
    week: Engine, moto_url: str, tmp_path: Path, monkeypatch
):
    s3 = boto3.client("s3")
    bucket = f"faults-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    staging_root = tmp_path / "s3-staging"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(staging_root / ".staging-x/f"))

    monkeypatch.setattr(exports._Writers, "write", full)
    with pytest.raises(ExportError, match=f"to {staging_root}: no space is left"):
        export_window(week, S3Destination(s3, bucket, "p/", staging_root), MONDAY, SUNDAY)
    assert not staging_left(staging_root) and s3_names(bucket, "p/") == set()


def test_an_s3_prefix_out_of_reach_is_one_sentence(week: Engine, moto_url: str, tmp_path: Path):
    staging_root = tmp_path / "s3-staging"
    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    destination = S3Destination(boto3.client("s3"), bucket, "ml/", staging_root)
    with pytest.raises(ExportError) as raised:
        export_window(week, destination, MONDAY, SUNDAY)
    assert str(raised.value) == f"cannot write the export to s3://{bucket}/ml/: " + (
        "the bucket does not exist"
    )
    assert not staging_left(staging_root)


def test_other_os_errors_are_not_disguised(week: Engine, tmp_path: Path, monkeypatch):
    """Only the destination's errors an operator fixes become ExportError; a bug stays a bug."""
    fail_on(monkeypatch, exports._Writers, "write", errno.EBADF)
    with pytest.raises(OSError) as raised:
        export_window(week, LocalDestination(tmp_path / "out"), MONDAY, SUNDAY)
    assert not isinstance(raised.value, ExportError)


# --- sweeps -------------------------------------------------------------------------------------


def test_sweep_staging_removes_dead_staging_only_and_follows_no_link(tmp_path: Path):
    root = tmp_path / "ml_datasets"
    week = root / "weekly" / str(MONDAY)
    dead = week / ".staging-dead"
    dead.mkdir(parents=True)
    (dead / "ml_training_data_20261115.csv").write_text("account_hash\nabc\n")
    outside = tmp_path / "keep"
    outside.mkdir()
    (outside / "precious").write_text("x")
    (week / ".staging-link").symlink_to(outside, target_is_directory=True)

    with LocalDestination(root / "adhoc" / "w").staging() as live:
        (live / "being-written").write_text("rows")
        assert sweep_staging(root) == 1  # the dead one; the live one is held by its writer
        assert live.exists() and not dead.exists()
    assert not live.exists()
    assert (outside / "precious").exists() and (week / ".staging-link").is_symlink()
    assert sweep_staging(root) == 0
    assert sweep_staging(tmp_path / "missing") == 0


def test_orphans_are_the_export_files_their_manifest_does_not_list():
    names = [
        "ml_training_data_20261115_05849121.json",  # an all-digit content id is not a stamp
        "ml_training_data_20261115_3fa9c2e1.json",
        "ml_training_data_20261115.csv",  # the name earlier versions published
        "cost_trends_20261122_aaaaaaaa.parquet",  # a window without a manifest: a dead publish
        "user_action_patterns_20261129_bbbbbbbb.csv",  # its manifest is unreadable: kept
        "manifest_20261115.json",
        "warehouse.db",
        "notes_20261115.txt",
    ]
    by_stamp = {"20261115": {"ml_training_data_20261115_05849121.json"}, "20261129": None}
    assert manifests.orphans(names, by_stamp) == [
        "cost_trends_20261122_aaaaaaaa.parquet",
        "ml_training_data_20261115.csv",
        "ml_training_data_20261115_3fa9c2e1.json",
    ]


def test_sweep_orphans_leaves_other_files_and_a_live_publish_alone(week: Engine, tmp_path: Path):
    folder = tmp_path / "out"
    result = export_window(week, LocalDestination(folder), MONDAY, SUNDAY)
    (folder / "README.txt").write_text("hand-written")
    (folder / "ml_training_data_20261115_0123abcd.csv").write_text("half-published")
    with publish.folder_lock(folder), publish.folder_lock(folder, wait=False) as free:
        assert not free  # a publish holds the folder: a sweep waits for it
    assert sweep_orphans(tmp_path) == 1
    assert {p.name for p in folder.iterdir()} == listed(result.files) | {MANIFEST, "README.txt"}


# --- verify -------------------------------------------------------------------------------------


def test_verify_export_names_each_problem(week: Engine, tmp_path: Path, moto_url: str):
    folder = tmp_path / "out"
    result = export_window(week, LocalDestination(folder), MONDAY, SUNDAY)
    assert verify_export(result.manifest) == []
    files = result.files
    (folder / files["ml_training_data.csv"]["name"]).write_text("tampered")
    (folder / files["cost_trends.json"]["name"]).unlink()
    parquet = folder / files["ml_training_data.parquet"]["name"]
    parquet.write_bytes(parquet.read_bytes()[:-1] + b"X")  # same size, other bytes
    assert sorted(verify_export(result.manifest)) == sorted(
        [
            f"{files['ml_training_data.csv']['name']}: 8 bytes, the manifest says "
            f"{files['ml_training_data.csv']['bytes']}",
            f"{files['cost_trends.json']['name']}: listed but missing",
            f"{parquet.name}: sha256 differs from the manifest",
        ]
    )
    manifest = json.loads(Path(result.manifest).read_text())
    manifest["files"]["cost_trends.csv"]["name"] = "../../etc/passwd"
    manifest["files"]["cost_trends.parquet"]["rows"] = 5
    Path(result.manifest).write_text(json.dumps(manifest))
    problems = verify_export(result.manifest)
    assert "cost_trends.csv: not a file name in the manifest's folder" in problems
    assert "cost_trends: its files disagree on the number of rows" in problems
    assert verify_export(tmp_path) == [f"{tmp_path}: no manifest"]
    assert verify_export(folder / "manifest_20200101.json") == [
        f"{folder / 'manifest_20200101.json'}: no manifest"
    ]

    s3 = boto3.client("s3")
    bucket = f"verify-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    on_s3 = export_window(week, S3Destination(s3, bucket, "w/", tmp_path / "st"), MONDAY, SUNDAY)
    assert verify_export(on_s3.manifest) == []
    missing = f"s3://{bucket}/w/manifest_20200101.json"
    assert verify_export(missing, s3) == [f"{missing}: no manifest"]
    name = on_s3.files["user_action_patterns.json"]["name"]
    s3.put_object(Bucket=bucket, Key=f"w/{name}", Body=b"[]\n")
    assert verify_export(on_s3.manifest, s3) == [
        f"{name}: 3 bytes, the manifest says {on_s3.files['user_action_patterns.json']['bytes']}"
    ]


def test_the_adhoc_job_fails_with_the_sentence_on_a_full_disk(
    week: Engine, sqlite_url: str, tmp_path: Path, monkeypatch
):
    from cloudwaste_pipeline.defs.adhoc_exports import adhoc_export_job
    from cloudwaste_pipeline_tests.test_exports import resources

    fail_on(monkeypatch, exports._Writers, "write", errno.ENOSPC)
    out = tmp_path / "ml_datasets"
    run = adhoc_export_job.execute_in_process(
        run_config={"ops": {"export_adhoc_window": {"config": {"start": str(MONDAY)}}}},
        resources=resources(sqlite_url, out),
        raise_on_error=False,
    )
    assert not run.success
    (failure,) = run.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith(f"cannot write the export to {out / 'adhoc'}/")
    assert description.endswith(": no space is left on the device")
    assert not staging_left(out) and not any(p.is_file() for p in out.rglob("*"))


def test_a_window_failing_quality_is_a_sentence_the_cli_prints(week: Engine, tmp_path: Path):
    from cloudwaste_pipeline.quality import export_if_valid
    from cloudwaste_pipeline_tests.test_exports import training_row

    insert(week, schema.ml_training_data, [training_row(0, MONDAY, confidence_level="bogus")])
    with pytest.raises(CloudWasteError, match=r"^export of 2026-11-09\.\.2026-11-15 blocked by"):
        export_if_valid(week, LocalDestination(tmp_path / "out"), MONDAY, SUNDAY)
    assert not (tmp_path / "out").exists()
