"""The warehouse knows its anonymization key: a fingerprint per key epoch, checked before writing.

Every hash in the warehouse is keyed. A process hashing with another key than the one the rows
were written with would add a second hash space beside the first (one account, two account
hashes) that no check can tell apart afterwards. So the warehouse records a *fingerprint* of its
key (``schema.anonymization_keys``, one row per epoch) and every writer compares its own key chain
against that history before it writes anything (``ensure_key``); a mismatch raises
``KeyMismatchError`` and nothing is written.

Epoch 1 is recorded by the first process that hashes against the warehouse (two racing first
writers insert-if-absent, and the loser is checked against the winner). A warehouse upgraded from
before migration 0005 holds rows but no history: its first writer's key is checked against the
raw store where it can be (the hashes of a day's raw accounts must be among that day's ML rows);
when the raw store has nothing to compare with (older than raw retention), the first writer's key
is recorded unchecked, so run the first job after the upgrade with the warehouse's key.

Rotation (``rotation.rotate``) needs no raw id: every stored hash ``h`` becomes
``HMAC(new key, h)`` in one transaction, and the new key's epoch is recorded in the same
transaction. Afterwards a process hashes through the chain of every key (``KeyChain``: the current
key in ``CLOUDWASTE_ANONYMIZATION_KEY``, the older ones, oldest first, in
``CLOUDWASTE_ANONYMIZATION_PREVIOUS_KEYS``), which lands exactly on the re-keyed values. A leaked
old key alone no longer re-identifies anything: every stored hash also depends on the new key.

Mixing is impossible even while a rotation runs: once a process has checked its key, every
transaction that writes on that engine re-reads the current epoch inside the transaction and
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
from dataclasses import dataclass
from datetime import datetime
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
    hash_id,
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


def secret_from_text(value: str, name: str) -> bytes:
    """A key as typed (stripped, as ``load_key`` strips), held to the same minimum length; the
    error names where it came from, never the key."""
    secret = value.strip().encode("utf-8")
    if len(secret) < MIN_KEY_BYTES:
        raise CloudWasteError(
            f"{name} holds a key of {len(secret)} bytes; at least {MIN_KEY_BYTES} are needed"
        )
    return secret


def load_keychain(env: Mapping[str, str] | None = None) -> KeyChain:
    """The key chain from ``env`` (default ``os.environ``): the one place previous keys are read.

    ``CLOUDWASTE_ANONYMIZATION_KEY`` is the current key; ``CLOUDWASTE_ANONYMIZATION_PREVIOUS_KEYS``
    the keys of the earlier epochs, oldest first, separated by commas (so a key holds no comma:
    the hex keys the README suggests never do).
    """
    source = os.environ if env is None else env
    current = load_key(source)
    listed = [p for p in (source.get(PREVIOUS_KEYS_ENV_VAR) or "").split(",") if p.strip()]
    return KeyChain(current, [secret_from_text(p, PREVIOUS_KEYS_ENV_VAR) for p in listed])


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


def _check_unrecorded_rows(conn: Connection, key: bytes) -> None:
    """A warehouse written before its key was recorded (upgraded from before migration 0005):
    check the first writer's key where the raw store allows it. The newest day holding both raw
    scans and ML rows must have ML rows under the hash of one of that day's raw accounts."""
    raw, ml = schema.raw_scans, schema.ml_training_data
    derived = sa.select(ml.c.id).where(ml.c.scan_date == raw.c.scan_date).exists()
    day = conn.execute(sa.select(sa.func.max(raw.c.scan_date)).where(derived)).scalar()
    if day is None:
        return  # nothing to compare with: the key is recorded unchecked (see the docstring)
    accounts = conn.execute(
        sa.select(raw.c.provider, raw.c.account_id).where(raw.c.scan_date == day)
    ).all()
    hashes = [hash_id("account", p, a, key) for p, a in accounts]
    match = sa.select(ml.c.id).where(ml.c.scan_date == day, ml.c.account_hash.in_(hashes))
    if conn.execute(match.limit(1)).first() is None:
        raise KeyMismatchError(
            f"{KEY_ENV_VAR} is not the key this warehouse's rows were written with (their "
            f"hashes of {day} match none of that day's raw scans under it), and the warehouse has "
            f"no recorded key yet. Nothing was written. Set {KEY_ENV_VAR} to the key the "
            "warehouse was written with; it is then recorded as key epoch 1."
        )


def check_or_record(conn: Connection, key: bytes) -> Epoch:
    recorded = history(conn)
    if not recorded:
        if getattr(key, "previous", ()):
            raise KeyMismatchError(
                f"the warehouse has no key history yet, but {PREVIOUS_KEYS_ENV_VAR} is set: a new "
                f"warehouse starts at epoch 1 with {KEY_ENV_VAR} alone. Nothing was written."
            )
        _check_unrecorded_rows(conn, key)
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
        return check_or_record(bind, key)
    with unguarded_connection(bind) as conn, conn.begin():
        current = check_or_record(conn, key)
    _arm_guard(bind, current)
    return current


def chain_at(key: bytes, epoch: int) -> KeyChain:
    """``key``'s chain as it was at ``epoch`` (1 = the first key alone): the hash space of an
    export whose manifest records that epoch, e.g. to find an erased subject in it."""
    keys = key_sequence(key)
    if not 1 <= epoch <= len(keys):
        raise ValueError(f"key epoch {epoch} is not in this chain of {len(keys)} key(s)")
    return KeyChain(keys[epoch - 1], keys[: epoch - 1])


def earlier_chains(key: bytes) -> list[KeyChain]:
    """The hash spaces of the epochs before ``key``'s (oldest first; none without a rotation)."""
    return [chain_at(key, epoch) for epoch in range(1, len(key_sequence(key)))]


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


def unguarded_connection(engine: Engine) -> Connection:
    """A connection the commit guard leaves alone: the keyring's own (recording, rotating)."""
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
