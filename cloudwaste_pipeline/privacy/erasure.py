"""GDPR erasure: remove every row derived from one user or account, and keep it removed.

What one erasure removes, in one transaction:

- an **account**: every ML row keyed by its ``account_hash`` (training rows, lifecycle events,
  metric series, actions on its resources, cost trends, anomaly scores, cost forecasts) and, in
  the raw store, its raw scans, scan errors, outbox events and the quarantine rows whose payload
  names it;
- a **user**: their preferences and actions (``user_hash``), the lifecycle events their actions
  made (``source_event_hash``), their outbox events and the quarantine rows naming them. The
  training labels their actions set are recomputed from the actions that remain, and so is the
  ``waste_eliminated`` of the cost trends their deletions counted in. The **accounts they own**
  per the accounts file are erased with them: an account's scans describe its owner's cloud, so
  they are the owner's data. Accounts the file does not list (or no file) are not guessed at:
  erase them by account id.

A raw row names a subject when its stored id, put in canonical form by the function hashing uses
(``anonymize.normalize_identifier``: stripped, Azure ids lower-cased), equals the subject's: the
raw match is exactly hash equality, whatever case or whitespace a writer stored.

Every erased subject gets a tombstone (``erasure_tombstones``: kind and hash only). The scan
assets, the action batch and the cost trends skip tombstoned subjects, so re-materializing a day,
replaying the outbox or rebuilding a month cannot bring the rows back, and exports and training,
which read these tables, no longer see them.

Published export files are rewritten without the subject's rows and their manifests updated, and
export staging debris is removed (``privacy/export_erasure.py``), once the erasure has committed
(no row lock is held meanwhile): in the local exports folder (``$CLOUDWASTE_HOME/ml_datasets``)
and, when one is configured, under the S3 exports prefix (``CLOUDWASTE_EXPORTS_S3_URI``). What
cannot be rewritten is listed in the report as remaining.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cloudwaste_pipeline.accounts import Account
from cloudwaste_pipeline.privacy.anonymize import (
    OWN_PROVIDER,
    hash_id,
    hash_user,
    normalize_identifier,
)
from cloudwaste_pipeline.privacy.export_erasure import ExportErasure
from cloudwaste_pipeline.warehouse import queries, schema
from cloudwaste_pipeline.warehouse.load import insert_new


@dataclass(frozen=True)
class Subject:
    """One erased user or account. ``raw_id`` (canonical, see ``canonical``) only matches
    raw-store rows; it is never stored."""

    kind: str  # user, account
    hash: str
    raw_id: str
    provider: str  # aws or azure for accounts, cloudwaste for users


@dataclass
class ErasureReport:
    """What an erasure did, per store, by hash, path and count only: safe to print, log and
    attach to a ticket. ``remaining``: what could not be erased (a file that cannot be
    rewritten...); the erasure is complete only when it is empty."""

    subjects: list[dict[str, str]]
    removed: dict[str, int]
    relabelled_rows: int = 0
    tombstones_added: int = 0
    exports: ExportErasure = field(default_factory=ExportErasure)

    @property
    def total_removed(self) -> int:
        return sum(self.removed.values())

    @property
    def complete(self) -> bool:
        return not self.exports.remaining

    def as_dict(self) -> dict[str, Any]:
        return {
            "subjects": self.subjects,
            "rows_removed": self.removed,
            "total_rows_removed": self.total_removed,
            "training_rows_relabelled": self.relabelled_rows,
            "tombstones_added": self.tombstones_added,
            "export_files_rewritten": self.exports.files_rewritten,
            "export_rows_removed": sum(f["rows_removed"] for f in self.exports.files_rewritten),
            "export_staging_folders_removed": self.exports.staging_removed,
            "remaining": self.exports.remaining,
            "complete": self.complete,
        }


def subjects_for(
    key: bytes,
    *,
    user_id: str | None = None,
    account_id: str | None = None,
    provider: str = "aws",
    accounts: Sequence[Account] = (),
) -> list[Subject]:
    """The user and/or account asked for, plus the accounts the user owns per ``accounts``.

    Ids are kept in hashing's canonical form (``normalize_identifier``), so every later match,
    raw or hashed, sees the subject as hashing does: an owner spelled ``" user-1"`` in the
    accounts file is still user-1.
    """
    if not user_id and not account_id:
        raise ValueError("give user_id or account_id (or both)")
    found: dict[tuple[str, str], Subject] = {}
    if user_id:
        user = normalize_identifier("user", OWN_PROVIDER, user_id)
        found["user", user] = Subject("user", hash_user(user, key), user, OWN_PROVIDER)
        for account in accounts:
            if canonical("user", OWN_PROVIDER, account.owner_user_id) == (OWN_PROVIDER, user):
                subject = _account(key, account.provider, account.cloud_id)
                found["account", subject.hash] = subject
    if account_id:
        subject = _account(key, provider, account_id)
        found["account", subject.hash] = subject
    return list(found.values())


def _account(key: bytes, provider: str, account_id: str) -> Subject:
    canonical = normalize_identifier("account", provider, account_id)
    return Subject("account", hash_id("account", provider, canonical, key), canonical, provider)


def canonical(kind: str, provider: Any, stored: Any) -> tuple[str, str] | None:
    """A stored raw (provider, id) in hashing's canonical form, or None where hashing would refuse
    it (not a string, blank, unknown provider): the one rule by which erasure decides that a raw
    value names a subject, ``normalize_identifier``'s, so it matches exactly what ``hash_id``
    matches. A cloud provider is only trimmed and lower-cased: an event spelled ``"AWS"`` by
    another writer still names the account."""
    if kind in ("account", "resource"):
        provider = str(provider).strip().lower()
    try:
        return provider, normalize_identifier(kind, provider, stored)
    except (TypeError, ValueError):
        return None


def erased_hashes(conn: Connection, kind: str) -> set[str]:
    tombstones = schema.erasure_tombstones
    return set(
        conn.execute(
            sa.select(tombstones.c.subject_hash).where(tombstones.c.kind == kind)
        ).scalars()
    )


def is_erased(conn: Connection, kind: str, subject_hash: str) -> bool:
    tombstones = schema.erasure_tombstones
    found = conn.execute(
        sa.select(tombstones.c.id).where(
            tombstones.c.kind == kind, tombstones.c.subject_hash == subject_hash
        )
    ).first()
    return found is not None


def _delete(conn: Connection, table: sa.Table, where: sa.ColumnElement[bool]) -> int:
    return conn.execute(sa.delete(table).where(where)).rowcount or 0


def _mentions(subjects: Iterable[Subject]) -> Callable[[str], bool] | None:
    """Whether a text names a subject: whole-token matches of the canonical ids, so ``user-4``
    does not match ``user-42`` while an ARN (``...:123456789012:volume/...``) or an Azure path
    (``/subscriptions/<id>/``) names its account. Azure ids are searched in the lower-cased text
    (``str.lower``, as hashing lower-cases them; a regex's case folding differs for some
    letters); other ids as written: ``USER-1`` is another user than ``user-1``."""

    def tokens(ids: set[str]) -> re.Pattern[str] | None:
        if not ids:
            return None
        alternatives = "|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True))
        return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])")

    exact = tokens({s.raw_id for s in subjects if s.provider != "azure"})
    folded = tokens({s.raw_id for s in subjects if s.provider == "azure"})
    if exact is None and folded is None:
        return None
    return lambda text: bool(
        (exact is not None and exact.search(text))
        or (folded is not None and folded.search(text.lower()))
    )


def _texts(value: Any) -> Iterator[str]:
    """Every string in a JSON document, keys too: searched one by one, so an id is found
    whatever JSON escaping the document's text form would give it."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _texts(v)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def _quarantine_ids(conn: Connection, mentions: Callable[[str], bool]) -> list[int]:
    """Quarantine rows whose payload, reference or reason names a subject. Read in Python: the
    payload's shape varies (a bad event, a raw line) and quarantine is small (raw retention)."""
    quarantine = schema.quarantine
    # yield_per on the statement, not the connection: that would stream every later statement
    # of the caller's transaction too (a server-side cursor cannot DELETE on PostgreSQL).
    result = conn.execute(
        sa.select(
            quarantine.c.id, quarantine.c.payload, quarantine.c.source_ref, quarantine.c.reason
        ).execution_options(yield_per=1_000)
    )
    return [
        row.id
        for row in result
        if any(mentions(text) for text in (row.source_ref, row.reason or "", *_texts(row.payload)))
    ]


