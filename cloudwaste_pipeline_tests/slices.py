"""Helpers for the one-writer-per-slice tests: a stored scan, and a harness that makes two
writers of one slice overlap at a chosen statement, deterministically. No Dagster here: the
crash tests import it in child processes (see ``slice_runs`` for the Dagster side)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloudwaste_pipeline.scanning.model import Detection, RawScan, Resource, ScanError

ALIAS = "prod-main"
ACCOUNT_ID = "318274650912"
"""A raw account id: it must never show in an error message."""
KEY = "k" * 40
DAY = date(2026, 11, 16)
WAIT = 60.0
"""Upper bound of every wait on another thread: a safety net against a hung test, never a
synchronisation (every wait ends on an event long before)."""


def raw_scan(day: date = DAY, detections: int = 3, errors: int = 2) -> RawScan:
    """A stored scan of ``ACCOUNT_ID`` with unattached volumes and partial-scan errors."""
    scanned_at = datetime(day.year, day.month, day.day, 2, tzinfo=UTC)
    found = [
        Detection(
            Resource(
                provider="aws",
                account_id=ACCOUNT_ID,
                region="eu-west-1",
                resource_type="ebs_volume",
                resource_id=f"arn:aws:ec2:eu-west-1:{ACCOUNT_ID}:volume/vol-{i:08x}",
                state="available",
                created_at=datetime(2026, 1, 1, tzinfo=UTC),
                config={"size_gb": 100, "volume_type": "gp3"},
                cost_monthly=8.0 + i,
                metrics={"VolumeReadOps": [("2026-11-14", 0.0), ("2026-11-15", 0.0)]},
            ),
            "unattached_volume",
            "high",
            "unattached",
            scanned_at,
        ).to_json()
        for i in range(detections)
    ]
    return RawScan(
        provider="aws",
        account_id=ACCOUNT_ID,
        scan_date=day,
        scanned_at=scanned_at,
        resources_scanned=detections + 5,
        total_cost_monthly=100.0,
        cost_by_region={"eu-west-1": 100.0},
        detections=found,
        errors=[ScanError("us-east-1", "ec2", "AccessDenied", "denied") for _ in range(errors)],
    )


def is_delete_of(table: sa.Table, statement: str) -> bool:
    return statement.lstrip().upper().startswith("DELETE FROM") and table.name in statement


WRITES = ("INSERT", "UPDATE", "DELETE", "BEGIN")


def may_wait(engine: Engine, statement: str) -> bool:
    """A statement that may wait for another writer's transaction: a lock, or on SQLite any
    write (one writer per database file)."""
    if "pg_advisory_xact_lock" in statement:
        return True
    return engine.dialect.name == "sqlite" and statement.lstrip().upper().startswith(WRITES)


@dataclass
class Overlap:
    """Two writers of one slice, overlapping where it hurts.

    The first pauses right after its first ``statement`` (DELETE, UPDATE...) on ``table``; the
    second then runs until it ends or reaches a statement that may wait for the first (a lock);
    only then does the first go on. Statement hooks (SQLAlchemy
    cursor events), so the same test runs against the code before and after the writer lock.
    """

    engine: Engine
    table: sa.Table
    statement: str = "DELETE"
    first_paused: threading.Event = field(default_factory=threading.Event)
    second_reached: threading.Event = field(default_factory=threading.Event)
    roles: dict[int, str] = field(default_factory=dict)

    def _pauses_after(self, statement: str) -> bool:
        words = statement.lstrip().upper()
        return words.startswith(self.statement) and self.table.name in statement

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        role = self.roles.get(threading.get_ident())
        if role == "second" and may_wait(self.engine, statement):
            self.second_reached.set()

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        role = self.roles.get(threading.get_ident())
        if role == "first" and self._pauses_after(statement) and not self.first_paused.is_set():
            self.first_paused.set()
            assert self.second_reached.wait(WAIT), "the second writer never came"

    def run(self, first: Callable[[], Any], second: Callable[[], Any] | None = None) -> list[Any]:
        """Run ``first`` and ``second`` (default: ``first`` again) as the two writers; their
        results, or the exceptions they raised."""
        results: dict[str, Any] = {}

        def writer(role: str, write: Callable[[], Any]) -> None:
            self.roles[threading.get_ident()] = role
            try:
                results[role] = write()
            except BaseException as exc:  # reported to the test, which asserts on it
                results[role] = exc
            finally:
                if role == "second":
                    self.second_reached.set()

        sa.event.listen(self.engine, "before_cursor_execute", self._before)
        sa.event.listen(self.engine, "after_cursor_execute", self._after)
        try:
            one = threading.Thread(target=writer, args=("first", first))
            one.start()
            assert self.first_paused.wait(WAIT), f"the first writer never ran {self.statement}"
            two = threading.Thread(target=writer, args=("second", second or first))
            two.start()
            for thread in (one, two):
                thread.join(WAIT)
                assert not thread.is_alive(), "a writer hung"
        finally:
            sa.event.remove(self.engine, "before_cursor_execute", self._before)
            sa.event.remove(self.engine, "after_cursor_execute", self._after)
        return [results["first"], results["second"]]


def previous_and_next(what: str) -> tuple[Any, Any]:
    """Two versions of one slice: what is stored, and what a re-run writes instead."""
    if what == "training":
        from cloudwaste_pipeline_tests.test_warehouse import partition

        return partition(DAY, 3), partition(DAY, 5)
    return raw_scan(detections=3, errors=2), raw_scan(detections=4, errors=1)


def write_slice(engine: Engine, what: str, version: Any) -> None:
    """Replace the slice ``what`` ("training": a day of one account's training rows, "raw": a
    day's raw scan and its errors) with ``version``, in one transaction."""
    from cloudwaste_pipeline.warehouse import queries, schema

    with engine.begin() as conn:
        if what == "training":
            queries.replace_scan_partition(conn, schema.ml_training_data, DAY, "a" * 64, version)
        else:
            queries.store_raw_scan(conn, ALIAS, version)


def rewrite_in_child(url: str, what: str) -> None:
    """A child process's re-run of the slice (the crash tests arm a crash point in it)."""
    from cloudwaste_pipeline.warehouse.engine import make_engine

    write_slice(make_engine(url), what, previous_and_next(what)[1])
