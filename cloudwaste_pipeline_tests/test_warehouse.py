"""The warehouse layer on SQLite and PostgreSQL.

Migrations build exactly the schema in ``schema.py`` (no drift), the raw store sits apart, bulk
writes round-trip values exactly, partition replacement never duplicates and rolls back whole,
and ``insert_new`` counts what it really wrote.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from cloudwaste_pipeline.warehouse import load, schema
from cloudwaste_pipeline.warehouse.engine import (
    VERSION_TABLE,
    current_revision,
    downgrade,
    include_name,
    is_postgres,
    make_engine,
    upgrade,
)
from cloudwaste_pipeline.warehouse.load import bulk_insert, insert_new, read_frame, replace_rows

ML_NAMES = {t.name for t in schema.ML_TABLES}
MODEL_NAMES = {t.name for t in schema.MODEL_TABLES}
OWN_NAMES = (
    ML_NAMES
    | MODEL_NAMES
    | {
        schema.erasure_tombstones.name,
        schema.anonymization_keys.name,
        VERSION_TABLE,
    }
)
"""The default schema: the six ML tables, the model outputs, the erasure tombstones, the key
history and the migration version."""
RAW_NAMES = {t.name for t in schema.RAW_TABLES}
SCAN_DAY = date(2026, 11, 16)
HEAD = "0006"


def stored_tables(engine: Engine) -> tuple[set[str], set[str]]:
    """(tables in the default schema, tables in the raw store)."""
    inspector = sa.inspect(engine)
    return set(inspector.get_table_names()), set(inspector.get_table_names(schema="raw"))


def drift(engine: Engine, metadata: sa.MetaData = schema.metadata) -> list[Any]:
    """What ``alembic check`` would report: differences between ``metadata`` and the database."""
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "include_schemas": True,
                "include_name": include_name,
                "compare_type": True,
                "version_table": VERSION_TABLE,
            },
        )
        return compare_metadata(context, metadata)


def training_row(i: int = 0, **overrides: Any) -> dict[str, Any]:
    row = {
        "account_hash": "a" * 64,
        "resource_hash": f"{i:064d}",
        "resource_type": "ebs_volume",
        "provider": "aws",
        "region_anonymized": "eu-*",
        "resource_age_days": 10 + i,
        "detection_scenario": "unattached_volume",
        "confidence_level": "high",
        "metrics_summary": {"VolumeReadOps": {"avg": 0.2, "trend": "stable"}},
        "cost_monthly": 4.5 + i,
        "resource_config": {"size_gb": 100, "volume_type": "gp3"},
        "detected_at": datetime(2026, 11, 16, 6, 0, 0),
        "scan_date": SCAN_DAY,
    }
    return {**row, **overrides}


def count(engine: Engine, table: sa.Table, where: Any = None) -> int:
    query = sa.select(sa.func.count()).select_from(table)
    if where is not None:
        query = query.where(where)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


# --- migrations -----------------------------------------------------------------------------


def test_migrations_create_all_fifteen_tables_and_are_idempotent(engine: Engine) -> None:
    assert stored_tables(engine) == (OWN_NAMES, RAW_NAMES)
    assert len(ML_NAMES) == 6 and len(MODEL_NAMES) == 2 and len(RAW_NAMES) == 5
    upgrade(engine)
    upgrade(engine)
    assert stored_tables(engine) == (OWN_NAMES, RAW_NAMES)
    assert current_revision(engine) == HEAD


def test_no_drift_between_schema_and_migrations(engine: Engine) -> None:
    assert drift(engine) == []


def test_the_drift_check_does_see_a_difference(engine: Engine) -> None:
    """Guard the guard: a column added to the metadata only is reported."""
    changed = sa.MetaData(naming_convention=schema.metadata.naming_convention)
    for table in schema.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["ml_training_data"].append_column(sa.Column("extra", sa.Integer()))
    diff = drift(engine, changed)
    assert [(d[0], d[2], d[3].name) for d in diff] == [("add_column", "ml_training_data", "extra")]


def test_downgrade_to_base_removes_everything_and_upgrade_restores_it(engine: Engine) -> None:
    downgrade(engine, "base")
    assert stored_tables(engine) == ({VERSION_TABLE}, set())
    if is_postgres(engine):
        assert "raw" not in sa.inspect(engine).get_schema_names()
    upgrade(engine)
    assert stored_tables(engine) == (OWN_NAMES, RAW_NAMES)
    assert drift(engine) == []


def _migrate_in_a_new_process(url: str) -> str | None:
    upgrade(make_engine(url))
    return current_revision(make_engine(url))


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_concurrent_upgrades_do_not_race(request: pytest.FixtureRequest, backend: str) -> None:
    """Separate processes (as Dagster's multiprocess executor starts them) migrating at once."""
    url = request.getfixturevalue(f"{backend}_url")
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(4, mp_context=spawn) as pool:
        futures = [pool.submit(_migrate_in_a_new_process, url) for _ in range(4)]
        assert [f.result(timeout=120) for f in futures] == [HEAD] * 4
    assert stored_tables(make_engine(url)) == (OWN_NAMES, RAW_NAMES)


def test_engines_are_cached_per_url(sqlite_url: str) -> None:
    assert make_engine(sqlite_url) is make_engine(sqlite_url)


# --- the raw store sits apart ---------------------------------------------------------------


def _sqlite_tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_sqlite_keeps_the_raw_store_in_its_own_file(sqlite_engine: Engine) -> None:
    folder = Path(sqlite_engine.url.database or "").parent
    main, raw = _sqlite_tables(folder / "warehouse.db"), _sqlite_tables(folder / "raw.db")
    assert main >= ML_NAMES and not main & RAW_NAMES
    assert raw >= RAW_NAMES and not raw & ML_NAMES
    with sqlite_engine.connect() as conn:
        modes = [
            conn.exec_driver_sql(f"PRAGMA {db}.journal_mode").scalar() for db in ("main", "raw")
        ]
        assert modes == ["wal", "wal"]
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000


def test_in_memory_sqlite_gets_an_in_memory_raw_store() -> None:
    engine = make_engine("sqlite://")
    upgrade(engine)
    with engine.begin() as conn:
        files = {r[1]: r[2] for r in conn.exec_driver_sql("PRAGMA database_list")}
        assert files["raw"] == ""
        frame = pd.DataFrame([{"source": "s", "source_ref": "1", "reason": "r"}])
        assert bulk_insert(conn, schema.quarantine, frame) == 1


def test_postgres_keeps_the_raw_store_in_schema_raw(postgres_engine: Engine) -> None:
    inspector = sa.inspect(postgres_engine)
    assert set(inspector.get_table_names(schema="raw")) == RAW_NAMES
    assert not set(inspector.get_table_names(schema="public")) & RAW_NAMES


# --- bulk_insert ----------------------------------------------------------------------------

AWKWARD_TEXT = [
    'quote " and "" doubled',
    "comma, then\nnewline\r\nand CRLF",
    "back\\slash \\N and tab\t",
    "unicode: é ✓ 雲",
    "",
]
EXACT_FLOATS = [0.1 + 0.2, 1 / 3, 5e-324, 123456789.123456789, -1.7976931348623157e308]


def test_bulk_insert_round_trips_values_exactly(engine: Engine) -> None:
    table = schema.ml_training_data
    aware = datetime(2026, 11, 16, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    rows = [
        training_row(
            i,
            cost_source=text,
            cost_real_monthly=number,
            metrics_summary={"note": text, "values": [1, 2.5, None], "nested": {"ok": True}},
            detected_at=datetime(2026, 11, 16, 1, 2, 3, 456789) + timedelta(hours=i),
        )
        for i, (text, number) in enumerate(zip(AWKWARD_TEXT, EXACT_FLOATS, strict=True))
    ]
    rows.append(
        training_row(
            5,
            cost_source=None,
            cost_real_monthly=float("nan"),
            metrics_summary=None,
            resource_config=[],
            detected_at=aware,
        )
    )
    frame = pd.DataFrame(rows)
    frame["cost_variance_pct"] = pd.array([1.5, None, None, None, None, None], dtype="Float64")
    frame["parent_resource_state"] = pd.Series(["stopped", None, *[np.nan] * 4], dtype="str")
    frame["resource_age_days"] = frame["resource_age_days"].astype("int64")  # numpy scalars
    with engine.begin() as conn:
        assert bulk_insert(conn, table, frame) == 6
    with engine.connect() as conn:
        back = read_frame(conn, sa.select(table).order_by(table.c.resource_hash))
    stored = back.to_dict("records")
    for i, (text, number) in enumerate(zip(AWKWARD_TEXT, EXACT_FLOATS, strict=True)):
        assert stored[i]["cost_source"] == text
        assert stored[i]["cost_real_monthly"] == number
        assert stored[i]["metrics_summary"] == {
            "note": text,
            "values": [1, 2.5, None],
            "nested": {"ok": True},
        }
        assert stored[i]["detected_at"] == datetime(2026, 11, 16, 1, 2, 3, 456789) + timedelta(
            hours=i
        )
        assert stored[i]["scan_date"] == SCAN_DAY
        assert stored[i]["resource_age_days"] == 10 + i
    last = stored[5]
    assert pd.isna(last["cost_source"]) and pd.isna(last["cost_real_monthly"])
    assert last["metrics_summary"] is None and last["resource_config"] == []
    assert last["detected_at"] == aware.astimezone(UTC).replace(tzinfo=None)  # naive UTC
    assert back["cost_variance_pct"][0] == 1.5 and back["cost_variance_pct"][1:].isna().all()
    assert back["parent_resource_state"][0] == "stopped"
    assert back["parent_resource_state"][1:].isna().all()
    # Defaults: one UUID per row, created_at filled.
    assert all(isinstance(v, uuid.UUID) for v in back["id"]) and back["id"].is_unique
    assert back["created_at"].notna().all()


def test_bulk_insert_writes_nan_inside_json_as_null(engine: Engine) -> None:
    table = schema.ml_training_data
    frame = pd.DataFrame(
        [training_row(metrics_summary={"avg": float("nan"), "p95": np.float64(2)})]
    )
    with engine.begin() as conn:
        bulk_insert(conn, table, frame)
        assert conn.execute(sa.select(table.c.metrics_summary)).scalar_one() == {
            "avg": None,
            "p95": 2.0,
        }


def test_bulk_insert_streams_in_chunks_and_fills_booleans_and_defaults(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load, "CHUNK_ROWS", 3)
    table = schema.user_preferences
    frame = pd.DataFrame(
        {
            "user_hash": [f"{i:064x}" for i in range(10)],
            "ml_data_collection_consent": np.array([i % 2 == 0 for i in range(10)]),
        }
    )
    with engine.begin() as conn:
        assert bulk_insert(conn, table, frame) == 10
        back = read_frame(conn, sa.select(table).order_by(table.c.user_hash))
    assert back["ml_data_collection_consent"].tolist() == [i % 2 == 0 for i in range(10)]
    assert back["data_retention_years"].tolist() == [3] * 10


def test_bulk_insert_of_nothing_writes_nothing(engine: Engine) -> None:
    with engine.begin() as conn:
        assert bulk_insert(conn, schema.scan_errors, pd.DataFrame([])) == 0


def test_unknown_columns_are_refused_by_name_before_anything_is_deleted(engine: Engine) -> None:
    table = schema.ml_training_data
    with engine.begin() as conn:
        bulk_insert(conn, table, pd.DataFrame([training_row()]))
    frame = pd.DataFrame([training_row(colour="blue", size=1)])
    with pytest.raises(ValueError, match=r"\['colour', 'size'\]"), engine.begin() as conn:
        replace_rows(conn, table, table.c.scan_date == SCAN_DAY, frame)
    assert count(engine, table) == 1


# --- replace_rows ---------------------------------------------------------------------------


def partition(day: date, n: int, account: str = "a" * 64) -> pd.DataFrame:
    return pd.DataFrame([training_row(i, scan_date=day, account_hash=account) for i in range(n)])


def test_replace_rows_twice_keeps_one_copy_and_spares_other_partitions(engine: Engine) -> None:
    table = schema.ml_training_data
    other_day, other_account = SCAN_DAY - timedelta(days=1), "b" * 64
    with engine.begin() as conn:
        bulk_insert(conn, table, partition(other_day, 2))
        bulk_insert(conn, table, partition(SCAN_DAY, 4, account=other_account))
    where = sa.and_(table.c.scan_date == SCAN_DAY, table.c.account_hash == "a" * 64)
    results = []
    for _ in range(2):
        with engine.begin() as conn:
            results.append(replace_rows(conn, table, where, partition(SCAN_DAY, 3)))
    assert results == [(0, 3), (3, 3)]
    assert count(engine, table, where) == 3
    assert count(engine, table, table.c.scan_date == other_day) == 2
    assert count(engine, table, table.c.account_hash == other_account) == 4


def test_a_failure_inside_replace_rows_rolls_back_the_delete(engine: Engine) -> None:
    table = schema.ml_training_data
    where = table.c.scan_date == SCAN_DAY
    with engine.begin() as conn:
        bulk_insert(conn, table, partition(SCAN_DAY, 3))
    bad = partition(SCAN_DAY, 5)
    bad.loc[2, "resource_type"] = None  # NOT NULL violation in the middle of the frame
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        replace_rows(conn, table, where, bad)
    assert count(engine, table, where) == 3
    # The connection pool is healthy afterwards (the aborted transaction was rolled back).
    with engine.begin() as conn:
        assert replace_rows(conn, table, where, partition(SCAN_DAY, 2)) == (3, 2)


def test_a_stream_of_frames_is_one_load_and_a_bad_later_frame_takes_it_all_back(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frames from a generator load as one stream (pieces smaller than a frame; the first frame
    lacks a column the others have); a value that cannot convert in the third frame raises the
    conversion error by column name, and the delete and the first two frames roll back."""
    monkeypatch.setattr(load, "COPY_PIECE_ROWS", 2)
    table = schema.ml_training_data
    where = table.c.scan_date == SCAN_DAY
    pulled: list[int] = []

    def frames(bad: bool) -> Iterator[pd.DataFrame]:
        for n in range(3):
            pulled.append(n)
            rows = [training_row(10 * n + i) for i in range(5)]
            frame = pd.DataFrame(rows)
            if n == 0:
                frame = frame.drop(columns=["resource_config"])
            if bad and n == 2:
                frame["resource_age_days"] = frame["resource_age_days"].astype(float) + 0.5
            yield frame

    with engine.begin() as conn:
        assert replace_rows(conn, table, where, frames(bad=False)) == (0, 15)
    assert pulled == [0, 1, 2]
    assert count(engine, table, table.c.resource_config.is_(None)) == 5
    with (
        pytest.raises(ValueError, match=r"ml_training_data\.resource_age_days: not an integer"),
        engine.begin() as conn,
    ):
        replace_rows(conn, table, where, frames(bad=True))
    assert count(engine, table, where) == 15


def test_columns_load_exactly_like_a_frame_of_the_same_rows(engine: Engine) -> None:
    """Plain columns (what ``derive`` hands the load) store the same values as a frame would,
    through COPY on PostgreSQL and executemany on SQLite, ids and created_at filled."""
    table = schema.ml_training_data
    rows = [
        training_row(i, cost_real_monthly=None if i % 2 else 1.25, tags_anonymized={"env": "p"})
        for i in range(7)
    ]
    other_day = SCAN_DAY + timedelta(days=1)
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    columns["scan_date"] = [other_day] * len(rows)
    with engine.begin() as conn:
        assert bulk_insert(conn, table, pd.DataFrame(rows)) == 7
        assert bulk_insert(conn, table, columns) == 7
        back = read_frame(conn, sa.select(table).order_by(table.c.resource_hash))
    by_day = {
        day: group.drop(columns=["id", "created_at", "scan_date"]).reset_index(drop=True)
        for day, group in back.groupby("scan_date")
    }
    pd.testing.assert_frame_equal(by_day[SCAN_DAY], by_day[other_day])
    assert back["id"].map(lambda v: isinstance(v, uuid.UUID) and v.version == 4).all()
    assert back["id"].is_unique and back["created_at"].notna().all()


def test_columns_of_unequal_length_or_bad_values_are_refused_before_the_delete(
    engine: Engine,
) -> None:
    table = schema.ml_training_data
    where = table.c.scan_date == SCAN_DAY
    row = training_row()
    with engine.begin() as conn:
        bulk_insert(conn, table, pd.DataFrame([row]))
    uneven = {name: [value, value] for name, value in row.items()}
    uneven["cost_monthly"] = [1.0]
    with pytest.raises(ValueError, match="unequal length"), engine.begin() as conn:
        replace_rows(conn, table, where, uneven)
    bad = {name: [value] for name, value in row.items()} | {"resource_age_days": ["ten"]}
    with (
        pytest.raises(ValueError, match=r"ml_training_data\.resource_age_days"),
        engine.begin() as conn,
    ):
        replace_rows(conn, table, where, bad)
    assert count(engine, table, where) == 1


def test_uuid4_texts_are_distinct_version_4_uuids_in_canonical_form() -> None:
    texts = load.uuid4_texts(2000)
    parsed = [uuid.UUID(t) for t in texts]
    assert [str(u) for u in parsed] == texts  # canonical: lower-case, hyphenated
    assert {u.version for u in parsed} == {4} and {u.variant for u in parsed} == {uuid.RFC_4122}
    assert len(set(texts)) == 2000
    assert load.uuid4_texts(0) == []


# --- insert_new -----------------------------------------------------------------------------


def action_events(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "event_id": event_id,
                "user_id": "user-1",
                "account_id": "123456789012",
                "provider": "aws",
                "resource_id": "arn:aws:ec2:eu-west-1:123456789012:volume/vol-1",
                "action": "deleted",
                "action_at": datetime(2026, 11, 16, 9),
                "context": {"source": "test"},
            }
            for event_id in ids
        ]
    )


def test_insert_new_skips_existing_keys_and_counts_what_it_wrote(engine: Engine) -> None:
    table = schema.resource_action_events
    with engine.begin() as conn:
        assert insert_new(conn, table, action_events(["e1", "e2"]), ["event_id"]) == 2
    with engine.begin() as conn:
        # e2 is stored, e3 repeats within the frame: two new rows.
        assert insert_new(conn, table, action_events(["e2", "e3", "e3", "e4"]), ["event_id"]) == 2
        assert insert_new(conn, table, action_events(["e1"]), ["event_id"]) == 0
    with engine.connect() as conn:
        back = read_frame(conn, sa.select(table.c.seq, table.c.event_id).order_by(table.c.seq))
    assert back["event_id"].tolist() == ["e1", "e2", "e3", "e4"]
    assert back["seq"].is_monotonic_increasing and back["seq"].is_unique


def test_insert_new_on_a_composite_key_lets_null_keys_through(engine: Engine) -> None:
    table = schema.resource_lifecycle_events
    base = {
        "resource_hash": "r" * 64,
        "resource_type": "ebs_volume",
        "provider": "aws",
        "event_timestamp": datetime(2026, 11, 16),
        "account_hash": "a" * 64,
    }
    frame = pd.DataFrame(
        [
            {**base, "event_type": "deleted", "source_event_hash": "s" * 64},
            {**base, "event_type": "user_action", "source_event_hash": "s" * 64},
            {**base, "event_type": "detected", "source_event_hash": None},
        ]
    )
    keys = ["source_event_hash", "event_type"]
    with engine.begin() as conn:
        assert insert_new(conn, table, frame, keys) == 3
        assert insert_new(conn, table, frame, keys) == 1  # only the NULL-keyed row again
    assert count(engine, table) == 4


def test_insert_new_refuses_keys_that_are_not_columns(engine: Engine) -> None:
    with pytest.raises(ValueError, match="key columns"), engine.begin() as conn:
        insert_new(conn, schema.quarantine, pd.DataFrame([]), ["nope"])


def test_a_batch_naming_more_resources_than_sqlite_binds_is_read_in_chunks(sqlite_engine):
    """Some SQLite builds allow 32,766 bound parameters per statement; a 100k-event batch names
    more resources than that. With the limit lowered to 12,000, 20,000 hashes still work."""
    from cloudwaste_pipeline.defs.assets.actions import detection_context
    from cloudwaste_pipeline.warehouse.queries import apply_labels, in_chunks

    hashes = [f"{n:064x}" for n in range(20_000)]
    with sqlite_engine.connect() as conn:
        conn.connection.dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 12_000)
        with pytest.raises(sa.exc.OperationalError, match="too many SQL variables"):
            conn.execute(sa.select(schema.ml_training_data).where(
                schema.ml_training_data.c.resource_hash.in_(hashes)))  # fmt: skip
        conn.rollback()
        assert detection_context(conn, hashes).empty  # no detections stored: none found
        ml = schema.ml_training_data
        assert sum(apply_labels(conn, ml.c.resource_hash.in_(c)) for c in in_chunks(hashes)) == 0
    assert [len(c) for c in in_chunks(hashes + hashes[:10])] == [5_000] * 4
