"""Fast, transactional writes: ``COPY`` on PostgreSQL, chunked executemany on SQLite.

Every function takes a ``Connection`` and never commits: the caller owns the transaction
(``with engine.begin() as conn``), so "replace a partition" is delete-then-insert in one
transaction. A re-run never duplicates rows and a failure halfway leaves the old rows in place.

Frames are converted to plain Python values first, the same way for both engines, so what is
stored does not depend on the engine: NaN/NaT/NA become NULL, numpy scalars become Python
scalars, timestamps become naive UTC (the warehouse convention), and the table's Python-side
defaults (UUID ids, ``created_at``...) are filled for columns the frame does not have.
"""

from __future__ import annotations

import io
import math
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from cloudwaste_pipeline.warehouse.schema import dumps_json

CHUNK_ROWS = 10_000
"""Rows per COPY buffer / executemany batch: bounded memory, few round trips."""


# --- frame -> plain Python values ---------------------------------------------------------------


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, np.datetime64 | np.timedelta64):
        return bool(np.isnat(value))
    return False


def _plain(value: Any) -> Any:
    """numpy scalars as Python scalars (drivers cannot bind ``np.int64``)."""
    if isinstance(value, np.datetime64):
        return pd.Timestamp(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _to_datetime(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if not isinstance(value, datetime):
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day)
        raise TypeError(f"not a datetime: {value!r}")
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _to_date(value: Any) -> date:
    if isinstance(value, str):
        return date.fromisoformat(value[:10])
    if isinstance(value, datetime):  # pd.Timestamp is a datetime
        return value.date()
    if isinstance(value, date):
        return value
    raise TypeError(f"not a date: {value!r}")


def _to_int(value: Any) -> int:
    # Integer columns with a gap arrive as float64 (NaN needs a float); 3.0 is fine, 3.7 is not.
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"not an integer: {value!r}")
    return int(value)


