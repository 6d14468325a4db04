"""Retention: raw data (raw ids) goes after days, ML rows after years, sooner if a user asks.

Raw data is what can identify a customer, so it is kept only as long as a day may need to be
re-derived (``CLOUDWASTE_RAW_RETENTION_DAYS``, default 30, at least 3): raw scans and scan
errors by scan day, processed user-action outbox events by arrival (an unprocessed one is never
deleted: the action run stores or quarantines it with its reason), quarantine by when it was
quarantined. Anonymized ML rows are kept for ``CLOUDWASTE_ML_RETENTION_YEARS`` (default 3, at
least 1), the predecessor's GDPR rule. Retention below those minimums is refused, from the
environment, run config or a caller of ``cleanup``: a bad number must not empty the warehouse.

Per-user retention: ``user_preferences.data_retention_years`` can only *shorten* it (the
deployment's ML retention is the upper bound a user cannot lift). A user's shorter retention
applies to

- the rows keyed by their ``user_hash`` (their actions in ``user_action_patterns``), and
- every account-level row (``account_hash``) of the accounts they own per the accounts file: the
  account's owner is whose data the account's scans are.

A row under several rules goes at the shortest. Deletes run in batches of primary keys, one
short transaction each, so a large cleanup never holds one long lock on a table the scans and the
action sensor write to.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.accounts import Account
from cloudwaste_pipeline.errors import CloudWasteError
from cloudwaste_pipeline.privacy.anonymize import hash_id, hash_user
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline.warehouse.queries import in_chunks

BATCH_SIZE = 10_000
"""Rows per delete transaction (also below SQLite's limit of bound parameters per statement)."""

Rule = tuple[sa.Table, sa.ColumnElement[bool]]


def ml_cutoff(today: date, years: int) -> date:
    """The same calendar day ``years`` earlier (28 Feb for 29 Feb)."""
    try:
        return today.replace(year=today.year - years)
    except ValueError:
        return today.replace(year=today.year - years, day=28)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time())


def ml_expired(table: sa.Table, cut: date) -> sa.ColumnElement[bool]:
    """Rows of an account-level ML table older than ``cut`` (by the time the row describes)."""
    if table is schema.cost_trend_data:
        return table.c.month < cut.strftime("%Y-%m")
    if table is schema.cost_forecasts:  # a forecast is as old as the last month it is made from
        return table.c.last_month < cut.strftime("%Y-%m")
    if table is schema.resource_anomaly_scores:  # as old as the series it scored
        return sa.func.coalesce(table.c.window_end, table.c.scored_at) < _midnight(cut)
    return table.c[schema.ROW_TIME[table.name]] < _midnight(cut)


ACCOUNT_TABLES: tuple[sa.Table, ...] = (
    schema.ml_training_data,
    schema.resource_lifecycle_events,
    schema.cloudwatch_metrics_history,
    schema.user_action_patterns,
    schema.cost_trend_data,
    *schema.MODEL_TABLES,
)
"""The ML tables and model outputs whose rows belong to an account (``account_hash``), so
expire with it."""


def raw_rules(today: date, raw_days: int) -> list[Rule]:
    raw_cut = today - timedelta(days=raw_days)
    outbox = schema.resource_action_events
    return [
        (schema.raw_scans, schema.raw_scans.c.scan_date < raw_cut),
        (schema.scan_errors, schema.scan_errors.c.scan_date < raw_cut),
        (schema.account_failures, schema.account_failures.c.scan_date < raw_cut),
        (  # never an unprocessed event: the action run quarantines it with its reason
            outbox,
            sa.and_(outbox.c.received_at < _midnight(raw_cut), outbox.c.processed_at.is_not(None)),
        ),
        (schema.quarantine, schema.quarantine.c.quarantined_at < _midnight(raw_cut)),
    ]


def retention_rules(today: date, raw_days: int, ml_years: int) -> list[Rule]:
    """The deployment-wide rules: raw store by days, every account-level ML table by years."""
    ml_cut = ml_cutoff(today, ml_years)
    return raw_rules(today, raw_days) + [(t, ml_expired(t, ml_cut)) for t in ACCOUNT_TABLES]


