"""The warehouse reads and writes the assets share, written once for both engines."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cloudwaste_pipeline.costs import month_bounds
from cloudwaste_pipeline.scanning.model import RawScan
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline.warehouse.load import Batch, read_frame, replace_rows
from cloudwaste_pipeline.warehouse.locks import lock_slice


def store_raw_scan(conn: Connection, alias: str, scan: RawScan) -> None:
    """Keep the day's scan (raw ids: raw store only); a re-scan of the same day replaces it."""
    raw, errors = schema.raw_scans, schema.scan_errors
    same_scan = sa.and_(
        raw.c.provider == scan.provider,
        raw.c.account_id == scan.account_id,
        raw.c.scan_date == scan.scan_date,
    )
    frame = pd.DataFrame(
        [
            {
                "provider": scan.provider,
                "account_id": scan.account_id,
                "account_alias": alias,
                "scan_date": scan.scan_date,
                "scanned_at": scan.scanned_at.replace(tzinfo=None),
                "status": scan.status,
                "payload": scan.payload(),
            }
        ]
    )
    # One lock for the day's scan and its errors: the raw account id never leaves the process
    # (the key is a hash of it).
    day = (scan.provider, scan.account_id, scan.scan_date.isoformat())
    replace_rows(conn, raw, same_scan, frame, slice_of=day)
    error_frame = pd.DataFrame(
        [
            {
                "provider": scan.provider,
                "account_id": scan.account_id,
                "scan_date": scan.scan_date,
                "region": e.region,
                "service": e.service,
                "error_code": e.error_code,
                "message": e.message,
            }
            for e in scan.errors
        ]
    )
    same_errors = sa.and_(
        errors.c.provider == scan.provider,
        errors.c.account_id == scan.account_id,
        errors.c.scan_date == scan.scan_date,
    )
    replace_rows(conn, errors, same_errors, error_frame, slice_of=day)


def load_raw_scan(
    conn: Connection, provider: str, account_id: str, scan_date: date
) -> dict[str, Any] | None:
    raw = schema.raw_scans
    row = conn.execute(
        sa.select(raw.c.payload, raw.c.scanned_at, raw.c.status).where(
            raw.c.provider == provider,
            raw.c.account_id == account_id,
            raw.c.scan_date == scan_date,
        )
    ).first()
    if row is None:
        return None
    payload = row.payload if isinstance(row.payload, dict) else json.loads(row.payload)
    return {**payload, "scanned_at": row.scanned_at, "status": row.status}


def last_scan_days(conn: Connection) -> dict[tuple[str, str], date]:
    """(provider, raw account id) -> the day of its newest stored raw scan."""
    raw = schema.raw_scans
    rows = conn.execute(
        sa.select(raw.c.provider, raw.c.account_id, sa.func.max(raw.c.scan_date)).group_by(
            raw.c.provider, raw.c.account_id
        )
    )
    return {(provider, account): _as_date(day) for provider, account, day in rows}


def _as_date(value: date | str) -> date:
    """SQLite may hand an aggregated DATE back as its ISO text."""
    return date.fromisoformat(value) if isinstance(value, str) else value


def previous_raw_scan(
    conn: Connection, provider: str, account_id: str, before: date
) -> dict[str, Any] | None:
    """The account's latest stored scan before ``before``: what "first detected" is relative to."""
    raw = schema.raw_scans
    previous = conn.execute(
        sa.select(sa.func.max(raw.c.scan_date)).where(
            raw.c.provider == provider, raw.c.account_id == account_id, raw.c.scan_date < before
        )
    ).scalar()
    if previous is None:
        return None
    return load_raw_scan(conn, provider, account_id, _as_date(previous))


def previous_detected_hashes(conn: Connection, account_hash: str, before: date) -> set[str] | None:
    """Fallback once raw scans expired: the resources of the previous derived scan day."""
    ml = schema.ml_training_data
    previous = conn.execute(
        sa.select(sa.func.max(ml.c.scan_date)).where(
            ml.c.account_hash == account_hash, ml.c.scan_date < before
        )
    ).scalar()
    if previous is None:
        return None
    rows = conn.execute(
        sa.select(ml.c.resource_hash).where(
            ml.c.account_hash == account_hash, ml.c.scan_date == previous
        )
    )
    return {r.resource_hash for r in rows}


def replace_scan_partition(
    conn: Connection,
    table: sa.Table,
    scan_date: date,
    account_hash: str,
    frame: Batch | Iterable[Batch],
    extra: sa.ColumnElement[bool] | None = None,
) -> tuple[int, int]:
    """Replace ``table``'s rows of one scan day and account (and ``extra``), locked by that day
    and account hash: data, not a Dagster partition key, so a writer that covers several accounts
    (shards) still excludes the per-account writers, provided it locks accounts in sorted order."""
    where = sa.and_(table.c.scan_date == scan_date, table.c.account_hash == account_hash)
    if extra is not None:
        where = sa.and_(where, extra)
    slice_of = (scan_date.isoformat(), account_hash)
    return replace_rows(conn, table, where, frame, slice_of=slice_of)


LABELS = "ml_training_data.user_action"
"""The lock between training loads and label writers (``apply_labels``)."""


