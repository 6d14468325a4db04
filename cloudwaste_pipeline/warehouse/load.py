"""Fast, transactional writes: COPY on PostgreSQL, executemany on SQLite.

The caller owns the transaction (``with engine.begin() as conn``), so replacing a partition is
delete-then-insert in one transaction: a re-run never duplicates rows, and a failure halfway
leaves the previous rows in place.
"""

from __future__ import annotations

import csv
import io
import json
import math
import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

CHUNK_ROWS = 10_000
NULL = r"\N"


def _clean(value: Any) -> Any:
    """Plain Python values: NaN/NaT/NA become None, numpy scalars become Python scalars."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def records(table: sa.Table, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame as insertable rows, with the table's Python-side defaults filled in."""
    unknown = sorted(set(frame.columns) - set(table.c.keys()))
    if unknown:
        raise ValueError(f"{table.fullname}: no such column(s) {unknown}")
    rows = [{k: _clean(v) for k, v in row.items()} for row in frame.to_dict("records")]
    for column in table.columns:
        default = column.default
        if column.name in frame.columns or default is None:
            continue
        for row in rows:
            # SQLAlchemy wraps callables (uuid4, utcnow) to take an execution context.
            row[column.name] = default.arg(None) if default.is_callable else default.arg
    return rows


def _copy_value(value: Any) -> Any:
    if value is None:
        return NULL
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, separators=(",", ":"))
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _copy(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    columns = list(rows[0])
    target = f'{table.fullname} ({", ".join(columns)})'
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        for start in range(0, len(rows), CHUNK_ROWS):
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            for row in rows[start : start + CHUNK_ROWS]:
                writer.writerow([_copy_value(row[c]) for c in columns])
            buffer.seek(0)
            statement = f"COPY {target} FROM STDIN WITH (FORMAT csv, NULL '{NULL}')"
            try:
                cursor.copy_expert(statement, buffer)
            except conn.dialect.dbapi.Error as exc:  # type: ignore[union-attr]
                # The same error type as every other statement, for callers and tests alike.
                raise sa.exc.DBAPIError(statement, None, exc) from exc
    finally:
        cursor.close()


def bulk_insert(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> int:
    """Insert every row of ``frame``; returns the number written."""
    if frame.empty:
        return 0
    rows = records(table, frame)
    if conn.dialect.name == "postgresql":
        _copy(conn, table, rows)
    else:
        for start in range(0, len(rows), CHUNK_ROWS):
            conn.execute(table.insert(), rows[start : start + CHUNK_ROWS])
    return len(rows)


def replace_rows(
    conn: Connection, table: sa.Table, where: sa.ColumnElement[bool], frame: pd.DataFrame
) -> tuple[int, int]:
    """Delete what ``where`` selects, then insert ``frame``: (deleted, inserted)."""
    deleted = conn.execute(sa.delete(table).where(where)).rowcount or 0
    return deleted, bulk_insert(conn, table, frame)


def insert_new(
    conn: Connection, table: sa.Table, frame: pd.DataFrame, key_columns: Sequence[str]
) -> int:
    """Insert the rows whose key is not stored yet; returns how many were inserted."""
    if frame.empty:
        return 0
    rows = records(table, frame)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(table)
        .on_conflict_do_nothing(index_elements=list(key_columns))
        .returning(table.c[key_columns[0]])
    )
    inserted = 0
    for start in range(0, len(rows), CHUNK_ROWS):
        inserted += len(conn.execute(statement, rows[start : start + CHUNK_ROWS]).all())
    return inserted


def read_frame(conn: Connection, query: sa.Select[Any]) -> pd.DataFrame:
    """A query as a DataFrame; JSON columns come back as Python objects on both engines."""
    result = conn.execute(query)
    return pd.DataFrame([tuple(r) for r in result], columns=list(result.keys()))
