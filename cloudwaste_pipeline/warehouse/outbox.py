"""The user-action outbox's processing state: which events are due, claimed, held, done.

Every outbox row ends *processed* (``processed_at`` set: stored, quarantined, or found done
before) or *held* (``next_attempt_at`` in the future: its resource has not been scanned yet), or
is deleted (an erased subject). An unprocessed row whose ``next_attempt_at`` has passed is *due*,
whatever its sequence number: the sensor launches while due rows exist, so a row committed late
(after a higher sequence number was seen) or left by a failed run is never forgotten.

Before processing, a run *claims* its rows in a transaction of its own: ``attempts + 1`` and
``next_attempt_at`` cleared. A run that finishes sets one of ``processed_at`` / ``next_attempt_at``
on every row it claimed, so a row found with attempts but neither set was claimed by a run that
did not finish. Claimed that way ``ISOLATE_AFTER`` times or more, it is a *suspect*: processed
alone, so that a poison event cannot take others down with it again; ``GIVE_UP_AFTER`` times
or more (it kills the run even alone), it is quarantined unprocessed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline.warehouse.load import insert_new, read_frame

OUTBOX = schema.resource_action_events
QUARANTINE_SOURCE = "user_action"
HOLD_BACKOFF_FIRST = timedelta(hours=1)
HOLD_BACKOFF_MAX = timedelta(hours=24)
ISOLATE_AFTER = 2
GIVE_UP_AFTER = 8
CHUNK = 5_000  # bound parameters per IN (...): SQLite refuses more than 32,766


def naive(now: datetime) -> datetime:
    """The outbox's timestamps are naive UTC."""
    return now.replace(tzinfo=None)


def due(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        OUTBOX.c.processed_at.is_(None),
        sa.or_(OUTBOX.c.next_attempt_at.is_(None), OUTBOX.c.next_attempt_at <= naive(now)),
    )


def due_count(conn: Connection, now: datetime) -> int:
    return int(conn.execute(sa.select(sa.func.count()).where(due(now))).scalar() or 0)


def next_hold_end(conn: Connection) -> datetime | None:
    """When the first held event is due again (None: nothing held)."""
    return conn.execute(
        sa.select(sa.func.min(OUTBOX.c.next_attempt_at)).where(OUTBOX.c.processed_at.is_(None))
    ).scalar()


def hold_backoff(attempts: int) -> timedelta:
    """How long a held event waits after its ``attempts``-th try: 1 h, doubling, at most a day
    (its scan is usually a day late at most; later tries only wait for the hold to expire)."""
    return min(HOLD_BACKOFF_FIRST * 2 ** min(max(attempts - 1, 0), 10), HOLD_BACKOFF_MAX)


def quarantine_ref(seq: int) -> str:
    """Quarantine rows of outbox events are keyed by their outbox row, not by event id: two
    rows carrying one event id are two rows to account for."""
    return f"outbox:{int(seq)}"


def _chunks(values: Sequence[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(values), CHUNK):
        yield list(values[start : start + CHUNK])


@dataclass(frozen=True)
class Claim:
    seqs: list[int]
    suspects: set[int]  # to process alone: claimed before by runs that did not finish them
    stuck: set[int]  # to quarantine: runs died on them too often, even alone


def claim(conn: Connection, now: datetime, min_seq: int, max_seq: int | None, limit: int) -> Claim:
    """Take up to ``limit`` due rows (oldest first) for one run. Commit it on its own, before
    processing: the attempt then counts even if the run dies."""
    query = (
        sa.select(OUTBOX.c.seq, OUTBOX.c.attempts, OUTBOX.c.next_attempt_at)
        .where(due(now), OUTBOX.c.seq >= min_seq)
        .order_by(OUTBOX.c.seq)
        .limit(limit)
    )
    if max_seq is not None:
        query = query.where(OUTBOX.c.seq <= max_seq)
    rows = conn.execute(query).all()
    seqs = [int(r.seq) for r in rows]
    unfinished = {int(r.seq): r.attempts or 0 for r in rows if r.next_attempt_at is None}
    suspects = {seq for seq, tries in unfinished.items() if tries >= ISOLATE_AFTER}
    stuck = {seq for seq, tries in unfinished.items() if tries >= GIVE_UP_AFTER}
    for chunk in _chunks(seqs):
        conn.execute(
            sa.update(OUTBOX)
            .where(OUTBOX.c.seq.in_(chunk))
            .values(attempts=OUTBOX.c.attempts + 1, next_attempt_at=None)
        )
    return Claim(seqs, suspects - stuck, stuck)


def read_events(conn: Connection, seqs: Sequence[int]) -> tuple[pd.DataFrame, list[dict]]:
    """The claimed rows as a frame, and those that cannot even be read (SQLite keeps whatever
    another writer put in a typed column) as their columns' text, to be quarantined."""
    columns = [c for c in OUTBOX.c if c.name not in ("processed_at", "next_attempt_at")]
    frames, unreadable = [], []
    for chunk in _chunks(list(seqs)):
        try:
            frames.append(read_frame(conn, sa.select(*columns).where(OUTBOX.c.seq.in_(chunk))))
            continue
        except (ValueError, TypeError, OverflowError):
            pass
        for seq in chunk:
            one = sa.select(*columns).where(OUTBOX.c.seq == seq)
            try:
                frames.append(read_frame(conn, one))
            except (ValueError, TypeError, OverflowError) as exc:
                text = sa.select(*(sa.type_coerce(c, sa.String).label(c.name) for c in columns))
                row = conn.execute(text.where(OUTBOX.c.seq == seq)).mappings().one()
                unreadable.append({**row, "seq": seq, "_error": type(exc).__name__})
    frames = [f for f in frames if not f.empty]
    frame = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=[c.name for c in columns])
    )
    return frame.sort_values("seq").reset_index(drop=True), unreadable


