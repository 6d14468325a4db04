"""The upgrade fixture: a small CloudWaste home made by main at acc48ef, readable by this code.

``fixtures/home-main-acc48ef.tar.gz`` is a real home (Dagster instance, SQLite warehouse, exports,
model, demo key, accounts file) made by ``scripts/make-upgrade-fixture`` with the code of that
commit: three accounts (two AWS, one Azure) scanned for eight days under the day x account alias
partitions. The JSON beside it records what it holds and the environment that opens it. Here the
home is unpacked and opened as the JSON says, and everything the JSON records is read back: the
warehouse's row counts, schema revision and key, Dagster's runs, dynamic partitions and
materialized partition keys. Nothing here writes to the home (no migration, no run).

Issue 17 (scan partitions by account shard) extends this to the upgrade itself: the warehouse's
rows must come out of it untouched.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.privacy import keyring
from cloudwaste_pipeline.warehouse import queries, schema
from cloudwaste_pipeline.warehouse.engine import current_revision, dispose_engines, make_engine

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURE = FIXTURES / "home-main-acc48ef.tar.gz"
RECORD = json.loads(FIXTURE.with_name("home-main-acc48ef.json").read_text())


@dataclass
class Home:
    path: Path
    env: dict[str, str]


def open_environment(unpacked: Path, record: dict[str, Any]) -> dict[str, str]:
    """The environment the fixture's JSON prescribes, for the home unpacked under ``unpacked``."""
    home = unpacked / record["archive"]["root"]
    wanted = record["environment"]
    return {
        "CLOUDWASTE_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "CLOUDWASTE_ANONYMIZATION_KEY": (unpacked / wanted["key_file"]).read_text().strip(),
        "CLOUDWASTE_NOW": wanted["CLOUDWASTE_NOW"],
    }


@pytest.fixture
def fixture_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    env = open_environment(tmp_path, RECORD)
    for name in RECORD["environment"]["unset"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    url = settings.database_url()
    try:
        yield Home(Path(env["CLOUDWASTE_HOME"]), env)
    finally:
        dispose_engines(url)


def test_the_tarball_is_the_one_described() -> None:
    assert hashlib.sha256(FIXTURE.read_bytes()).hexdigest() == RECORD["archive"]["sha256"]
    assert FIXTURE.stat().st_size == RECORD["archive"]["bytes"] < 2_000_000
    assert RECORD["made_by"]["git_commit"].startswith("acc48ef")


def test_the_warehouse_holds_the_recorded_rows(fixture_home: Home) -> None:
    assert settings.paths().home == fixture_home.path
    engine = make_engine()  # the home's SQLite warehouse, raw.db attached; not migrated
    recorded = RECORD["warehouse"]
    with engine.connect() as conn:
        counts = {
            "warehouse.db": {
                name: conn.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar()
                for name in recorded["tables"]["warehouse.db"]
            },
            "raw.db": {
                name: conn.execute(
                    sa.select(sa.func.count()).select_from(sa.table(name, schema=schema.RAW_SCHEMA))
                ).scalar()
                for name in recorded["tables"]["raw.db"]
            },
        }
        ml_counts = queries.table_counts(conn)
        epochs = keyring.history(conn)
        keyring.check_chain(epochs, keyring.load_keychain())  # the demo key is the warehouse's
    assert counts == recorded["tables"]
    # The record covers every table the fixture's revision has: the only tables of this code's
    # schema it lacks are ones later migrations add (absent until the upgrade, test_upgrade.py).
    recorded_names = set(counts["warehouse.db"]) | set(counts["raw.db"])
    later = {t for t in (*schema.ML_TABLES, *schema.RAW_TABLES) if t.name not in recorded_names}
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        assert not [t.name for t in later if inspector.has_table(t.name, schema=t.schema)]
    assert ml_counts == {name: counts["warehouse.db"][name] for name in ml_counts}
    assert all(counts["raw.db"][name] for name in ("raw_scans", "resource_action_events"))
    assert all(ml_counts.values()), ml_counts
    assert [(e.epoch, e.fingerprint) for e in epochs] == [
        (e["epoch"], e["fingerprint"]) for e in recorded["key_epochs"]
    ]
    assert current_revision(engine) == recorded["alembic_revision"]
    exports = sorted(
        str(p.relative_to(fixture_home.path))
        for p in settings.paths().exports.rglob("*")
        if p.is_file()
    )
    assert exports == RECORD["exports"]


def test_dagster_lists_the_recorded_runs_and_partitions(fixture_home: Home) -> None:
    recorded = RECORD["dagster"]
    with dg.DagsterInstance.get() as instance:
        assert Path(instance.root_directory) == fixture_home.path / "dagster"
        runs = instance.get_runs()
        assert len(runs) == recorded["runs"]
        by_job = Counter(f"{r.job_name} {r.status.value}" for r in runs)
        assert dict(by_job) == recorded["runs_by_job_and_status"]
        accounts = sorted(instance.get_dynamic_partitions("cloud_accounts"))
        assert accounts == recorded["dynamic_partitions"]["cloud_accounts"]
        scans = instance.get_materialized_partitions(dg.AssetKey("raw_cloud_scans"))
        assert sorted(scans) == recorded["assets"]["raw_cloud_scans"]["partitions"]
        assert len(scans) == 24  # 3 accounts x 8 days, keys '<alias>|<date>'
        assert "contoso-dev|2026-11-16" in scans
        for asset, expected in recorded["assets"].items():
            key = dg.AssetKey(asset)
            assert sorted(instance.get_materialized_partitions(key)) == expected["partitions"]
            records = instance.fetch_materializations(key, limit=10_000).records
            assert len(records) == expected["materializations"], asset
