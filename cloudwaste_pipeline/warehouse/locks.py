"""One writer per slice of data, and a database failure said in one sentence.

A slice (a day of one account in a derived table, an account's month of cost trends, a day's
raw scan) is rewritten by delete-then-insert or read-then-write in one transaction. Under
PostgreSQL's READ COMMITTED two overlapping writers of a slice both delete what is committed
(nothing of each other's) and both insert: duplicates, or a unique-key failure. Dagster's run
queue limits runs per account only for runs that go through it (``dagster asset materialize``,
``execute_in_process``, the API or a second deployment do not), so the warehouse serializes its
writers itself:

- PostgreSQL: ``pg_advisory_xact_lock`` on a 64-bit key hashed from *what is written* (the
  table and the rows' predicate and values, or a name and its parts), never from Dagster
  partition keys, so it holds whatever the partitioning becomes. Transaction-scoped: released
  by commit, rollback or a dead connection, never leaked.
- SQLite: one writer per database anyway; the write lock is taken up front (``BEGIN
  IMMEDIATE``, waiting ``busy_timeout``), so the reads that feed a write see what the previous
  writer committed.

The lock is taken per slice, never per row: a million-row load pays one statement.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from cloudwaste_pipeline.errors import CloudWasteError


class WarehouseError(CloudWasteError):
    """The database failed (went away, timed out, refused a row) while a run read or wrote.

    A write's transaction is rolled back, so its slice keeps its previous rows and re-running it
    is safe. The message holds no SQL parameters (they may be raw ids) and no chained cause.
    """


def slice_key(what: str, *parts: object) -> int:
    """A stable signed 64-bit key for ``what`` and its parts (``pg_advisory_xact_lock(bigint)``).

    SHA-256 of their ``repr``, so the key is the same in every process and Python version
    (``hash()`` of a string is salted per process).
    """
    text = repr((what, *parts)).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big", signed=True)


def lock_slice(conn: Connection, what: str, *parts: object, shared: bool = False) -> None:
    """Wait until no other transaction writes this slice, and hold it until this one ends.

    Call it first in the transaction that reads and rewrites the slice (taking it again is
    harmless). ``shared``: many holders at once, none beside an exclusive one (PostgreSQL only;
    SQLite has one writer). On SQLite a transaction that already wrote holds the write lock.
    """
    if conn.dialect.name == "postgresql":
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        conn.execute(sa.text(f"SELECT {function}(:key)"), {"key": slice_key(what, *parts)})
    elif conn.dialect.name == "sqlite":
        dbapi = conn.connection.dbapi_connection
        if dbapi is not None and not dbapi.in_transaction:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def rows_slice(conn: Connection, table: sa.Table, where: sa.ColumnElement[bool]) -> tuple:
    """The slice ``where`` selects in ``table``, as lockable parts: the predicate and its values.

    Two writers that build the same predicate with the same values take the same lock.
    """
    compiled = where.compile(dialect=conn.dialect)
    values = sorted((name, repr(value)) for name, value in compiled.params.items())
    return (table.fullname, str(compiled), tuple(values))


def lock_rows(conn: Connection, table: sa.Table, where: sa.ColumnElement[bool]) -> None:
    """``lock_slice`` for the rows ``where`` selects: what ``load.replace_rows`` takes."""
    lock_slice(conn, "rows", *rows_slice(conn, table, where))


def failure_reason(exc: sa.exc.DBAPIError) -> str:
    """The driver's first line (no SQL, no parameters, no DETAIL line quoting a key), scrubbed."""
    from cloudwaste_pipeline.privacy.anonymize import scrub_text

    original = exc.orig if exc.orig is not None else exc
    lines = str(original).strip().splitlines()
    first = scrub_text(lines[0].strip()) if lines else ""
    return f"{type(original).__name__}: {first}" if first else type(original).__name__


@contextmanager
def _in_one_sentence(doing: str, outcome: str) -> Iterator[None]:
    """A database failure inside as one ``WarehouseError`` sentence, its cause dropped.

    SQLAlchemy's own message quotes the statement and its parameters (raw account ids in the
    raw store), and Dagster stores a failure's message and its chained causes, so the cause is
    dropped (``from None``) and only the driver's first line is kept.
    """
    try:
        yield
    except sa.exc.DBAPIError as exc:
        raise WarehouseError(
            f"the warehouse failed while {doing} ({failure_reason(exc)}); {outcome}"
        ) from None


@contextmanager
def writing(engine: Engine, what: str) -> Iterator[Connection]:
    """A transaction writing ``what`` (words without raw ids, e.g. "ml_training_data of
    2026-11-20 for account 'prod'"); a database failure ends it as one ``WarehouseError``."""
    outcome = "the write was rolled back, so its previous rows are intact: re-running it is safe"
    with _in_one_sentence(f"writing {what}", outcome), engine.begin() as conn:
        yield conn


@contextmanager
def reading(engine: Engine, what: str) -> Iterator[Connection]:
    """A connection reading ``what``; a database failure ends it as one ``WarehouseError``."""
    outcome = "nothing was written: re-run it once the database answers"
    with _in_one_sentence(f"reading {what}", outcome), engine.connect() as conn:
        yield conn