def _user_action_fallout(
    conn: Connection, user_hashes: list[str], account_hashes: list[str]
) -> tuple[list[str], list[str], set[tuple[str, str]]]:
    """The erased users' actions on accounts that stay: (event hashes, resource hashes,
    (account_hash, month) of deletions): what the actions changed elsewhere."""
    actions = schema.user_action_patterns
    if not user_hashes:
        return [], [], set()
    rows = queries.frame(
        conn,
        sa.select(
            actions.c.event_hash,
            actions.c.resource_hash,
            actions.c.account_hash,
            actions.c.action_at,
        ).where(
            actions.c.user_hash.in_(user_hashes), actions.c.account_hash.not_in(account_hashes)
        ),
    )
    if rows.empty:
        return [], [], set()
    months = {
        (a, pd.Timestamp(t).strftime("%Y-%m"))
        for a, t in zip(rows["account_hash"], rows["action_at"], strict=True)
    }
    return list(rows["event_hash"]), list(rows["resource_hash"]), months


def erase(
    conn: Connection,
    key: bytes,
    *,
    user_id: str | None = None,
    account_id: str | None = None,
    provider: str = "aws",
    accounts: Sequence[Account] = (),
    reason: str | None = None,
    now: datetime,
) -> ErasureReport:
    """Erase a user and/or an account on ``conn`` (the caller's transaction: all or nothing).

    Idempotent: a second call removes nothing and adds no tombstone, so it is also how to sweep
    rows a scan run that overlapped the first call may have written.
    """
    subjects = subjects_for(
        key, user_id=user_id, account_id=account_id, provider=provider, accounts=accounts
    )
    users = sorted(s.hash for s in subjects if s.kind == "user")
    accts = sorted(s.hash for s in subjects if s.kind == "account")
    removed: dict[str, int] = {}

    def count(table: sa.Table, where: sa.ColumnElement[bool]) -> None:
        removed[table.fullname] = removed.get(table.fullname, 0) + _delete(conn, table, where)

    events, resources, months = _user_action_fallout(conn, users, accts)
    actions, lifecycle = schema.user_action_patterns, schema.resource_lifecycle_events
    count(schema.user_preferences, schema.user_preferences.c.user_hash.in_(users))
    count(actions, sa.or_(actions.c.user_hash.in_(users), actions.c.account_hash.in_(accts)))
    count(lifecycle, lifecycle.c.account_hash.in_(accts))
    for chunk in queries.in_chunks(events):
        count(lifecycle, lifecycle.c.source_event_hash.in_(chunk))
    for table in (
        schema.ml_training_data,
        schema.cloudwatch_metrics_history,
        schema.cost_trend_data,
        *schema.MODEL_TABLES,  # anomaly scores, forecasts
    ):
        count(table, table.c.account_hash.in_(accts))

    relabelled = 0
    ml = schema.ml_training_data
    for chunk in queries.in_chunks(resources):
        conn.execute(sa.update(ml).where(ml.c.resource_hash.in_(chunk)).values(user_action=None))
        relabelled += queries.apply_labels(conn, ml.c.resource_hash.in_(chunk))
    if months:
        queries.refresh_waste_eliminated(conn, months, now.replace(tzinfo=None))

    for table in (schema.raw_scans, schema.scan_errors, schema.resource_action_events):
        count(table, _raw_match(conn, table, subjects))
    mentions = _mentions(subjects)
    ids = _quarantine_ids(conn, mentions) if mentions else []
    removed[schema.quarantine.fullname] = sum(
        _delete(conn, schema.quarantine, schema.quarantine.c.id.in_(chunk))
        for chunk in _int_chunks(ids)
    )

    tombstones = pd.DataFrame(
        [
            {
                "kind": s.kind,
                "subject_hash": s.hash,
                "reason": (reason or "")[:200] or None,
                "requested_at": now.replace(tzinfo=None),
            }
            for s in subjects
        ]
    )
    added = insert_new(conn, schema.erasure_tombstones, tombstones, ["kind", "subject_hash"])
    return ErasureReport(
        subjects=[{"kind": s.kind, "hash": s.hash} for s in subjects],
        removed=removed,
        relabelled_rows=relabelled,
        tombstones_added=added,
    )


