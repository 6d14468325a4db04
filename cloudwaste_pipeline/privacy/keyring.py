"""The warehouse knows its anonymization key: a fingerprint per key epoch, checked before writing.

Every hash in the warehouse is keyed. A process hashing with another key than the one the rows
were written with would add a second hash space beside the first (one account, two account
hashes) that no check can tell apart afterwards. So the warehouse records a *fingerprint* of its
key (``schema.anonymization_keys``, one row per epoch) and every writer compares its own key chain
against that history before it writes anything (``ensure_key``); a mismatch raises
``KeyMismatchError`` and nothing is written.

Epoch 1 is recorded by the first process that hashes against the warehouse. A warehouse upgraded
from before migration 0005 already holds rows but no history: its first writer's key is recorded
as epoch 1 unchecked (there is nothing to check it against), so run the first job after the
upgrade with the key the warehouse was written with.

Rotation (``rotate``) needs no raw id: every stored hash ``h`` becomes ``HMAC(new key, h)`` in one
transaction, and the new key's epoch is recorded in the same transaction. Afterwards a process
hashes through the chain of every key (``KeyChain``: the current key in
``CLOUDWASTE_ANONYMIZATION_KEY``, the older ones, oldest first, in
``CLOUDWASTE_ANONYMIZATION_PREVIOUS_KEYS``), which lands exactly on the re-keyed values. A leaked
old key alone no longer re-identifies anything: every stored hash also depends on the new key.

Mixing is impossible even while a rotation runs: once a process has checked its key, every
transaction it commits on that engine re-reads the current epoch inside the transaction and
refuses to commit if it changed (on PostgreSQL under a shared advisory lock the rotation takes
exclusively, on SQLite under the database's write lock the rotation holds), so a run that started
before a rotation fails instead of writing old-space hashes after it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.errors import CloudWasteError
from cloudwaste_pipeline.privacy.anonymize import (
    KEY_ENV_VAR,
    MIN_KEY_BYTES,
    KeyChain,
    key_sequence,
    load_key,
)
from cloudwaste_pipeline.warehouse import schema

PREVIOUS_KEYS_ENV_VAR = "CLOUDWASTE_ANONYMIZATION_PREVIOUS_KEYS"
"""The keys the warehouse was re-keyed from, oldest first, comma-separated (empty until the
first rotation)."""

FINGERPRINT_MESSAGE = b"cloudwaste key fingerprint v1"
KEY_LOCK = 7_300_418
"""``pg_advisory_xact_lock`` key: writers hold it shared, a rotation exclusively."""

METHOD_INITIAL = "initial"
METHOD_REKEY = "rekey-hmac-of-hash"
_UNGUARDED = "cloudwaste_key_unguarded"  # execution option of the keyring's own connections
_SHOWN = 12  # fingerprint characters an error message shows
_CHANGES = "cloudwaste_key_changes"  # SQLite: the connection's total_changes when it began


class KeyMismatchError(CloudWasteError):
    """The key (chain) given is not the one the warehouse's hashes were written with."""


