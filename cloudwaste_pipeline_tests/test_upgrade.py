"""The upgrade from day x account partitions (main at acc48ef) to day x shard, in place.

The fixture home (``test_upgrade_fixture.py``) is upgraded the way README's Operations section
says: ``cloudwaste db upgrade``, then past days re-derived per shard where the UI should show
them. Checked: every warehouse row is untouched by the migration (a digest of each table's rows,
before and after), Dagster's history of the old partitions is still there (runs, materialization
events of ``<alias>|<date>`` keys), the new shard partitions start empty and a re-derive of a past
day fills its shard's partition from the stored raw scan without duplicating a row.
"""

from __future__ import annotations

import hashlib
from datetime import date

import dagster as dg
import sqlalchemy as sa

from cloudwaste_pipeline import api, cli
from cloudwaste_pipeline.defs.partitions import shard_key
from cloudwaste_pipeline.sharding import shard_of
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline.warehouse.engine import current_revision, make_engine
from cloudwaste_pipeline_tests.test_upgrade_fixture import RECORD, Home, fixture_home  # noqa: F401

RECORDED_TABLES = {
    **{(None, name): n for name, n in RECORD["warehouse"]["tables"]["warehouse.db"].items()},
    **{(schema.RAW_SCHEMA, name): n for name, n in RECORD["warehouse"]["tables"]["raw.db"].items()},
}
DERIVED = ("ml_training_data", "resource_lifecycle_events", "cloudwatch_metrics_history")


def digests() -> dict[str, tuple[int, str]]:
    """Each recorded table's row count and a digest of its rows (sorted, every column)."""
    found = {}
    with make_engine().connect() as conn:
        for in_schema, name in RECORDED_TABLES:
            table = sa.Table(name, sa.MetaData(), schema=in_schema, autoload_with=conn)
            rows = sorted(repr(tuple(row)) for row in conn.execute(sa.select(table)))
            found[f"{in_schema or 'main'}.{name}"] = (
                len(rows),
                hashlib.sha256("\n".join(rows).encode()).hexdigest(),
            )
    return found


def test_an_upgrade_leaves_the_warehouse_rows_and_dagster_history_alone(
    fixture_home: Home,  # noqa: F811
) -> None:
    before = digests()
    assert {k: n for k, (n, _) in before.items()} == {
        f"{s or 'main'}.{name}": n for (s, name), n in RECORDED_TABLES.items()
    }

    assert cli.main(["db", "upgrade"]) == 0
    engine = make_engine()
    assert current_revision(engine) != RECORD["warehouse"]["alembic_revision"]
    migrated = digests()
    version = "main.cloudwaste_alembic_version"
    assert migrated.pop(version)[0] == 1
    assert migrated == {k: v for k, v in before.items() if k != version}  # no row touched
    with engine.connect() as conn:
        assert sa.inspect(conn).has_table("account_failures", schema=schema.RAW_SCHEMA)
    assert api.failing_accounts().empty

    scans = dg.AssetKey("raw_cloud_scans")
    day = date.fromisoformat(RECORD["demo"]["scan_days"][-2])
    alias = RECORD["accounts"]["aws"][0]
    new_key = shard_key(day, shard_of(alias))
    with dg.DagsterInstance.get() as instance:
        old_keys = instance.get_materialized_partitions(scans)
        assert f"{alias}|{day}" in old_keys  # the history of the old partitions stays listed
        assert new_key not in old_keys
        runs_before = len(instance.get_runs())

    # Re-derive one past day of one account: its shard's partition of that day fills, from the
    # raw scan stored that day (no cloud is reachable here), and no row is duplicated.
    result = api.scan_accounts([alias], day)
    assert result["success"].tolist() == [True], result
    assert result["shard"].tolist() == [shard_of(alias)]
    after = digests()
    assert {k: n for k, (n, _) in after.items()} == {k: n for k, (n, _) in before.items()}
    assert after[f"{schema.RAW_SCHEMA}.raw_scans"] == before[f"{schema.RAW_SCHEMA}.raw_scans"]
    with dg.DagsterInstance.get() as instance:
        assert new_key in instance.get_materialized_partitions(scans)
        for asset in DERIVED:
            assert new_key in instance.get_materialized_partitions(dg.AssetKey(asset)), asset
        assert len(instance.get_runs()) == runs_before + 1
        assert len(instance.fetch_materializations(scans, limit=10_000).records) == (
            RECORD["dagster"]["assets"]["raw_cloud_scans"]["materializations"] + 1
        )