def _raw_match(
    conn: Connection, table: sa.Table, subjects: Sequence[Subject]
) -> sa.ColumnElement[bool]:
    """The rows of a raw table that name a subject: its account columns (and user column, when
    it has one) as stored by any writer, with any case or surrounding whitespace.

    The distinct stored values are read and put in canonical form in Python by ``canonical``,
    then the rows holding the matching stored values are selected by plain equality. So the match
    is hashing's own rule on both databases, not an SQL ``lower``/``trim`` whose idea of case and
    whitespace differs from Python's (SQLite lowers ASCII only; ``trim`` strips spaces only).
    Raw tables keep 30 days: a few distinct accounts and users to read.
    """
    matches: list[sa.ColumnElement[bool]] = []
    accounts = {(s.provider, s.raw_id) for s in subjects if s.kind == "account"}
    if accounts:
        stored = conn.execute(sa.select(table.c.provider, table.c.account_id).distinct()).all()
        matches += [
            sa.and_(table.c.provider == provider, table.c.account_id == account)
            for provider, account in stored
            if canonical("account", provider, account) in accounts
        ]
    users = {(s.provider, s.raw_id) for s in subjects if s.kind == "user"}
    if users and "user_id" in table.c:
        stored_users = conn.execute(sa.select(table.c.user_id).distinct()).scalars()
        named = [u for u in stored_users if canonical("user", OWN_PROVIDER, u) in users]
        matches += [table.c.user_id.in_(chunk) for chunk in queries.in_chunks(named)]
    return sa.or_(sa.false(), *matches)


