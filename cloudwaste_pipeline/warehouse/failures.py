"""Per-account failures of shard runs: recorded, listed, retried with back-off, resolved.

A run works through a shard of many accounts, each in its own transaction; one account that
fails (credentials revoked, throttling that outlasts the retries, a bug on odd data) is written
here by alias and the run goes on with the others. ``failed_accounts_sensor`` re-requests due
rows; a later success marks the row resolved (kept for the record until raw retention).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import sqlalchemy as sa

from cloudwaste_pipeline.privacy.anonymize import scrub_text
from cloudwaste_pipeline.warehouse import schema

RETRY_FIRST = timedelta(minutes=5)
RETRY_MAX = timedelta(hours=4)
MAX_ATTEMPTS = 12
"""About a day and a half of retries (5, 10, 20... minutes, then every 4 hours); then the failure
stays listed (and alerted by the check) but is no longer re-requested: a bug, not a blip."""
MESSAGE_CHARS = 500

table = schema.account_failures


def retry_backoff(attempts: int) -> timedelta:
    """5 minutes after the first failure, doubling, at most 4 hours."""
    return min(RETRY_FIRST * 2 ** min(max(attempts - 1, 0), 10), RETRY_MAX)


@dataclass(frozen=True)
class Failure:
    scan_date: date
    account_alias: str
    asset: str
    error_type: str
    message: str
    attempts: int
    retry_at: datetime | None


def _naive(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None)


def describe(exc: BaseException) -> tuple[str, str]:
    """(type, message) of an error, ids scrubbed, one line, bounded."""
    text = " ".join(scrub_text(str(exc)).split())
    return type(exc).__name__[:100], text[:MESSAGE_CHARS]


def record(
    conn: sa.Connection,
    day: date,
    alias: str,
    asset: str,
    exc: BaseException,
    now: datetime,
    *,
    retry: bool = True,
) -> int:
    """Record (or count again) a failure; returns the attempts so far. ``retry=False``: listed
    but never re-requested (e.g. a past day whose raw scan is gone)."""
    error_type, message = describe(exc)
    now = _naive(now)
    key = sa.and_(table.c.scan_date == day, table.c.account_alias == alias, table.c.asset == asset)
    old = conn.execute(sa.select(table.c.attempts, table.c.resolved_at).where(key)).first()
    attempts = 1 if old is None or old.resolved_at is not None else old.attempts + 1
    values = {
        "error_type": error_type,
        "message": message,
        "attempts": attempts,
        "last_failed_at": now,
        "retry_at": now + retry_backoff(attempts) if retry and attempts < MAX_ATTEMPTS else None,
        "resolved_at": None,
    }
    if old is None:
        conn.execute(
            table.insert().values(
                scan_date=day, account_alias=alias, asset=asset, first_failed_at=now, **values
            )
        )
    else:
        if old.resolved_at is not None:
            values["first_failed_at"] = now
        conn.execute(table.update().where(key).values(**values))
    return attempts


def resolve(
    conn: sa.Connection, day: date, alias: str, asset: str, now: datetime, *, earlier: bool = False
) -> None:
    """The account succeeded: its open failure (if any) for this day and asset is resolved, and
    with ``earlier`` those of the days before too (a live scan supersedes the scans that failed
    on days that can no longer be scanned)."""
    conn.execute(
        table.update()
        .where(
            table.c.scan_date <= day if earlier else table.c.scan_date == day,
            table.c.account_alias == alias,
            table.c.asset == asset,
            table.c.resolved_at.is_(None),
        )
        .values(resolved_at=_naive(now), retry_at=None)
    )


def _failure(row: sa.Row) -> Failure:
    return Failure(
        row.scan_date,
        row.account_alias,
        row.asset,
        row.error_type,
        row.message,
        row.attempts,
        row.retry_at,
    )


def open_failures(conn: sa.Connection, since: date | None = None) -> list[Failure]:
    """Unresolved failures (of days from ``since`` on), newest day first, then by alias."""
    query = sa.select(table).where(table.c.resolved_at.is_(None))
    if since is not None:
        query = query.where(table.c.scan_date >= since)
    rows = conn.execute(
        query.order_by(table.c.scan_date.desc(), table.c.account_alias, table.c.asset)
    )
    return [_failure(r) for r in rows]


def due(conn: sa.Connection, now: datetime, since: date) -> list[Failure]:
    """Open failures whose retry time has come, of days from ``since`` on."""
    rows = conn.execute(
        sa.select(table).where(
            table.c.resolved_at.is_(None),
            table.c.retry_at.is_not(None),
            table.c.retry_at <= _naive(now),
            table.c.scan_date >= since,
        )
    )
    return [_failure(r) for r in rows]


def postpone(conn: sa.Connection, failures: list[Failure], now: datetime) -> None:
    """A retry was requested: the next one waits a back-off, so a run that never starts (or
    whose outcome is slow) is asked again later, not on every tick."""
    for f in failures:
        conn.execute(
            table.update()
            .where(
                table.c.scan_date == f.scan_date,
                table.c.account_alias == f.account_alias,
                table.c.asset == f.asset,
                table.c.resolved_at.is_(None),
            )
            .values(retry_at=None if now is None else _naive(now) + retry_backoff(f.attempts + 1))
        )
