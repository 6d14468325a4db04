"""Retention can never empty the warehouse: minimums from every source, unprocessed events kept.

``CLOUDWASTE_RAW_RETENTION_DAYS=-1`` once made ``ml_cleanup_job`` delete every raw scan and the
whole outbox, and an ML retention of 0 years nearly every ML row and label. Here a bad value from
the environment, the run config or a direct ``cleanup`` call stops before a single row goes, on
SQLite and PostgreSQL, and an outbox event not yet processed outlives retention (the action run
quarantines it with its reason).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloudwaste_pipeline.defs.jobs import ml_cleanup_job
from cloudwaste_pipeline.defs.resources import (
    AnonymizerResource,
    CloudResource,
    WarehouseResource,
)
from cloudwaste_pipeline.errors import CloudWasteError
from cloudwaste_pipeline.privacy.retention import cleanup
from cloudwaste_pipeline.settings import SettingError
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline_tests.test_erasure import insert

KEY = "retention-test-key-0123456789abcdef"
TODAY = date(2026, 11, 16)
NOW = datetime(2026, 11, 16, 9, 0)
DAYS_AGO = (1, 2, 10)
"""Raw rows inside the default retention of 30 days, which only a bad setting could delete."""
MONTHS_AGO = (2, 6, 11)
"""ML rows inside the default 3 years, and inside the minimum of 1 year too."""


def populate(engine: Engine) -> None:
    """Raw and ML rows that a correct retention keeps, and one of each it removes."""
    with engine.begin() as conn:
        for n, days in enumerate((*DAYS_AGO, 40)):
            when = NOW - timedelta(days=days)
            insert(
                conn,
                schema.raw_scans,
                {"account_id": str(n), "scan_date": when.date(), "payload": {}},
            )
            insert(conn, schema.scan_errors, {"account_id": str(n), "scan_date": when.date()})
            insert(
                conn,
                schema.resource_action_events,
                {"event_id": f"done-{n}", "received_at": when, "processed_at": when},
                {"event_id": f"waiting-{n}", "received_at": when},
            )
            insert(conn, schema.quarantine, {"source_ref": str(n), "quarantined_at": when})
        for n, months in enumerate((*MONTHS_AGO, 40)):
            when = NOW - timedelta(days=30 * months)
            insert(
                conn,
                schema.ml_training_data,
                {"account_hash": "a" * 64, "detected_at": when, "scan_date": when.date()},
            )
            insert(
                conn,
                schema.user_action_patterns,
                {"account_hash": "a" * 64, "event_hash": str(n), "action_at": when},
            )


TABLES = (
    schema.raw_scans,
    schema.scan_errors,
    schema.resource_action_events,
    schema.quarantine,
    schema.ml_training_data,
    schema.user_action_patterns,
)


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.fullname: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in TABLES
        }


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def run_cleanup(
    instance: dg.DagsterInstance,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    run_config: dict[str, Any] | None = None,
) -> dg.ExecuteInProcessResult:
    """``ml_cleanup_job`` in process on ``engine``, its clock at NOW."""
    monkeypatch.setenv("CLOUDWASTE_NOW", NOW.isoformat())
    url = engine.url.render_as_string(hide_password=False)
    return ml_cleanup_job.execute_in_process(
        instance=instance,
        run_config={"ops": run_config or {}},
        raise_on_error=False,
        resources={
            "warehouse": WarehouseResource(database_url=url),
            "anonymizer": AnonymizerResource(key=KEY),
            "cloud": CloudResource(accounts_file=str(tmp_path / "no-accounts.yaml")),
        },
    )


def step_error(result: dg.ExecuteInProcessResult, step: str) -> str:
    failures = [
        e.step_failure_data.error.to_string()  # the op's own error is the cause of Dagster's
        for e in result.all_events
        if e.is_step_failure and e.step_key == step
    ]
    assert failures, f"{step} did not fail"
    return failures[0]


def test_the_cleanup_job_with_valid_settings_removes_only_what_is_past_retention(
    instance: dg.DagsterInstance, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the job works, so the refusals below are the settings' doing."""
    populate(engine)
    before = counts(engine)
    result = run_cleanup(instance, engine, tmp_path, monkeypatch)
    assert result.success
    after = counts(engine)
    assert {t: before[t] - after[t] for t in before} == {
        "raw.raw_scans": 1,
        "raw.scan_errors": 1,
        "raw.resource_action_events": 1,  # the processed one; the waiting one stays
        "raw.quarantine": 1,
        "ml_training_data": 1,
        "user_action_patterns": 1,
    }


