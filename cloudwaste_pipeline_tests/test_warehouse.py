"""The warehouse on SQLite and PostgreSQL: migrations, the raw store apart, bulk writes that
round-trip exactly, partition replacement that never duplicates and rolls back as a whole."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import date, datetime

import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline.warehouse.engine import VERSION_TABLE, upgrade
from cloudwaste_pipeline.warehouse.load import bulk_insert, insert_new, read_frame, replace_rows


def tables(engine) -> set[str]:
    inspector = sa.inspect(engine)
    return set(inspector.get_table_names()) | {
        f"raw.{t}" for t in inspector.get_table_names(schema="raw")
    }


def test_migrations_create_every_table_and_are_idempotent(engine):
    expected = {t.name for t in schema.ML_TABLES} | {f"raw.{t.name}" for t in schema.RAW_TABLES}
    assert expected <= tables(engine)
    assert VERSION_TABLE in tables(engine)
    upgrade(engine)
    assert expected <= tables(engine)


def test_no_drift_between_the_tables_and_the_migrations(engine):
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_schemas": True, "compare_type": True}
        )
        diff = [
            d
            for d in compare_metadata(context, schema.metadata)
            if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)
        ]
    assert diff == []


def test_sqlite_keeps_the_raw_store_in_its_own_file(sqlite_engine):
    folder = sqlite_engine.url.database.rsplit("/", 1)[0]
    main = {r[0] for r in sqlite3.connect(f"{folder}/warehouse.db").execute("select name from sqlite_master where type='table'")}
    raw = {r[0] for r in sqlite3.connect(f"{folder}/raw.db").execute("select name from sqlite_master where type='table'")}
    assert {t.name for t in schema.RAW_TABLES} <= raw
    assert not {t.name for t in schema.RAW_TABLES} & main
    assert "ml_training_data" in main and "ml_training_data" not in raw


def trend_frame(month: str, account: str = "a" * 64, **extra) -> pd.DataFrame:
    row = {
        "account_hash": account,
        "month": month,
        "provider": "aws",
        "total_spend": 1234.5678,
        "waste_detected": 10.0,
        "waste_eliminated": 0.0,
        "waste_percentage": 0.81,
        "top_waste_categories": [{"scenario": 'quote "x", comma\nnewline', "cost": 1.5}],
        "regional_breakdown": None,
        **extra,
    }
    return pd.DataFrame([row])


def test_bulk_insert_round_trips_json_nulls_text_and_dates(engine):
    table = schema.ml_training_data
    frame = pd.DataFrame(
        [
            {
                "account_hash": "a" * 64,
                "resource_hash": "r" * 64,
                "resource_type": "ebs_volume",
                "provider": "aws",
                "region_anonymized": "eu-*",
                "resource_age_days": 12,
                "detection_scenario": "unattached_volume",
                "confidence_level": "high",
                "metrics_summary": {"CPU": {"avg": 1.25, "trend": "stable"}},
                "cost_monthly": 8.125,
                "user_action": None,
                "resource_config": {"volume_type": 'g"p,3'},
                "detected_at": datetime(2026, 11, 16, 1, 2, 3),
                "cost_source": "",
                "tags_anonymized": None,
                "scan_date": date(2026, 11, 16),
            }
        ]
    )
    with engine.begin() as conn:
        assert bulk_insert(conn, table, frame) == 1
        back = read_frame(conn, sa.select(table)).iloc[0]
    assert back["metrics_summary"] == {"CPU": {"avg": 1.25, "trend": "stable"}}
    assert back["resource_config"] == {"volume_type": 'g"p,3'}
    assert back["user_action"] is None and back["tags_anonymized"] is None
    assert back["cost_source"] == ""
    assert back["cost_monthly"] == 8.125
    assert back["detected_at"] == datetime(2026, 11, 16, 1, 2, 3)
    assert back["scan_date"] == date(2026, 11, 16)
    assert isinstance(back["id"], uuid.UUID) and back["created_at"] is not None


def test_replace_rows_never_duplicates_and_leaves_other_partitions(engine):
    table = schema.cost_trend_data
    with engine.begin() as conn:
        bulk_insert(conn, table, trend_frame("2026-10"))
    for _ in range(2):
        with engine.begin() as conn:
            replace_rows(conn, table, table.c.month == "2026-11", trend_frame("2026-11"))
    with engine.connect() as conn:
        back = read_frame(conn, sa.select(table.c.month, table.c.top_waste_categories))
    assert sorted(back["month"]) == ["2026-10", "2026-11"]
    assert back["top_waste_categories"][0][0]["scenario"] == 'quote "x", comma\nnewline'


def test_a_failed_replace_rolls_back_the_delete_too(engine):
    table = schema.cost_trend_data
    with engine.begin() as conn:
        bulk_insert(conn, table, trend_frame("2026-11"))
    bad = trend_frame("2026-11", total_spend=None)  # NOT NULL violation
    with pytest.raises(sa.exc.DBAPIError), engine.begin() as conn:
        replace_rows(conn, table, table.c.month == "2026-11", bad)
    with engine.connect() as conn:
        assert conn.execute(sa.select(table.c.total_spend)).scalar() == 1234.5678


def test_insert_new_skips_existing_keys_and_counts_what_it_wrote(engine):
    table = schema.resource_action_events
    frame = pd.DataFrame(
        [
            {
                "event_id": f"e{i}",
                "user_id": "u",
                "account_id": "123456789012",
                "provider": "aws",
                "resource_id": "arn",
                "action": "deleted",
                "action_at": datetime(2026, 11, 16),
            }
            for i in range(3)
        ]
    )
    with engine.begin() as conn:
        assert insert_new(conn, table, frame.iloc[:2], ["event_id"]) == 2
        assert insert_new(conn, table, frame, ["event_id"]) == 1
        seqs = [r.seq for r in conn.execute(sa.select(table.c.seq).order_by(table.c.seq))]
    assert len(seqs) == 3 and seqs == sorted(set(seqs))


def test_unknown_columns_are_refused(engine):
    with pytest.raises(ValueError, match="no such column"), engine.begin() as conn:
        bulk_insert(conn, schema.cost_trend_data, trend_frame("2026-11", colour="blue"))