def account_owners(accounts: Iterable[Account], key: bytes) -> dict[str, str]:
    """account_hash -> owner's user_hash, from the accounts file (the only place ownership is)."""
    return {
        hash_id("account", a.provider, a.cloud_id, key): hash_user(a.owner_user_id, key)
        for a in accounts
    }


def shorter_retentions(
    conn: Connection, ml_years: int, owners: Mapping[str, str]
) -> dict[int, tuple[list[str], list[str]]]:
    """years -> (user hashes, account hashes) of the users who chose less than ``ml_years``."""
    prefs = schema.user_preferences
    users: dict[int, set[str]] = defaultdict(set)
    for row in conn.execute(
        sa.select(prefs.c.user_hash, prefs.c.data_retention_years).where(
            prefs.c.data_retention_years < ml_years
        )
    ):
        # A stored choice below the minimum (written around the API) counts as the minimum.
        years = max(int(row.data_retention_years), settings.MIN_ML_RETENTION_YEARS)
        users[years].add(row.user_hash)
    return {
        years: (sorted(hashes), sorted(a for a, u in owners.items() if u in hashes))
        for years, hashes in users.items()
    }


def per_user_rules(
    today: date, shorter: Mapping[int, tuple[list[str], list[str]]]
) -> Iterator[Rule]:
    """The rules of shorter per-user retentions, with ``IN`` lists in bounded chunks."""
    actions = schema.user_action_patterns
    for years, (user_hashes, account_hashes) in sorted(shorter.items()):
        cut = ml_cutoff(today, years)
        for chunk in in_chunks(user_hashes):
            yield actions, sa.and_(actions.c.user_hash.in_(chunk), ml_expired(actions, cut))
        for chunk in in_chunks(account_hashes):
            for table in ACCOUNT_TABLES:
                yield table, sa.and_(table.c.account_hash.in_(chunk), ml_expired(table, cut))


def positive_batch_size(batch_size: int) -> int:
    """A batch of 0 rows would loop forever; a negative one means "no limit" on SQLite."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CloudWasteError(f"batch_size={batch_size!r} is not allowed: expected 1 or more")
    return batch_size


def delete_in_batches(
    engine: Engine, table: sa.Table, where: sa.ColumnElement[bool], batch_size: int = BATCH_SIZE
) -> int:
    """Delete matching rows ``batch_size`` primary keys at a time, one transaction per batch."""
    (key,) = table.primary_key.columns
    removed = 0
    while True:
        with engine.begin() as conn:
            ids = conn.execute(sa.select(key).where(where).limit(batch_size)).scalars().all()
            if ids:
                removed += conn.execute(sa.delete(table).where(key.in_(ids))).rowcount or 0
        if len(ids) < batch_size:
            return removed


def cleanup(
    engine: Engine,
    today: date,
    raw_days: int,
    ml_years: int,
    *,
    owners: Mapping[str, str] | None = None,
    batch_size: int = BATCH_SIZE,
) -> dict[str, int]:
    """Delete what is past retention; returns rows removed per table (every table, 0 included).

    ``owners`` (``account_owners``) maps accounts to their owner, so a user's shorter retention
    reaches the account-level rows; without it only the rows keyed by their user hash follow it.
    Retention below the settings' minimum is refused before anything is deleted, whoever asks.
    """
    settings.check("CLOUDWASTE_RAW_RETENTION_DAYS", raw_days, "raw_days")
    settings.check("CLOUDWASTE_ML_RETENTION_YEARS", ml_years, "ml_years")
    positive_batch_size(batch_size)
    with engine.connect() as conn:
        shorter = shorter_retentions(conn, ml_years, owners or {})
    rules = retention_rules(today, raw_days, ml_years) + list(per_user_rules(today, shorter))
    removed: dict[str, int] = defaultdict(int)
    for table, expired in rules:
        removed[table.fullname] += delete_in_batches(engine, table, expired, batch_size)
    return dict(removed)