@pytest.mark.parametrize(
    ("name", "value"),
    [("CLOUDWASTE_RAW_RETENTION_DAYS", "-1"), ("CLOUDWASTE_ML_RETENTION_YEARS", "0")],
)
def test_a_bad_retention_setting_fails_the_cleanup_before_anything_is_deleted(
    name: str,
    value: str,
    instance: dg.DagsterInstance,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Other bad values (blank, 2, 1e9, huge...) give the same ``SettingError`` (test_settings)."""
    populate(engine)
    before = counts(engine)
    monkeypatch.setenv(name, value)
    result = run_cleanup(instance, engine, tmp_path, monkeypatch)
    assert not result.success
    assert f"{name}={value!r} is not allowed" in step_error(result, "cleanup_expired_data")
    assert name in step_error(result, "prune_dagster_runs")  # the run stops whole
    assert counts(engine) == before


def test_a_run_config_below_the_minimum_fails_before_anything_is_deleted(
    instance: dg.DagsterInstance,
    sqlite_engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """0 is refused, not taken for "unset" (which is leaving the field out)."""
    populate(sqlite_engine)
    before = counts(sqlite_engine)
    configs = [
        ("cleanup_expired_data", "raw_retention_days", 0),
        ("cleanup_expired_data", "raw_retention_days", -1),
        ("cleanup_expired_data", "ml_retention_years", 0),
        ("cleanup_expired_data", "batch_size", 0),
    ]
    for op, field, value in configs:
        config = {op: {"config": {field: value}}}
        result = run_cleanup(instance, sqlite_engine, tmp_path, monkeypatch, config)
        assert f"{field}={value} is not allowed" in step_error(result, op), config
        assert counts(sqlite_engine) == before, config
    config = {"prune_dagster_runs": {"config": {"run_retention_days": 0}}}
    result = run_cleanup(instance, sqlite_engine, tmp_path, monkeypatch, config)
    assert "run_retention_days=0 is not allowed" in step_error(result, "prune_dagster_runs")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"raw_days": 2, "ml_years": 3},
        {"raw_days": -1, "ml_years": 3},
        {"raw_days": 30, "ml_years": 0},
        {"raw_days": 30, "ml_years": -5},
        {"raw_days": 30, "ml_years": 3, "batch_size": 0},
    ],
)
def test_cleanup_itself_refuses_retention_below_the_minimum(
    kwargs: dict[str, int], sqlite_engine: Engine
) -> None:
    populate(sqlite_engine)
    before = counts(sqlite_engine)
    with pytest.raises(CloudWasteError if "batch_size" in kwargs else SettingError):
        cleanup(sqlite_engine, TODAY, **kwargs)
    assert counts(sqlite_engine) == before


def test_retention_never_deletes_an_unprocessed_outbox_event(engine: Engine) -> None:
    populate(engine)
    cleanup(engine, TODAY, raw_days=3, ml_years=1)
    outbox = schema.resource_action_events
    with engine.connect() as conn:
        kept = set(conn.execute(sa.select(outbox.c.event_id)).scalars())
    assert {f"waiting-{n}" for n in range(4)} <= kept  # 40 days old and still waiting
    assert {"done-2", "done-3"}.isdisjoint(kept)  # processed, 10 and 40 days old
    assert {"done-0", "done-1"} <= kept


def test_a_stored_user_retention_below_a_year_counts_as_one_year(sqlite_engine: Engine) -> None:
    """A preference row written around the API with 0 (or -1) years keeps the last year."""
    populate(sqlite_engine)
    with sqlite_engine.begin() as conn:
        conn.execute(sa.update(schema.user_action_patterns).values(user_hash="u" * 64))
        for years, user in ((0, "u" * 64), (-1, "v" * 64)):
            insert(
                conn,
                schema.user_preferences,
                {"user_hash": user, "data_retention_years": years},
            )
    removed = cleanup(sqlite_engine, TODAY, raw_days=30, ml_years=3)
    assert removed["user_action_patterns"] == 1  # the 40-month-old one; 2-11 months stay
    assert counts(sqlite_engine)["user_action_patterns"] == len(MONTHS_AGO)
