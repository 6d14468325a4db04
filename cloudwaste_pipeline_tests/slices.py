"""Helpers for the one-writer-per-slice tests: a stored scan, its Dagster resources, and a
harness that makes two writers of one slice overlap at a chosen statement, deterministically."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloudwaste_pipeline.accounts import Account
from cloudwaste_pipeline.defs.resources import AnonymizerResource, CloudResource, WarehouseResource
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


class FakeCloud(CloudResource):
    """The accounts file's accounts, scanned as ``raw_scan`` of the pipeline's today."""

    def scan(self, account: Account) -> RawScan:
        from cloudwaste_pipeline import settings

        return raw_scan(settings.today())


def write_accounts(folder: Path) -> Path:
    path = folder / "accounts.yaml"
    path.write_text(
        "accounts:\n"
        f"  - name: {ALIAS}\n"
        "    provider: aws\n"
        "    owner_user_id: user-1\n"
        f'    account_id: "{ACCOUNT_ID}"\n'
        "    regions: [eu-west-1]\n"
    )
    return path


def resources(url: str, accounts: Path) -> dict[str, Any]:
    return {
        "warehouse": WarehouseResource(database_url=url),
        "anonymizer": AnonymizerResource(key=KEY),
        "cloud": FakeCloud(accounts_file=str(accounts)),
    }


def materialize(asset: Any, day: date, url: str, accounts: Path) -> dg.ExecuteInProcessResult:
    """One run of ``asset``'s partition (day, ALIAS) on an instance of its own."""
    from cloudwaste_pipeline.defs.partitions import scan_key

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("cloud_accounts", [ALIAS])
    return dg.materialize(
        [asset],
        partition_key=scan_key(day, ALIAS),
        resources=resources(url, accounts),
        instance=instance,
        raise_on_error=False,
    )


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every message and cause Dagster stored for the run's failed steps."""
    texts = []
    for event in result.get_step_failure_events():
        error = event.event_specific_data.error
        while error is not None:
            texts.append(error.message + "".join(error.stack))
            error = error.cause or error.context
    return "\n".join(texts)


def is_delete_of(table: sa.Table, statement: str) -> bool:
    return statement.lstrip().upper().startswith("DELETE FROM") and table.name in statement


def may_wait(engine: Engine, table: sa.Table, statement: str) -> bool:
    """A statement that waits while another transaction writes ``table``'s slice: a lock, or on
    SQLite any write (one writer per database file)."""
    if "pg_advisory_xact_lock" in statement or statement.startswith("BEGIN IMMEDIATE"):
        return True
    return engine.dialect.name == "sqlite" and is_delete_of(table, statement)


@dataclass
class Overlap:
    """Two writers of one slice, overlapping where it hurts.

    The first pauses right after its DELETE of ``table`` (before its INSERT); the second then
    runs until it has deleted too, or until it reaches a statement that waits for the first (a
    lock); only then does the first go on. Statement hooks (SQLAlchemy cursor events), so the
    same test runs against the code before and after the writer lock.
    """

    engine: Engine
    table: sa.Table
    first_paused: threading.Event = field(default_factory=threading.Event)
    second_reached: threading.Event = field(default_factory=threading.Event)
    roles: dict[int, str] = field(default_factory=dict)

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        role = self.roles.get(threading.get_ident())
        if role == "second" and may_wait(self.engine, self.table, statement):
            self.second_reached.set()

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        role = self.roles.get(threading.get_ident())
        if not is_delete_of(self.table, statement):
            return
        if role == "first" and not self.first_paused.is_set():
            self.first_paused.set()
            assert self.second_reached.wait(WAIT), "the second writer never came"
        elif role == "second":
            self.second_reached.set()

    def run(self, write: Callable[[], Any]) -> list[Any]:
        """Run ``write`` as the first and as the second writer; their results or exceptions."""
        results: dict[str, Any] = {}

        def writer(role: str) -> None:
            self.roles[threading.get_ident()] = role
            try:
                results[role] = write()
            except BaseException as exc:  # reported to the test, which asserts on it
                results[role] = exc

        sa.event.listen(self.engine, "before_cursor_execute", self._before)
        sa.event.listen(self.engine, "after_cursor_execute", self._after)
        try:
            first = threading.Thread(target=writer, args=("first",))
            first.start()
            assert self.first_paused.wait(WAIT), "the first writer never deleted"
            second = threading.Thread(target=writer, args=("second",))
            second.start()
            for thread in (first, second):
                thread.join(WAIT)
                assert not thread.is_alive(), "a writer hung"
        finally:
            sa.event.remove(self.engine, "before_cursor_execute", self._before)
            sa.event.remove(self.engine, "after_cursor_execute", self._after)
        return [results["first"], results["second"]]
