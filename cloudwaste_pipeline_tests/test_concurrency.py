"""One writer per slice: two overlapping writers of the same day and account (or month and
account) end with exactly one copy, on SQLite and PostgreSQL, whether they come through the
load functions or as two Dagster runs of the same partition that no run queue serialized."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloudwaste_pipeline import api
from cloudwaste_pipeline.defs.assets.actions import user_action_patterns
from cloudwaste_pipeline.defs.assets.costs import cost_trend_data
from cloudwaste_pipeline.defs.assets.scans import ml_training_data, raw_cloud_scans
from cloudwaste_pipeline.privacy.anonymize import hash_id
from cloudwaste_pipeline.warehouse import locks, queries, schema
from cloudwaste_pipeline.warehouse.load import insert_new, replace_rows
from cloudwaste_pipeline_tests import slice_runs, slices
from cloudwaste_pipeline_tests.slices import DAY, Overlap
from cloudwaste_pipeline_tests.test_warehouse import partition, training_row

ACCOUNT_HASH = "a" * 64
YESTERDAY = DAY - timedelta(days=1)
RESOURCE = slices.raw_scan().detections[0]["resource_id"]
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
MONTH = "2026-11"


def count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def write_training(engine: Engine) -> tuple[int, int]:
    with engine.begin() as conn:
        return queries.replace_scan_partition(
            conn, schema.ml_training_data, DAY, ACCOUNT_HASH, partition(DAY, 3)
        )


def write_raw_scan(engine: Engine) -> None:
    with engine.begin() as conn:
        queries.store_raw_scan(conn, slices.ALIAS, slices.raw_scan())


def write_trend(engine: Engine) -> tuple[int, int]:
    row = {
        "account_hash": ACCOUNT_HASH,
        "month": MONTH,
        "provider": "aws",
        "total_spend": 100.0,
        "waste_detected": 10.0,
        "waste_eliminated": 0.0,
        "waste_percentage": 10.0,
        "top_waste_categories": {"ebs_volume": 10.0},
    }
    trends = schema.cost_trend_data
    where = sa.and_(trends.c.account_hash == ACCOUNT_HASH, trends.c.month == MONTH)
    with engine.begin() as conn:
        return replace_rows(conn, trends, where, pd.DataFrame([row]))


WRITERS: dict[str, tuple[sa.Table, Callable[[Engine], Any], dict[sa.Table, int]]] = {
    # name: (the table the first writer pauses after deleting from, the write, rows expected)
    "day of training rows": (
        schema.ml_training_data,
        write_training,
        {schema.ml_training_data: 3},
    ),
    "raw scan and its errors": (
        schema.raw_scans,
        write_raw_scan,
        {schema.raw_scans: 1, schema.scan_errors: 2},
    ),
    "month of cost trends": (schema.cost_trend_data, write_trend, {schema.cost_trend_data: 1}),
}


@pytest.mark.parametrize("name", WRITERS)
def test_overlapping_writers_of_one_slice_leave_one_copy(engine: Engine, name: str) -> None:
    """Before the lock, on PostgreSQL: both deleted nothing of each other's and both inserted
    (duplicated training rows and scan errors), or the second hit the unique key and failed."""
    table, write, expected = WRITERS[name]
    outcomes = Overlap(engine, table).run(lambda: write(engine))
    assert [o for o in outcomes if isinstance(o, BaseException)] == []
    assert {t: count(engine, t) for t in expected} == expected


def test_the_lock_is_keyed_by_table_day_and_account_not_by_the_predicate(
    postgres_engine: Engine,
) -> None:
    """Other days and accounts run side by side; the same day and account is one slice however
    a writer selects it (here: the lifecycle's scan events only, or the whole day)."""
    keys: list[int] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if "pg_advisory_xact_lock" in statement:
            keys.append(parameters["key"])

    table = schema.resource_lifecycle_events
    writes = [
        (DAY, "a" * 64, table.c.event_type.in_(["detected", "metrics_updated"])),
        (DAY, "a" * 64, None),
        (DAY, "b" * 64, None),
        (YESTERDAY, "a" * 64, None),
    ]
    sa.event.listen(postgres_engine, "before_cursor_execute", record)
    try:
        for day, account, extra in writes:
            with postgres_engine.begin() as conn:
                queries.replace_scan_partition(conn, table, day, account, [], extra=extra)
    finally:
        sa.event.remove(postgres_engine, "before_cursor_execute", record)
    assert len(keys) == 4
    assert keys[0] == keys[1]
    assert len(set(keys)) == 3


def test_overlapping_action_batches_store_each_event_once(engine: Engine) -> None:
    """``insert_new`` (what the action batch appends with) relies on the unique event hash: the
    second batch waits for the first's row and skips it; the counts say who stored what."""
    table = schema.user_action_patterns
    rows = pd.DataFrame(
        [
            {
                **{k: v for k, v in training_row(i).items() if k in table.c},
                "user_hash": "u" * 64,
                "action_taken": "deleted",
                "time_to_action_hours": 5,
                "cost_saved_monthly": 4.5,
                "action_at": pd.Timestamp("2026-11-17 09:00"),
                "event_hash": f"{i:064x}",
            }
            for i in range(4)
        ]
    )

    def append() -> int:
        with engine.begin() as conn:
            conn.execute(sa.delete(table).where(sa.false()))  # where the first one pauses
            return insert_new(conn, table, rows, ["event_hash"])

    outcomes = Overlap(engine, table).run(append)
    assert sorted(outcomes) == [0, 4]
    assert count(engine, table) == 4


def test_the_slice_key_is_stable_and_tells_slices_apart() -> None:
    assert locks.slice_key("rows", "x", 1) == locks.slice_key("rows", "x", 1)
    assert locks.slice_key("rows", "x", 1) != locks.slice_key("rows", "x", 2)
    assert -(2**63) <= locks.slice_key("labels") < 2**63
    # Fixed across processes and versions: a deployment's two code servers must agree.
    assert locks.slice_key("rows") == 7_190_894_686_320_478_197


@pytest.mark.postgres
def test_two_dagster_runs_of_one_partition_at_once_leave_one_copy(
    postgres_url: str, tmp_path: Path
) -> None:
    """What the run queue cannot stop (``dagster asset materialize``, ``execute_in_process``, a
    second deployment): two runs of the same scan partition, overlapping in the warehouse."""
    accounts = slice_runs.write_accounts(tmp_path)
    engine = slice_runs.resources(postgres_url, accounts)["warehouse"].engine()
    with engine.begin() as conn:
        queries.store_raw_scan(conn, slices.ALIAS, slices.raw_scan())
    table = schema.ml_training_data
    results = Overlap(engine, table).run(
        lambda: slice_runs.materialize(ml_training_data, DAY, postgres_url, accounts)
    )
    assert [r.success for r in results] == [True, True], [
        slice_runs.failure_text(r) for r in results
    ]
    assert count(engine, table) == 3


def test_two_dagster_runs_of_todays_scan_store_it_once(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDWASTE_NOW", f"{DAY}T02:00:00+00:00")
    accounts = slice_runs.write_accounts(tmp_path)
    url = engine.url.render_as_string(hide_password=False)
    results = Overlap(engine, schema.raw_scans).run(
        lambda: slice_runs.materialize(raw_cloud_scans, DAY, url, accounts)
    )
    assert [r.success for r in results] == [True, True], [
        slice_runs.failure_text(r) for r in results
    ]
    assert count(engine, schema.raw_scans) == 1
    assert count(engine, schema.scan_errors) == 2


def labelled_history(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Any:
    """Two stored scan days, the first derived, and a deletion of the first volume recorded."""
    url = request.getfixturevalue(f"{backend}_url")
    accounts = slice_runs.write_accounts(tmp_path)
    engine = slice_runs.resources(url, accounts)["warehouse"].engine()
    for day in (YESTERDAY, DAY):
        with engine.begin() as conn:
            queries.store_raw_scan(conn, slices.ALIAS, slices.raw_scan(day))
    assert slice_runs.materialize(ml_training_data, YESTERDAY, url, accounts).success
    api.record_user_action(
        user_id="user-1",
        account_id=slices.ACCOUNT_ID,
        provider="aws",
        resource_id=RESOURCE,
        action="deleted",
        action_at=datetime(2026, 11, 16, 1, tzinfo=UTC),
        database_url=url,
    )
    return url, accounts, engine


def all_succeeded(results: list[Any]) -> None:
    assert [r.success for r in results] == [True, True], [
        slice_runs.failure_text(r) for r in results
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_action_batch_beside_a_training_load_labels_the_new_rows(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    """The load joined the labels before the batch committed, the batch labelled before the load
    committed: before the labels lock, the day's new row of the acted-on resource stayed
    unlabelled on PostgreSQL (the label is what the model learns)."""
    url, accounts, engine = labelled_history(request, backend, tmp_path)
    ml = schema.ml_training_data
    all_succeeded(
        Overlap(engine, ml, statement="UPDATE").run(
            lambda: slice_runs.materialize(ml_training_data, DAY, url, accounts),
            lambda: slice_runs.materialize(user_action_patterns, None, url, accounts),
        )
    )
    resource_hash = hash_id("resource", "aws", RESOURCE, slices.KEY.encode())
    with engine.connect() as conn:
        labels = conn.execute(
            sa.select(ml.c.scan_date, ml.c.user_action)
            .where(ml.c.resource_hash == resource_hash)
            .order_by(ml.c.scan_date)
        ).all()
    assert [tuple(r) for r in labels] == [(YESTERDAY, "deleted"), (DAY, "deleted")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_action_batch_beside_a_cost_trend_rebuild_counts_the_saving(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    """The rebuild read the month's actions before the batch committed and wrote its row after
    the batch had refreshed it: before the month lock, the deletion's saving was lost."""
    url, accounts, engine = labelled_history(request, backend, tmp_path)
    all_succeeded(
        Overlap(engine, schema.user_action_patterns, statement="SELECT").run(
            lambda: slice_runs.materialize(cost_trend_data, DAY, url, accounts, month=True),
            lambda: slice_runs.materialize(user_action_patterns, None, url, accounts),
        )
    )
    trends = schema.cost_trend_data
    with engine.connect() as conn:
        saved = conn.execute(sa.select(trends.c.month, trends.c.waste_eliminated)).all()
    assert [tuple(r) for r in saved] == [("2026-11", 8.0)]  # the first volume's monthly cost
