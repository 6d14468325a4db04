"""Database faults: a process killed mid-load, and the database going away mid-run.

Either way the slice keeps its previous rows (the write is one transaction), the failure says so
in one sentence without raw ids, and the next run writes exactly one copy.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloudwaste_pipeline import faults
from cloudwaste_pipeline.defs.assets.scans import ml_training_data, raw_cloud_scans
from cloudwaste_pipeline.warehouse import engine as engine_module
from cloudwaste_pipeline.warehouse import queries, schema
from cloudwaste_pipeline_tests import slice_runs, slices
from cloudwaste_pipeline_tests.slices import ACCOUNT_ID, DAY


def state(engine: Engine, what: str) -> tuple[Any, ...]:
    """What a slice holds: enough to tell its two versions, and a duplicate, apart."""
    with engine.connect() as conn:
        if what == "training":
            ml = schema.ml_training_data
            return tuple(sorted(conn.execute(sa.select(ml.c.resource_age_days)).scalars()))
        scans = [
            len(queries.load_raw_scan(conn, "aws", ACCOUNT_ID, day)["detections"])
            for day in conn.execute(sa.select(schema.raw_scans.c.scan_date)).scalars()
        ]
        errors = conn.execute(sa.select(sa.func.count()).select_from(schema.scan_errors))
        return (scans, errors.scalar_one())


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


CHILD = (
    "import sys; from cloudwaste_pipeline_tests.slices import rewrite_in_child; "
    "rewrite_in_child(*sys.argv[1:])"
)


@pytest.mark.parametrize(
    ("what", "point"),
    [("training", "load.after_delete"), ("raw", "load.before_commit")],
)
def test_a_writer_killed_mid_load_loses_and_duplicates_nothing(
    engine: Engine, what: str, point: str
) -> None:
    previous, following = slices.previous_and_next(what)
    slices.write_slice(engine, what, previous)
    before = state(engine, what)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, url_of(engine), what],
        env={**os.environ, faults.CRASH_ENV: point},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == faults.CRASH_EXIT_CODE, child.stderr  # killed at the point
    assert state(engine, what) == before  # the previous rows, intact
    slices.write_slice(engine, what, following)  # the re-run
    slices.write_slice(engine, what, following)  # and another: still one copy
    assert state(engine, what) == {"training": tuple(range(10, 15)), "raw": ([4], 1)}[what]


def assert_failed_cleanly(result: Any) -> None:
    assert not result.success
    text = slice_runs.failure_text(result)
    assert ACCOUNT_ID not in text, text  # no SQL parameters, no chained driver error
    assert "re-run" in text and slices.ALIAS in text, text


def killing_own_backend(engine: Engine, admin: Engine, verb: str, table: sa.Table) -> Any:
    """A cursor hook that has PostgreSQL terminate the connection about to run the first
    ``verb`` statement on ``table`` (what a restart or failover does to a run)."""
    killed: list[int] = []

    def hook(conn, cursor, statement, parameters, context, executemany) -> None:
        words = statement.lstrip().upper()
        if not killed and words.startswith(verb) and table.name in statement:
            pid = conn.connection.dbapi_connection.get_backend_pid()
            with admin.connect() as admin_conn:
                admin_conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            killed.append(pid)

    hook.killed = killed
    return hook


def run_killed(engine: Engine, hook: Any, run: Any) -> Any:
    sa.event.listen(engine, "before_cursor_execute", hook)
    try:
        result = run()
    finally:
        sa.event.remove(engine, "before_cursor_execute", hook)
    assert hook.killed
    return result


@pytest.mark.postgres
def test_postgres_going_away_mid_run_fails_it_clearly_and_the_rerun_stores_one_copy(
    postgres_url: str, postgres_admin: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDWASTE_NOW", f"{DAY}T02:00:00+00:00")
    accounts = slice_runs.write_accounts(tmp_path)
    engine = slice_runs.resources(postgres_url, accounts)["warehouse"].engine()  # migrated
    slices.write_slice(engine, "raw", slices.raw_scan(detections=3, errors=1))
    hook = killing_own_backend(engine, postgres_admin, "DELETE", schema.raw_scans)
    failed = run_killed(
        engine, hook, lambda: slice_runs.materialize(raw_cloud_scans, DAY, postgres_url, accounts)
    )
    assert_failed_cleanly(failed)
    assert state(engine, "raw") == ([3], 1)
    rerun = slice_runs.materialize(raw_cloud_scans, DAY, postgres_url, accounts)
    assert rerun.success
    assert state(engine, "raw") == ([3], 2)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("verb", "table"),
    [("SELECT", schema.raw_scans), ("DELETE", schema.ml_training_data)],
    ids=["reading the raw scan", "replacing the day"],
)
def test_postgres_going_away_while_deriving_fails_clearly_and_keeps_the_day(
    postgres_url: str, postgres_admin: Engine, tmp_path: Path, verb: str, table: sa.Table
) -> None:
    accounts = slice_runs.write_accounts(tmp_path)
    engine = slice_runs.resources(postgres_url, accounts)["warehouse"].engine()  # migrated
    slices.write_slice(engine, "raw", slices.raw_scan())

    def derive() -> Any:
        return slice_runs.materialize(ml_training_data, DAY, postgres_url, accounts)

    assert derive().success
    ml = schema.ml_training_data
    with engine.connect() as conn:
        before = sorted(conn.execute(sa.select(ml.c.id)).scalars())
    assert_failed_cleanly(
        run_killed(engine, killing_own_backend(engine, postgres_admin, verb, table), derive)
    )
    with engine.connect() as conn:
        assert sorted(conn.execute(sa.select(ml.c.id)).scalars()) == before  # the same rows
    assert derive().success
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(ml)).scalar_one() == 3


def test_sqlite_locked_past_its_busy_timeout_fails_the_run_clearly_and_the_rerun_stores_one_copy(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the raw store's write lock longer than the busy timeout."""
    monkeypatch.setenv("CLOUDWASTE_NOW", f"{DAY}T02:00:00+00:00")
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 100)
    accounts = slice_runs.write_accounts(tmp_path)
    engine = slice_runs.resources(sqlite_url, accounts)["warehouse"].engine()  # migrated
    slices.write_slice(engine, "raw", slices.raw_scan(detections=3, errors=1))
    raw_store = engine_module.raw_store_path(sa.make_url(sqlite_url).database)
    other = sqlite3.connect(raw_store, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        failed = slice_runs.materialize(raw_cloud_scans, DAY, sqlite_url, accounts)
    finally:
        other.rollback()
        other.close()
    assert_failed_cleanly(failed)
    assert state(engine, "raw") == ([3], 1)
    rerun = slice_runs.materialize(raw_cloud_scans, DAY, sqlite_url, accounts)
    assert rerun.success
    assert state(engine, "raw") == ([3], 2)