def fingerprint(key: bytes) -> str:
    """``HMAC(key, constant)`` hex: identifies a key without revealing anything about it."""
    return hmac.new(bytes(key), FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()


def _secret(value: str, name: str) -> bytes:
    secret = value.strip().encode("utf-8")
    if len(secret) < MIN_KEY_BYTES:
        raise CloudWasteError(
            f"{name} holds a key of {len(secret)} bytes; at least {MIN_KEY_BYTES} are needed"
        )
    return secret


def load_keychain(env: Mapping[str, str] | None = None) -> KeyChain:
    """The key chain from ``env`` (default ``os.environ``): the one place previous keys are read.

    ``CLOUDWASTE_ANONYMIZATION_KEY`` is the current key; ``CLOUDWASTE_ANONYMIZATION_PREVIOUS_KEYS``
    the keys of the earlier epochs, oldest first, separated by commas.
    """
    source = os.environ if env is None else env
    current = load_key(source)
    listed = [p for p in (source.get(PREVIOUS_KEYS_ENV_VAR) or "").split(",") if p.strip()]
    return KeyChain(current, [_secret(p, PREVIOUS_KEYS_ENV_VAR) for p in listed])


@dataclass(frozen=True)
class Epoch:
    epoch: int
    fingerprint: str
    method: str
    created_at: datetime


def history(conn: Connection) -> list[Epoch]:
    """The warehouse's key epochs, oldest first (the table holds one row per rotation)."""
    table = schema.anonymization_keys
    rows = conn.execute(sa.select(table).order_by(table.c.epoch)).all()
    return [Epoch(r.epoch, r.fingerprint, r.method, r.created_at) for r in rows]


def _short(fp: str) -> str:
    return fp[:_SHOWN] + "…"


def check_chain(recorded: list[Epoch], key: bytes) -> None:
    """Raise ``KeyMismatchError`` unless ``key``'s chain is exactly the recorded history."""
    given = [fingerprint(k) for k in key_sequence(key)]
    expected = [e.fingerprint for e in recorded]
    if given == expected:
        return
    current = recorded[-1]
    restore = (
        f"Nothing was written. Set {KEY_ENV_VAR} to the warehouse's current key and "
        f"{PREVIOUS_KEYS_ENV_VAR} to the keys of its earlier epochs, oldest first; to change "
        "the key, rotate it with `cloudwaste rotate-key`."
    )
    if given[-1] != current.fingerprint:
        if given[-1] in expected:
            which = f"the key of epoch {expected.index(given[-1]) + 1}, replaced since"
        else:
            which = f"a key this warehouse was never written with ({_short(given[-1])})"
        raise KeyMismatchError(
            f"{KEY_ENV_VAR} is {which}: the warehouse is at key epoch {current.epoch} "
            f"(fingerprint {_short(current.fingerprint)}). {restore}"
        )
    raise KeyMismatchError(
        f"{KEY_ENV_VAR} is the warehouse's current key (epoch {current.epoch}) but "
        f"{PREVIOUS_KEYS_ENV_VAR} lists {len(given) - 1} key(s) that are not the "
        f"{len(expected) - 1} key(s) of its earlier epochs (fingerprints "
        f"{', '.join(_short(f) for f in expected[:-1]) or 'none'}). {restore}"
    )


def _insert_if_absent(conn: Connection, row: dict[str, Any]) -> None:
    """Insert ``row`` unless its epoch exists: two first writers racing both end up checking
    against whichever row won, instead of one failing on the primary key."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(schema.anonymization_keys).values(**row)
    conn.execute(insert.on_conflict_do_nothing())


def _check_or_record(conn: Connection, key: bytes) -> Epoch:
    recorded = history(conn)
    if not recorded:
        if getattr(key, "previous", ()):
            raise KeyMismatchError(
                f"the warehouse has no key history yet, but {PREVIOUS_KEYS_ENV_VAR} is set: a new "
                f"warehouse starts at epoch 1 with {KEY_ENV_VAR} alone. Nothing was written."
            )
        now = settings.now().replace(tzinfo=None)
        _insert_if_absent(
            conn,
            {
                "epoch": 1,
                "fingerprint": fingerprint(key),
                "method": METHOD_INITIAL,
                "created_at": now,
            },
        )
        recorded = history(conn)
    check_chain(recorded, key)
    return recorded[-1]


def ensure_key(bind: Engine | Connection, key: bytes) -> Epoch:
    """Check ``key``'s chain against the warehouse (recording epoch 1 on first use); raise
    ``KeyMismatchError`` before anything is written. Returns the current epoch.

    On an engine, it also arms the commit guard (see the module docstring) for this engine.
    """
    if isinstance(bind, Connection):
        return _check_or_record(bind, key)
    with _unguarded(bind) as conn, conn.begin():
        current = _check_or_record(conn, key)
    _arm_guard(bind, current)
    return current


def checked_key(bind: Engine, env: Mapping[str, str] | None = None) -> KeyChain:
    """The key chain from the environment, checked against the warehouse: what hashing code
    asks for (one small SELECT)."""
    key = load_keychain(env)
    ensure_key(bind, key)
    return key


def current_epoch(bind: Engine | Connection) -> Epoch | None:
    """The warehouse's current key epoch, None before the first write (for export manifests)."""
    if isinstance(bind, Connection):
        recorded = history(bind)
    else:
        with bind.connect() as conn:
            recorded = history(conn)
    return recorded[-1] if recorded else None


def manifest_entry(bind: Engine | Connection) -> dict[str, Any] | None:
    """The key epoch an export's manifest records (None before the first write)."""
    current = current_epoch(bind)
    return None if current is None else {"epoch": current.epoch, "fingerprint": current.fingerprint}


def same_epoch(bind: Engine | Connection, before: dict[str, Any] | None) -> dict[str, Any] | None:
    """``before`` if the key epoch is unchanged since, else ``KeyMismatchError``: an export that
    read some tables before a rotation and some after would mix two hash spaces in one dataset."""
    now = manifest_entry(bind)
    if before is not None and now != before:
        raise KeyMismatchError(
            "the warehouse was re-keyed while this export read it: nothing was published; "
            "run the export again"
        )
    return now


# ---- the commit guard ----------------------------------------------------------------------

_verified: weakref.WeakKeyDictionary[Engine, tuple[int, str]] = weakref.WeakKeyDictionary()


def _unguarded(engine: Engine) -> Connection:
    return engine.connect().execution_options(**{_UNGUARDED: True})


def _guarded(conn: Connection) -> bool:
    return conn.engine in _verified and not conn.get_execution_options().get(_UNGUARDED)


def _on_begin(conn: Connection) -> None:
    """Note where the transaction starts; on PostgreSQL also hold the key lock shared for the
    transaction, so a rotation waits for it (and it for a rotation)."""
    if not _guarded(conn):
        return
    dbapi = conn.connection.dbapi_connection
    if conn.dialect.name == "postgresql":
        _query(dbapi, "SELECT pg_advisory_xact_lock_shared(%s)", (KEY_LOCK,))
    else:
        conn.info[_CHANGES] = dbapi.total_changes  # type: ignore[union-attr]


def _wrote(conn: Connection) -> bool:
    """Did this transaction write? Reads (an export, a migration at head) stay allowed."""
    dbapi = conn.connection.dbapi_connection
    if conn.dialect.name == "postgresql":
        return _query(dbapi, "SELECT txid_current_if_assigned() IS NOT NULL")[0]
    return dbapi.total_changes != conn.info.get(_CHANGES)  # type: ignore[union-attr]


def _on_commit(conn: Connection) -> None:
    """Refuse to commit a write if the warehouse's key epoch changed since this process checked
    its key: the rows it hashed would be in the old space."""
    if not _guarded(conn) or not _wrote(conn):
        return
    expected = _verified.get(conn.engine)
    row = _query(
        conn.connection.dbapi_connection,
        "SELECT epoch, fingerprint FROM anonymization_keys ORDER BY epoch DESC LIMIT 1",
    )
    if row is not None and tuple(row) != expected:
        raise KeyMismatchError(
            f"the warehouse was re-keyed (now key epoch {row[0]}) while this process was running "
            f"with the key of epoch {expected[0] if expected else '?'}: this transaction was not "
            f"committed. Restart it with the new {KEY_ENV_VAR} and {PREVIOUS_KEYS_ENV_VAR}."
        )


def _query(dbapi: Any, sql: str, params: tuple[Any, ...] = ()) -> Any:
    """One row, on the DBAPI connection itself: SQLAlchemy is mid-begin or mid-commit here."""
    cursor = dbapi.cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetchone()
    finally:
        cursor.close()


def _arm_guard(engine: Engine, current: Epoch) -> None:
    if engine not in _verified:
        sa.event.listen(engine, "begin", _on_begin)
        sa.event.listen(engine, "commit", _on_commit)
    _verified[engine] = (current.epoch, current.fingerprint)


# ---- rotation ------------------------------------------------------------------------------


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
        rows = [
            {"old_hash": h, "new_hash": rekey_hash(h, new_key)} for h in values[start:][:_BATCH]
        ]
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
    with _unguarded(engine) as conn, conn.begin():
        _lock_exclusively(conn)
        current = _check_or_record(conn, old_key)
        used = {e.fingerprint: e.epoch for e in history(conn)}
        if new_fp in used:
            raise CloudWasteError(
                f"the new key is the key of epoch {used[new_fp]} of this warehouse: a rotation "
                "needs a key never used before. Nothing was changed."
            )
        counts = _rewrite(conn, new_key)
        epoch = current.epoch + 1
        conn.execute(
            schema.anonymization_keys.insert().values(
                epoch=epoch, fingerprint=new_fp, method=METHOD_REKEY, created_at=now
            )
        )
    return RotationReport(epoch=epoch, fingerprint=new_fp, rows_rewritten=counts)


def new_key_from_text(value: str) -> bytes:
    """A new key as typed or read from a file, held to the same rules as the current key."""
    return _secret(value, "the new key")
