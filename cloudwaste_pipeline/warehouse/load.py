"""Fast, transactional writes: ``COPY`` on PostgreSQL, chunked executemany on SQLite.

Every function takes a ``Connection`` and never commits: the caller owns the transaction
(``with engine.begin() as conn``), so "replace a partition" is delete-then-insert in one
transaction. A re-run never duplicates rows and a failure halfway leaves the old rows in place.

Rows come as a DataFrame or as columns of plain values (``Columns``: what ``privacy.derive``
builds, so no frame is built only to be taken apart again). They are converted to plain Python
values first, the same way for both engines, so what is
stored does not depend on the engine: NaN/NaT/NA become NULL, numpy scalars become Python
scalars, timestamps become naive UTC (the warehouse convention), and the table's Python-side
defaults (UUID ids, ``created_at``...) are filled for columns the frame does not have.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from cloudwaste_pipeline.faults import crash_point
from cloudwaste_pipeline.warehouse.locks import lock_rows, lock_slice
from cloudwaste_pipeline.warehouse.schema import dumps_json

CHUNK_ROWS = 10_000
"""Rows per COPY buffer / executemany batch: bounded memory, few round trips."""

Columns = Mapping[str, Sequence[Any]]
"""Rows as columns: name -> values, every column of the same length."""

Batch = pd.DataFrame | Columns
"""Rows to write: a frame, or plain columns."""


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


def _converted(table: sa.Table, name: str, convert: Callable[[Any], Any], raw: Any) -> Any:
    value = _plain(raw)
    if _missing(value):
        return None
    try:
        return convert(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{table.fullname}.{name}: {exc}") from exc


def _datetimes(series: pd.Series, unit: str) -> list[Any] | None:
    """A datetime64 column as naive-UTC datetimes (unit "us") or dates ("D"), NaT as None.

    numpy converts a whole ``datetime64[us]`` array to Python objects at C speed, where going
    value by value through ``pd.Timestamp`` cost more than the rest of a row's conversion.
    """
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    if not pd.api.types.is_datetime64_dtype(series.dtype):
        return None
    return series.to_numpy(dtype=f"datetime64[{unit}]").astype(object).tolist()


def _column_values(table: sa.Table, name: str, given: pd.Series | Sequence[Any]) -> list[Any]:
    """The column's values converted for ``table.c[name]``.

    Values already of the column's Python type pass through untouched (the common case, checked
    by exact type); anything else takes the general conversion, which also raises the error.
    """
    kind = _kind(table.c[name])
    convert = kind.convert
    if isinstance(given, pd.Series):
        if convert in (_to_datetime, _to_date):
            converted = _datetimes(given, "us" if convert is _to_datetime else "D")
            if converted is not None:
                return converted
        values = given.tolist()
    else:
        values = list(given)
    if convert is float:
        return [
            v if type(v) is float and v == v else _converted(table, name, convert, v)
            for v in values
        ]
    if convert is _to_datetime:
        return [
            v if type(v) is datetime and v.tzinfo is None else _converted(table, name, convert, v)
            for v in values
        ]
    exact = kind.exact
    if exact is None:
        return [_converted(table, name, convert, v) for v in values]
    return [
        v if type(v) is exact else None if v is None else _converted(table, name, convert, v)
        for v in values
    ]


def uuid4_texts(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs in canonical text form, as ``str(uuid.uuid4())``.

    One ``os.urandom`` call and numpy bit-setting for the lot: a third of the cost of building
    a ``UUID`` object per row only to format it again for ``COPY``.
    """
    octets = np.frombuffer(os.urandom(16 * count), dtype=np.uint8).reshape(count, 16).copy()
    octets[:, 6] = (octets[:, 6] & 0x0F) | 0x40  # version 4
    octets[:, 8] = (octets[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    h = octets.tobytes().hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-"
        f"{h[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


def _default_values(column: sa.Column[Any], rows: int, uuid_text: bool) -> list[Any] | None:
    """Values for a Python-side default, as SQLAlchemy would compute them (callables per row)."""
    default = column.default
    if default is None or not isinstance(default, sa.ColumnDefault):
        return None  # none, or a server-side sequence/clause: the database fills it
    if default.is_callable:
        # SQLAlchemy wraps zero-argument callables (uuid4, utcnow) to take a context.
        make = default.arg
        if uuid_text and getattr(make, "__wrapped__", None) is uuid.uuid4:
            return uuid4_texts(rows)
        return [make(None) for _ in range(rows)]  # type: ignore[operator]
    if default.is_scalar:
        return [default.arg] * rows
    return None


def _names(batch: Batch) -> list[str]:
    return [str(c) for c in batch.columns] if isinstance(batch, pd.DataFrame) else list(batch)


def check_columns(table: sa.Table, batch: Batch) -> None:
    """Refuse columns the table does not have: a typo must not silently drop data."""
    if isinstance(batch, pd.DataFrame) and not batch.columns.is_unique:
        duplicated = sorted({str(c) for c in batch.columns[batch.columns.duplicated()]})
        raise ValueError(f"{table.fullname}: duplicated frame column(s) {duplicated}")
    unknown = sorted(c for c in _names(batch) if c not in table.c)
    if unknown:
        raise ValueError(f"{table.fullname}: no such column(s) {unknown}")


def _row_count(table: sa.Table, batch: Batch) -> int:
    if isinstance(batch, pd.DataFrame):
        return len(batch)
    lengths = {name: len(values) for name, values in batch.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{table.fullname}: columns of unequal length {lengths}")
    return next(iter(lengths.values()), 0)


def prepare_columns(
    table: sa.Table, batch: Batch, *, uuid_text: bool = False
) -> tuple[list[str], list[list[Any]]]:
    """Column names and, per column, its plain values, with the table's defaults filled in.

    ``uuid_text``: fill ``uuid4`` defaults as canonical text (all ``COPY`` needs) instead of
    ``UUID`` objects (what drivers bind).
    """
    check_columns(table, batch)
    rows = _row_count(table, batch)
    given = set(_names(batch))
    names: list[str] = []
    columns: list[list[Any]] = []
    for column in table.columns:
        if column.name in given:
            values: list[Any] | None = _column_values(table, column.name, batch[column.name])
        else:
            values = _default_values(column, rows, uuid_text)
        if values is not None:
            names.append(column.name)
            columns.append(values)
    return names, columns


def prepare(table: sa.Table, batch: Batch) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and row tuples of plain values, with the table's defaults filled in."""
    names, columns = prepare_columns(table, batch)
    return names, list(zip(*columns, strict=True))


def records(table: sa.Table, batch: Batch) -> list[dict[str, Any]]:
    """The rows as insertable dicts (plain values, defaults filled)."""
    names, rows = prepare(table, batch)
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


def _csv_strings(values: list[Any]) -> list[str]:
    # Every string is quoted: in CSV COPY an unquoted empty field is NULL and ``""`` is ''.
    return ["" if v is None else '"' + v.replace('"', '""') + '"' for v in values]


def _csv_json(values: list[Any]) -> list[str]:
    return ["" if v is None else _quote(dumps_json(v)) for v in values]


def _csv_floats(values: list[Any]) -> list[str]:
    return ["" if v is None else repr(v) for v in values]  # shortest exact round trip


def _csv_booleans(values: list[Any]) -> list[str]:
    return ["" if v is None else ("t" if v else "f") for v in values]


def _once_each(values: list[Any], text: Callable[[Any], str]) -> list[str]:
    """``text`` of each value, computed once per distinct value (None is ""): the rows of a scan
    share their scan date and timestamps, and formatting those was a seventh of a row's CSV."""
    known: dict[Any, str] = {None: ""}
    return [known[v] if v in known else known.setdefault(v, text(v)) for v in values]


def _csv_datetimes(values: list[Any]) -> list[str]:
    return _once_each(values, lambda v: v.isoformat(sep=" "))


def _csv_dates(values: list[Any]) -> list[str]:
    return _once_each(values, date.isoformat)


def _csv_text(values: list[Any]) -> list[str]:
    return ["" if v is None else str(v) for v in values]  # ints, UUIDs


class _Kind(NamedTuple):
    """How values of one column type are converted (``prepare``) and written as CSV (``COPY``).

    ``exact``: values of exactly this Python type need no conversion (None: always convert).
    """

    convert: Callable[[Any], Any]
    exact: type | None
    csv: Callable[[list[Any]], list[str]]


_KINDS: tuple[tuple[type, _Kind], ...] = (  # first match wins
    (sa.JSON, _Kind(_keep, dict, _csv_json)),  # JSON objects; lists and scalars convert
    (sa.DateTime, _Kind(_to_datetime, None, _csv_datetimes)),
    (sa.Date, _Kind(_to_date, date, _csv_dates)),
    (sa.Boolean, _Kind(bool, bool, _csv_booleans)),
    (sa.Integer, _Kind(_to_int, int, _csv_text)),
    (sa.Float, _Kind(float, None, _csv_floats)),
    (sa.Uuid, _Kind(_to_uuid, uuid.UUID, _csv_text)),
    (sa.String, _Kind(_to_str, str, _csv_strings)),
)
_OTHER = _Kind(_keep, None, lambda values: ["" if v is None else _quote(str(v)) for v in values])


def _kind(column: sa.Column[Any]) -> _Kind:
    return next((kind for sa_type, kind in _KINDS if isinstance(column.type, sa_type)), _OTHER)


def csv_lines(table: sa.Table, names: Sequence[str], columns: Sequence[Sequence[Any]]) -> str:
    """Prepared columns (``prepare_columns``) as the CSV ``COPY ... (FORMAT csv)`` reads.

    Formatted a column at a time, with one formatter per column type, then joined into lines.
    """
    fields = [
        _kind(table.c[name]).csv(list(values)) for name, values in zip(names, columns, strict=True)
    ]
    if not fields or not fields[0]:
        return ""
    return "\n".join(map(",".join, zip(*fields, strict=True))) + "\n"


COPY_PIECE_ROWS = 500
"""Rows formatted per piece of a streaming COPY: small, so the server indexes one piece while
the client derives and formats the next (the two run on different cores)."""


class _CopySource:
    """A file-like ``read()`` for ``copy_expert`` that prepares and formats frames lazily.

    Nothing is built ahead: each read converts and formats the next piece, pulling the next frame
    from the iterable (which may itself be computing it) only when the previous one is sent. A
    frame with other columns than the current COPY's ends it (``read`` returns ""), to be sent by
    the next one. An error while preparing is kept, so the caller re-raises it instead of
    psycopg2's generic "error in .read() call".
    """

    def __init__(self, table: sa.Table, frames: Iterable[Batch]) -> None:
        self.table, self.frames = table, iter(frames)
        self.names: list[str] | None = None
        self.pending: tuple[list[str], list[list[Any]]] | None = None
        self.pieces: Iterator[str] = iter(())
        self.rows, self.error = 0, None

    def _pull(self) -> tuple[list[str], list[list[Any]]] | None:
        for frame in self.frames:
            names, columns = prepare_columns(self.table, frame, uuid_text=True)
            if columns and columns[0]:
                return names, columns
        return None

    def _format(self, names: list[str], columns: list[list[Any]]) -> Iterator[str]:
        size = COPY_PIECE_ROWS
        for start in range(0, len(columns[0]), size):
            piece = [values[start : start + size] for values in columns]
            self.rows += len(piece[0])
            yield csv_lines(self.table, names, piece)

    def start(self) -> list[str] | None:
        """Begin the next COPY: the columns of the next non-empty frame, or None at the end."""
        if self.pending is None:
            self.pending = self._pull()
        if self.pending is None:
            return None
        self.names, columns = self.pending
        self.pending = None
        self.pieces = self._format(self.names, columns)
        return self.names

    def read(self, size: int = -1) -> str:
        try:
            piece = next(self.pieces, None)
            if piece is not None:
                return piece
            self.pending = self._pull()
            if self.pending is None or self.pending[0] != self.names:
                return ""  # the end of this COPY
            self.pieces = self._format(*self.pending)
            self.pending = None
            return next(self.pieces)
        except Exception as exc:
            self.error = exc
            raise


def _copy(conn: Connection, table: sa.Table, frames: Iterable[Batch]) -> int:
    """``COPY ... FROM STDIN`` streaming the frames: one per run of frames with equal columns."""
    source = _CopySource(table, frames)
    preparer = conn.dialect.identifier_preparer
    dbapi = conn.dialect.loaded_dbapi
    while (names := source.start()) is not None:
        statement = (
            f"COPY {preparer.format_table(table)} ({', '.join(preparer.quote(n) for n in names)}) "
            "FROM STDIN WITH (FORMAT csv)"
        )
        _ensure_transaction(conn)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.copy_expert(statement, source)
        except dbapi.Error as exc:
            if source.error is not None:
                raise source.error from None
            # Raise what any other statement would (IntegrityError, DataError...).
            raise sa.exc.DBAPIError.instance(
                statement, None, exc, dbapi.Error, dialect=conn.dialect
            ) from exc
        finally:
            cursor.close()
    return source.rows


def _batches(batches: Batch | Iterable[Batch]) -> Iterable[Batch]:
    return [batches] if isinstance(batches, pd.DataFrame | Mapping) else batches


def bulk_insert(conn: Connection, table: sa.Table, frames: Batch | Iterable[Batch]) -> int:
    """Append every row of a batch, or of a stream of batches, to ``table``; returns the count.

    PostgreSQL streams CSV through one ``COPY`` (an order of magnitude faster than INSERTs):
    frames are pulled, converted and formatted as the server takes them, so a generator that
    derives rows overlaps with the server writing the previous ones. SQLite uses chunked
    executemany. Unknown frame columns raise ``ValueError``.
    """
    if conn.dialect.name == "postgresql":
        return _copy(conn, table, _batches(frames))
    written = 0
    for batch in _batches(frames):
        names, rows = prepare(table, batch)
        for chunk in _chunks(rows):
            conn.execute(table.insert(), [dict(zip(names, row, strict=True)) for row in chunk])
        written += len(rows)
    return written


def replace_rows(
    conn: Connection,
    table: sa.Table,
    where: sa.ColumnElement[bool],
    frames: Batch | Iterable[Batch],
    *,
    slice_of: Sequence[object] | None = None,
) -> tuple[int, int]:
    """Delete the rows ``where`` selects, then insert the frame(s); returns (deleted, inserted).

    Run it inside the caller's transaction: re-running a partition then replaces it atomically,
    and an insert that fails (a stream's later frame included) takes the delete back with it.
    The slice is locked first, so two overlapping writers of the same rows run one after the
    other and the second deletes what the first inserted, on PostgreSQL as on SQLite. The lock
    is keyed by ``slice_of`` (what the rows are about, e.g. a day and an account hash: every
    writer of that data takes the same lock however it selects it), else by the predicate and
    its values (``locks.lock_rows``). A caller that reads the slice before rewriting it takes the
    same lock earlier.
    """
    if isinstance(frames, pd.DataFrame | Mapping):
        check_columns(table, frames)  # before deleting anything
    if slice_of is None:
        lock_rows(conn, table, where)
    else:
        lock_slice(conn, table.fullname, *slice_of)
    deleted = conn.execute(sa.delete(table).where(where)).rowcount or 0
    crash_point("load.after_delete")
    inserted = bulk_insert(conn, table, frames)
    crash_point("load.before_commit")
    return deleted, inserted


def insert_new(
    conn: Connection, table: sa.Table, frame: pd.DataFrame, key_columns: Sequence[str]
) -> int:
    """Insert the rows whose key is not stored yet; returns how many were actually inserted.

    ``key_columns`` must be exactly a unique constraint of the table (``ON CONFLICT`` needs one);
    a conflict on any *other* constraint still raises. Rows with a NULL in the key never
    conflict. The count comes from ``RETURNING``, exact even with concurrent writers: the unique
    index is the one writer per key (a second transaction inserting the same key waits for the
    first and then skips it), so no slice lock is needed.
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