def _to_uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _to_str(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _keep(value: Any) -> Any:
    return value


def _converter(column: sa.Column[Any]) -> Callable[[Any], Any]:
    kind = column.type
    if isinstance(kind, sa.JSON):
        return _keep
    if isinstance(kind, sa.DateTime):
        return _to_datetime
    if isinstance(kind, sa.Date):
        return _to_date
    if isinstance(kind, sa.Boolean):
        return bool
    if isinstance(kind, sa.Integer):
        return _to_int
    if isinstance(kind, sa.Float):
        return float
    if isinstance(kind, sa.Uuid):
        return _to_uuid
    if isinstance(kind, sa.String):
        return _to_str
    return _keep


def _column_values(table: sa.Table, name: str, series: pd.Series) -> list[Any]:
    convert = _converter(table.c[name])
    values: list[Any] = []
    for raw in series.tolist():
        value = _plain(raw)
        if _missing(value):
            values.append(None)
            continue
        try:
            values.append(convert(value))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{table.fullname}.{name}: {exc}") from exc
    return values


def _default_values(column: sa.Column[Any], rows: int) -> list[Any] | None:
    """Values for a Python-side default, as SQLAlchemy would compute them (callables per row)."""
    default = column.default
    if default is None or not isinstance(default, sa.ColumnDefault):
        return None  # none, or a server-side sequence/clause: the database fills it
    if default.is_callable:
        # SQLAlchemy wraps zero-argument callables (uuid4, utcnow) to take a context.
        make = default.arg
        return [make(None) for _ in range(rows)]  # type: ignore[operator]
    if default.is_scalar:
        return [default.arg] * rows
    return None


def check_columns(table: sa.Table, frame: pd.DataFrame) -> None:
    """Refuse columns the table does not have: a typo must not silently drop data."""
    if not frame.columns.is_unique:
        duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise ValueError(f"{table.fullname}: duplicated frame column(s) {duplicated}")
    unknown = sorted(str(c) for c in frame.columns if c not in table.c)
    if unknown:
        raise ValueError(f"{table.fullname}: no such column(s) {unknown}")


def prepare(table: sa.Table, frame: pd.DataFrame) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and row tuples of plain values, with the table's defaults filled in."""
    check_columns(table, frame)
    rows = len(frame)
    names: list[str] = []
    columns: list[list[Any]] = []
    for column in table.columns:
        if column.name in frame.columns:
            values: list[Any] | None = _column_values(table, column.name, frame[column.name])
        else:
            values = _default_values(column, rows)
        if values is not None:
            names.append(column.name)
            columns.append(values)
    return names, list(zip(*columns, strict=True))


def records(table: sa.Table, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame as insertable dicts (plain values, defaults filled)."""
    names, rows = prepare(table, frame)
    return [dict(zip(names, row, strict=True)) for row in rows]


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    size = CHUNK_ROWS  # read per call, so tests can shrink it
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _ensure_transaction(conn: Connection) -> None:
    """Make SQLAlchemy track a transaction before writing behind its back (COPY).

    SQLAlchemy autobegins only when *it* executes; a COPY through the raw cursor would otherwise
    leave a DBAPI transaction that ``conn.commit()`` does not know to commit.
    """
    if not conn.in_transaction():
        conn.begin()


# --- PostgreSQL COPY ----------------------------------------------------------------------------


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _csv_field(value: Any, is_json: bool) -> str:
    """One CSV field: unquoted empty is NULL, so every string is quoted (``""`` is '')."""
    if value is None:
        return ""
    if is_json:
        return _quote(dumps_json(value))
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        return repr(value)  # shortest text that round-trips the double exactly
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, int | date | uuid.UUID):
        return str(value)
    return _quote(str(value))


def csv_lines(rows: Sequence[tuple[Any, ...]], is_json: Sequence[bool]) -> str:
    """Rows of plain values as the CSV ``COPY ... (FORMAT csv)`` reads, one line per row."""
    return "".join(
        ",".join(_csv_field(v, j) for v, j in zip(row, is_json, strict=True)) + "\n" for row in rows
    )


def _copy(conn: Connection, table: sa.Table, names: list[str], rows: list[tuple[Any, ...]]) -> int:
    preparer = conn.dialect.identifier_preparer
    statement = (
        f"COPY {preparer.format_table(table)} ({', '.join(preparer.quote(n) for n in names)}) "
        "FROM STDIN WITH (FORMAT csv)"
    )
    is_json = [isinstance(table.c[n].type, sa.JSON) for n in names]
    dbapi = conn.dialect.loaded_dbapi
    _ensure_transaction(conn)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        for chunk in _chunks(rows):
            buffer = io.StringIO(csv_lines(chunk, is_json))
            try:
                cursor.copy_expert(statement, buffer)
            except dbapi.Error as exc:
                # Raise what any other statement would (IntegrityError, DataError...).
                raise sa.exc.DBAPIError.instance(
                    statement, None, exc, dbapi.Error, dialect=conn.dialect
                ) from exc
    finally:
        cursor.close()
    return len(rows)


# --- public API ---------------------------------------------------------------------------------


def bulk_insert(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> int:
    """Append every row of ``frame`` to ``table``; returns the number of rows written.

    PostgreSQL streams CSV through ``COPY`` (an order of magnitude faster than INSERTs for scan
    partitions); SQLite uses chunked executemany. Unknown frame columns raise ``ValueError``.
    """
    names, rows = prepare(table, frame)
    if not rows:
        return 0
    if conn.dialect.name == "postgresql":
        return _copy(conn, table, names, rows)
    for chunk in _chunks(rows):
        conn.execute(table.insert(), [dict(zip(names, row, strict=True)) for row in chunk])
    return len(rows)


def replace_rows(
    conn: Connection, table: sa.Table, where: sa.ColumnElement[bool], frame: pd.DataFrame
) -> tuple[int, int]:
    """Delete the rows ``where`` selects, then insert ``frame``; returns (deleted, inserted).

    Run it inside the caller's transaction: re-running a partition then replaces it atomically,
    and an insert that fails takes the delete back with it.
    """
    check_columns(table, frame)  # before deleting anything
    deleted = conn.execute(sa.delete(table).where(where)).rowcount or 0
    return deleted, bulk_insert(conn, table, frame)


def insert_new(
    conn: Connection, table: sa.Table, frame: pd.DataFrame, key_columns: Sequence[str]
) -> int:
    """Insert the rows whose key is not stored yet; returns how many were actually inserted.

    ``key_columns`` must be exactly a unique constraint of the table (``ON CONFLICT`` needs one);
    a conflict on any *other* constraint still raises. Rows with a NULL in the key never
    conflict. The count comes from ``RETURNING``, exact even with concurrent writers.
    """
    keys = list(key_columns)
    if not keys or any(k not in table.c for k in keys):
        raise ValueError(f"{table.fullname}: key columns {keys} are not all table columns")
    names, rows = prepare(table, frame)
    if not rows:
        return 0
    if conn.dialect.name == "postgresql":
        insert = postgresql.insert(table)
    elif conn.dialect.name == "sqlite":
        insert = sqlite.insert(table)
    else:
        raise NotImplementedError(f"insert_new: unsupported database {conn.dialect.name!r}")
    statement = insert.on_conflict_do_nothing(index_elements=keys).returning(table.c[keys[0]])
    inserted = 0
    for chunk in _chunks(rows):
        params = [dict(zip(names, row, strict=True)) for row in chunk]
        inserted += len(conn.execute(statement, params).all())
    return inserted


def read_frame(
    conn: Connection, query: sa.Executable, params: dict[str, Any] | None = None
) -> pd.DataFrame:
    """A query's rows as a DataFrame, dtypes inferred by pandas as ``read_sql`` would.

    JSON columns come back as Python objects (dicts/lists) on both engines when the query
    selects typed table columns. Under pandas 3 text columns get the ``str`` dtype, where a NULL
    reads back as NaN, not None: test for missing values with ``pd.isna``.
    """
    result = conn.execute(query, params or {})
    columns = list(result.keys())
    return pd.DataFrame([tuple(row) for row in result], columns=columns)