def lock_labels_for_load(conn: Connection) -> None:
    """Before a training load writes: loads hold the labels lock together (``shared``)."""
    lock_slice(conn, LABELS, shared=True)


def apply_labels(conn: Connection, where: sa.ColumnElement[bool], *, loading: bool = False) -> int:
    """Join the latest user action of each resource into ``ml_training_data.user_action``.

    Training rows and actions come from different runs, each blind to the other's uncommitted
    rows: a load that joined the labels before an action batch committed, and a batch that
    labelled before the load committed, would leave the new rows unlabelled. So a load holds the
    labels lock shared from before its insert (``lock_labels_for_load``; ``loading=True`` here),
    loads run side by side, and every other caller (an action batch, an erasure) takes it
    exclusively here: it waits for the loads in flight, then sees their rows.

    ``user_action_patterns`` is the source of truth for labels, so rebuilding a scan day (or
    re-running an action batch) re-joins them and never drops one. One set-based
    ``UPDATE ... FROM`` over the latest action per resource (a window, not a correlated
    subquery per row: right after a 100k-event batch the planner's statistics do not know the
    new rows yet, and the per-row lookup degraded into 25k table scans on PostgreSQL). Rows of
    resources nobody acted on are left as they are.
    """
    if not loading:
        lock_slice(conn, LABELS)
    ml, actions = schema.ml_training_data, schema.user_action_patterns
    selected = sa.select(ml.c.resource_hash).where(where).correlate(None)
    ranked = (
        sa.select(
            actions.c.resource_hash,
            actions.c.action_taken,
            sa.func.row_number()
            .over(
                partition_by=actions.c.resource_hash,
                order_by=(actions.c.action_at.desc(), actions.c.created_at.desc()),
            )
            .label("rank"),
        )
        .where(actions.c.resource_hash.in_(selected))
        .subquery("ranked")
    )
    latest = (
        sa.select(ranked.c.resource_hash, ranked.c.action_taken)
        .where(ranked.c.rank == 1)
        .subquery("latest")
    )
    result = conn.execute(
        sa.update(ml)
        .where(where, ml.c.resource_hash == latest.c.resource_hash)
        .values(user_action=latest.c.action_taken)
    )
    return result.rowcount or 0


def in_chunks(values: Iterable[str], size: int = 5_000) -> Iterator[list[str]]:
    """Sorted distinct values in lists short enough for an ``IN (...)`` of bound parameters
    (SQLite refuses more than 32,766 in one statement; 100k events name more resources)."""
    ordered = sorted(set(values))
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


def trend_month(account_hash: str, month: str) -> sa.ColumnElement[bool]:
    """The cost trend row of an account's month ('YYYY-MM')."""
    trends = schema.cost_trend_data
    return sa.and_(trends.c.account_hash == account_hash, trends.c.month == month)


def lock_trend_month(conn: Connection, account_hash: str, month: str) -> None:
    """The writer lock of an account's month of cost trends (held until commit)."""
    lock_slice(conn, schema.cost_trend_data.fullname, account_hash, month)


def replace_trend_month(conn: Connection, account_hash: str, month: str, row: Batch) -> None:
    """Replace the month's trend row, under its writer lock."""
    where = trend_month(account_hash, month)
    replace_rows(conn, schema.cost_trend_data, where, row, slice_of=(account_hash, month))


def refresh_waste_eliminated(
    conn: Connection, months: set[tuple[str, str]], updated_at: datetime
) -> int:
    """Re-sum ``waste_eliminated`` of stored (account_hash, 'YYYY-MM') trend rows from actions.

    Called when actions arrive, so the month's figure moves at once; the monthly asset computes
    the same sum when it is rebuilt, so the two never disagree.
    """
    trends, actions = schema.cost_trend_data, schema.user_action_patterns
    updated = 0
    for account_hash, month in sorted(months):  # sorted: every writer locks in one order
        # The month's writer lock, held to commit: a cost trend rebuild or another action batch
        # of the month waits, then sums what this batch inserted (it cannot see it before).
        lock_trend_month(conn, account_hash, month)
        first, following = month_bounds(date.fromisoformat(f"{month}-01"))
        start, end = (datetime.combine(d, datetime.min.time()) for d in (first, following))
        saved = (
            sa.select(sa.func.coalesce(sa.func.sum(actions.c.cost_saved_monthly), 0.0))
            .where(
                actions.c.account_hash == account_hash,
                actions.c.action_at >= start,
                actions.c.action_at < end,
            )
            .scalar_subquery()
        )
        result = conn.execute(
            sa.update(trends)
            .where(trend_month(account_hash, month))
            .values(
                waste_eliminated=sa.func.round(sa.cast(saved, sa.Numeric), 2),
                updated_at=updated_at,
            )
        )
        updated += result.rowcount or 0
    return updated


def frame(conn: Connection, query: sa.Select[Any]) -> pd.DataFrame:
    return read_frame(conn, query)


def table_counts(conn: Connection) -> dict[str, int]:
    return {
        table.name: int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)
        for table in schema.ML_TABLES
    }


def as_datetime(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