def _stored_hash(kind: str, provider: Any, stored: Any, key: bytes) -> str | None:
    """The hash of a stored raw value, None where hashing refuses it (validation quarantines
    such an event later; deciding whether it names an erased subject must not raise)."""
    found = canonical(kind, provider, stored)
    return None if found is None else hash_id(kind, *found, key)


def _int_chunks(values: list[int], size: int = 5_000) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def drop_erased_events(conn: Connection, events: pd.DataFrame, key: bytes) -> pd.DataFrame:
    """Outbox events of erased users or accounts: deleted (they hold raw ids of a subject that
    must stay gone), neither stored nor quarantined. Returns the events that remain."""
    if events.empty:
        return events
    users, accts = erased_hashes(conn, "user"), erased_hashes(conn, "account")
    if not users and not accts:
        return events
    erased = [
        _stored_hash("user", OWN_PROVIDER, u, key) in users
        or _stored_hash("account", p, a, key) in accts
        for u, p, a in zip(events["user_id"], events["provider"], events["account_id"], strict=True)
    ]
    mask = pd.Series(erased, index=events.index)
    outbox = schema.resource_action_events
    for chunk in _int_chunks([int(s) for s in events.loc[mask, "seq"]]):
        conn.execute(sa.delete(outbox).where(outbox.c.seq.in_(chunk)))
    return events[~mask].reset_index(drop=True)