def mark_processed(conn: Connection, seqs: Iterable[int], now: datetime) -> int:
    done = sorted({int(s) for s in seqs})
    for chunk in _chunks(done):
        conn.execute(
            sa.update(OUTBOX)
            .where(OUTBOX.c.seq.in_(chunk))
            .values(processed_at=naive(now), next_attempt_at=None)
        )
    return len(done)


def hold(conn: Connection, held: pd.DataFrame, now: datetime, hold_hours: float) -> None:
    """Held events wait with a growing back-off, never past their hold's expiry (when the next
    try quarantines them)."""
    if held.empty:
        return
    waits = []
    for seq, attempts, received in zip(
        held["seq"], held["attempts"], held["received_at"], strict=True
    ):
        expiry = pd.Timestamp(received).to_pydatetime() + timedelta(hours=hold_hours)
        wait_until = min(naive(now) + hold_backoff(int(attempts)), expiry)
        waits.append({"held_seq": int(seq), "wait_until": max(wait_until, naive(now))})
    statement = (
        sa.update(OUTBOX)
        .where(OUTBOX.c.seq == sa.bindparam("held_seq"))
        .values(next_attempt_at=sa.bindparam("wait_until"))
    )
    conn.execute(statement, waits)  # one executemany, not a statement per event


def quarantine(conn: Connection, bad: list[tuple[dict, str]], now: datetime) -> int:
    """Bad events are kept with their reason in the raw store, never dropped and never fatal."""
    if not bad:
        return 0
    frame = pd.DataFrame(
        [
            {
                "source": QUARANTINE_SOURCE,
                "source_ref": quarantine_ref(event["seq"]),
                "payload": json.loads(json.dumps(event, default=str)),
                "reason": reason[: schema.quarantine.c.reason.type.length],
                "quarantined_at": naive(now),
            }
            for event, reason in bad
        ]
    )
    return insert_new(conn, schema.quarantine, frame, ["source", "source_ref"])


def already_quarantined(conn: Connection, events: pd.DataFrame) -> set[int]:
    """Rows with a quarantine row: by outbox row, or (rows from before the outbox kept its
    state) by event id, quarantined after the row arrived (not an earlier namesake's)."""
    if events.empty:
        return set()
    q = schema.quarantine
    refs = {quarantine_ref(s): int(s) for s in events["seq"]}
    received = {
        str(e): (int(s), r)
        for e, s, r in zip(events["event_id"], events["seq"], events["received_at"], strict=True)
    }
    found: set[int] = set()
    for chunk in _chunks(sorted(refs) + sorted(received)):
        rows = conn.execute(
            sa.select(q.c.source_ref, q.c.quarantined_at).where(
                q.c.source == QUARANTINE_SOURCE, q.c.source_ref.in_(chunk)
            )
        )
        for ref, when in rows:
            if ref in refs:
                found.add(refs[ref])
            elif ref in received:
                seq, arrived = received[ref]
                if pd.isna(arrived) or when is None or pd.Timestamp(when) >= pd.Timestamp(arrived):
                    found.add(seq)
    return found


def stored_actions(conn: Connection, event_hashes: Sequence[str]) -> pd.DataFrame:
    """The stored ``user_action_patterns`` rows of these event hashes (what they say, hashed)."""
    patterns = schema.user_action_patterns
    columns = (
        patterns.c.event_hash,
        patterns.c.user_hash,
        patterns.c.resource_hash,
        patterns.c.action_taken,
    )
    frames = [
        read_frame(conn, sa.select(*columns).where(patterns.c.event_hash.in_(chunk)))
        for chunk in _chunks(sorted(set(event_hashes)))
    ]
    frames = [f for f in frames if not f.empty]
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=[c.name for c in columns])
    )
