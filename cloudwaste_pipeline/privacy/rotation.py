"""Rotation of the anonymization key without raw ids: every stored hash ``h`` becomes
``HMAC(new key, h)`` (see ``keyring`` for the chain that new hashes then go through).

Raw ids live 30 days and hashes are one-way, so re-hashing from the ids is impossible; re-keying
the hashes themselves is not. The raw store holds no hash and is untouched.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from cloudwaste_pipeline.errors import CloudWasteError
from cloudwaste_pipeline.faults import crash_point
from cloudwaste_pipeline.privacy.anonymize import KEY_ENV_VAR
from cloudwaste_pipeline.privacy.keyring import (
    KEY_LOCK,
    METHOD_REKEY,
    PREVIOUS_KEYS_ENV_VAR,
    check_or_record,
    fingerprint,
    history,
    secret_from_text,
    unguarded_connection,
)
from cloudwaste_pipeline.warehouse import schema


@dataclass
class RotationReport:
    """What a rotation did: hashes and counts only, never a key."""

    epoch: int
    fingerprint: str
    method: str = METHOD_REKEY
    rows_rewritten: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "fingerprint": self.fingerprint,
            "method": self.method,
            "rows_rewritten": self.rows_rewritten,
            "next_step": (
                f"set {KEY_ENV_VAR} to the new key and append the old one to "
                f"{PREVIOUS_KEYS_ENV_VAR} (oldest first) everywhere the pipeline runs"
            ),
        }


def hash_columns() -> list[tuple[sa.Table, list[sa.Column[Any]]]]:
    """Every anonymized-id column of the warehouse (the ``_hash`` columns of the ML, model
    output, tombstone and preference tables); the raw store holds no hash."""
    found = []
    for table in schema.metadata.sorted_tables:
        columns = [c for c in table.columns if c.name.endswith("_hash")]
        if table.schema is None and columns:
            found.append((table, columns))
    return found


def rekey_hash(old_hash: str, new_key: bytes) -> str:
    """One chain step: the re-keyed value of a stored hash (see ``anonymize.digest``)."""
    return hmac.new(bytes(new_key), old_hash.encode("ascii"), hashlib.sha256).hexdigest()


_MAP = sa.Table(
    "cloudwaste_rekey_map",
    sa.MetaData(),
    sa.Column("old_hash", sa.String(64), primary_key=True),
    sa.Column("new_hash", sa.String(64), nullable=False),
    prefixes=["TEMPORARY"],
)
_BATCH = 5_000


def _lock_exclusively(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": KEY_LOCK})
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _map_new_values(conn: Connection, column: sa.Column[Any], new_key: bytes) -> None:
    """Add the column's values not mapped yet to the old -> new map (computed here: HMAC is not
    available in SQL on either database without extensions)."""
    known = sa.select(_MAP.c.old_hash)
    query = sa.select(column).where(column.is_not(None), column.not_in(known)).distinct()
    values = conn.execute(query).scalars().all()  # read whole before the map changes under it
    for start in range(0, len(values), _BATCH):
        batch = values[start : start + _BATCH]
        rows = [{"old_hash": h, "new_hash": rekey_hash(h, new_key)} for h in batch]
        conn.execute(_MAP.insert(), rows)


def _rewrite(conn: Connection, new_key: bytes) -> dict[str, int]:
    _MAP.create(conn)
    counts = {}
    for table, columns in hash_columns():
        rewritten = 0
        for column in columns:
            _map_new_values(conn, column, new_key)
            update = (
                table.update()
                .values({column.name: _MAP.c.new_hash})
                .where(column == _MAP.c.old_hash)
            )
            rewritten = max(rewritten, conn.execute(update).rowcount)
        counts[table.name] = rewritten
    _MAP.drop(conn)
    return counts


def rotate(engine: Engine, old_key: bytes, new_key: bytes, now: datetime) -> RotationReport:
    """Re-key every stored hash as ``HMAC(new_key, hash)`` and record the new epoch, in one
    transaction under the key lock.

    One transaction rather than resumable batches: the warehouse is in the old space or in the
    new one, never between, and a failure (or a kill) leaves it as it was, so no "rotating" state
    has to be recorded, honoured by every writer and cleaned up. Writers wait for the lock (or
    fail on SQLite's busy timeout) and then refuse to commit under the old key.
    ``old_key`` is the full current chain; it must match the recorded history exactly.
    """
    new_fp = fingerprint(new_key)
    now = now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now
    with unguarded_connection(engine) as conn, conn.begin():
        _lock_exclusively(conn)
        current = check_or_record(conn, old_key)
        used = {e.fingerprint: e.epoch for e in history(conn)}
        if new_fp in used:
            raise CloudWasteError(
                f"the new key is the key of epoch {used[new_fp]} of this warehouse: a rotation "
                "needs a key never used before. Nothing was changed."
            )
        counts = _rewrite(conn, new_key)
        crash_point("keyring.rotate.rewritten")
        epoch = current.epoch + 1
        conn.execute(
            schema.anonymization_keys.insert().values(
                epoch=epoch, fingerprint=new_fp, method=METHOD_REKEY, created_at=now
            )
        )
    return RotationReport(epoch=epoch, fingerprint=new_fp, rows_rewritten=counts)


def new_key_from_text(value: str) -> bytes:
    """A new key as typed or read from a file, held to the same rules as the current key."""
    return secret_from_text(value, "the new key")
