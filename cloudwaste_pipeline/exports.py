"""Dataset exports: the three datasets of the usage guide, streamed, in JSON, CSV and Parquet.

Rows are read from the warehouse in chunks and written incrementally, so memory stays flat as the
tables grow. Every file of an export is first written into a staging folder; only when all of
them are complete are they published (renamed into the export folder, or uploaded to S3), under
names that carry a content id (``ml_training_data_20261115_3fa9c2e1.parquet``), the manifest
last: the manifest is the commit record, and the previous export stays valid until it is
replaced (``publish``; readers check an export with ``verify_export``). A failed or killed export
therefore leaves nothing a reader would trust, and the next run removes what it left; a re-run of
the same window replaces its files instead of adding to them.

Where exports go (``export_subfolder``):

- ``weekly/<monday>/``: the scheduled Monday-to-Sunday partitions of ``ml_dataset_exports``;
- ``adhoc/<start>_<end>/``: on-demand windows (job ``adhoc_export_job``, ``api.export_datasets``,
  ``cloudwaste export``), so they can never overwrite a scheduled week's files.

No Dagster import here: the asset, the ad-hoc op, the API and the CLI all call ``export_window``.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import math
import operator
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from importlib import metadata as package_metadata
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.errors import CloudWasteError
from cloudwaste_pipeline.faults import crash_point
from cloudwaste_pipeline.manifests import published_name, sha256, verify_export  # noqa: F401
from cloudwaste_pipeline.privacy import keyring
from cloudwaste_pipeline.publish import (  # noqa: F401 - the publishing side, re-exported
    Destination,
    ExportError,
    LocalDestination,
    S3Destination,
    export_error,
    sweep_orphans,
    sweep_staging,
)
from cloudwaste_pipeline.warehouse import schema

FORMATS = ("json", "csv", "parquet")
COMPRESSIONS = ("none", "gzip")
CHUNK_ROWS = 50_000
PACKAGE = "cloudwaste_pipeline"


def code_version() -> str:
    """The installed package's version: the manifest says which code wrote the files."""
    try:
        return package_metadata.version(PACKAGE)
    except package_metadata.PackageNotFoundError:  # a bare checkout on sys.path
        return "unknown"


@dataclass(frozen=True)
class Dataset:
    """One exported dataset: a table and the timestamp column that places a row in a window."""

    name: str
    table: sa.Table
    window_column: str


def datasets() -> list[Dataset]:
    return [
        Dataset("ml_training_data", schema.ml_training_data, "detected_at"),
        Dataset("user_action_patterns", schema.user_action_patterns, "action_at"),
        Dataset("cost_trends", schema.cost_trend_data, "month"),
    ]


def window_filter(dataset: Dataset, start: date, end: date) -> sa.ColumnElement[bool]:
    """Rows of [start, end] inclusive; cost trends by the months the window touches."""
    column = dataset.table.c[dataset.window_column]
    if dataset.window_column == "month":
        return sa.and_(column >= start.strftime("%Y-%m"), column <= end.strftime("%Y-%m"))
    return sa.and_(
        column >= datetime.combine(start, datetime.min.time()),
        column < datetime.combine(end + timedelta(days=1), datetime.min.time()),
    )


def window_query(dataset: Dataset, start: date, end: date) -> sa.Select[Any]:
    """The window's rows in a stable order (time, then id), so two exports of it are identical."""
    table = dataset.table
    return (
        sa.select(table)
        .where(window_filter(dataset, start, end))
        .order_by(table.c[dataset.window_column], table.c.id)
    )


# --- windows and folders ------------------------------------------------------------------------


EARLIEST_DAY = date(2000, 1, 1)
"""No scan predates it: a window reaching further back (``0001-01-01``) is a typo."""
DEFAULT_LAST_DAYS = 90


class WindowError(CloudWasteError):
    """An export window that cannot be: a bad date, an empty or huge range, start after end."""


def last_days_window(days: int, today: date | None = None) -> tuple[date, date]:
    """The ``days`` days ending today (today included): ``last 30 days`` of the UI and the CLI.

    At least one day, and never before ``EARLIEST_DAY``: ``0`` is not "the default" and a
    billion days is not a date.
    """
    try:
        if isinstance(days, bool):
            raise TypeError
        days = operator.index(days)  # an int, or numpy's
    except TypeError:
        raise WindowError(
            f"last_days must be a whole number of days, not {type(days).__name__}"
        ) from None
    end = today or settings.today()
    most = (end - EARLIEST_DAY).days + 1
    if not 1 <= days <= most:
        raise WindowError(f"last_days must be between 1 and {most} (back to {EARLIEST_DAY})")
    return end - timedelta(days=days - 1), end


def as_day(value: date | str, name: str) -> date:
    """A window bound given as a date, a datetime (its day) or ``YYYY-MM-DD`` text."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            shown = value.strip()[:20]
            raise WindowError(f"{name} {shown!r} is not a date; use YYYY-MM-DD") from None
    raise WindowError(f"{name} must be a date (YYYY-MM-DD), not {type(value).__name__}")


def resolve_window(
    last_days: int | None = None,
    start: date | str | None = None,
    end: date | str | None = None,
    today: date | None = None,
) -> tuple[date, date]:
    """The ad-hoc window, one rule for the UI, the API and the CLI: [start, end or today] when
    ``start`` is given, else the ``last_days`` days ending on ``end`` or today (default 90, as
    the seed's admin export). Both ends lie in [``EARLIEST_DAY``, tomorrow]; every mistake is a
    ``WindowError`` (a ``CloudWasteError``) whose message the CLI prints as it is."""
    today = today or settings.today()
    latest = today + timedelta(days=1)
    end_day = today if end is None else as_day(end, "end")
    bounds = [("end", end_day)]
    if start is not None:
        if last_days is not None:
            raise WindowError("give either last_days or start (and end), not both")
        start_day = as_day(start, "start")
        bounds.insert(0, ("start", start_day))
    for name, day in bounds:
        if not EARLIEST_DAY <= day <= latest:
            raise WindowError(f"{name} {day} is outside {EARLIEST_DAY} .. {latest} (tomorrow)")
    if start is None:
        days = DEFAULT_LAST_DAYS if last_days is None else last_days
        start_day, end_day = last_days_window(days, end_day)
    if start_day > end_day:
        raise WindowError(f"start {start_day} is after end {end_day}")
    return start_day, end_day


def export_subfolder(kind: str, start: date, end: date) -> str:
    """``weekly/<monday>`` or ``adhoc/<start>_<end>``: the two kinds never share a folder."""
    if kind == "weekly":
        return f"weekly/{start.isoformat()}"
    if kind == "adhoc":
        return f"adhoc/{start.isoformat()}_{end.isoformat()}"
    raise ValueError(f"unknown export kind {kind!r}; use 'weekly' or 'adhoc'")


def file_name(dataset: str, stamp: str, fmt: str, compression: str) -> str:
    """``<dataset>_<YYYYMMDD>.<fmt>``, ``.gz`` added for gzip JSON/CSV (Parquet compresses
    inside the file, so its name stays ``.parquet``)."""
    suffix = ".gz" if compression == "gzip" and fmt != "parquet" else ""
    return f"{dataset}_{stamp}.{fmt}{suffix}"


# --- progress -----------------------------------------------------------------------------------


class ExportProgress:
    """Hooks for a progress display (the CLI's tqdm bars); the default shows nothing.

    ``wants_totals``: whether ``begin`` needs each dataset's row count, which costs a
    ``COUNT(*)`` of the window per dataset: only a display that shows totals asks for it.
    """

    wants_totals = False

    def begin(self, label: str, total: int | None, unit: str) -> None:
        """A new stage: one dataset's rows, or one file's upload in bytes."""

    def advance(self, amount: int) -> None:
        """``amount`` more rows (or bytes) of the current stage are done."""

    def end(self) -> None:
        """The current stage is complete."""


# --- values -------------------------------------------------------------------------------------


def _kind(column: sa.Column[Any]) -> str:
    """How a column is written: its SQL type decides, not the values of the first chunk (a
    column that is all NULL in the first chunk would otherwise get a null Parquet type)."""
    column_type = column.type
    if isinstance(column_type, sa.JSON) or isinstance(getattr(column_type, "impl", None), sa.JSON):
        return "json"
    for kind, types in (
        ("uuid", (sa.Uuid,)),
        ("bool", (sa.Boolean,)),
        ("int", (sa.Integer,)),
        ("float", (sa.Float, sa.Numeric)),
        ("datetime", (sa.DateTime,)),
        ("date", (sa.Date,)),
    ):
        if isinstance(column_type, types):
            return kind
    return "str"


ARROW_TYPES = {
    "json": pa.string(),  # JSON text: one Parquet schema however the documents nest
    "uuid": pa.string(),
    "bool": pa.bool_(),
    "int": pa.int64(),
    "float": pa.float64(),
    "datetime": pa.timestamp("us"),  # naive UTC, as stored
    "date": pa.date32(),
    "str": pa.string(),
}


def arrow_schema(table: sa.Table) -> pa.Schema:
    return pa.schema([(c.name, ARROW_TYPES[_kind(c)]) for c in table.columns])


def dataset_schema(table: sa.Table) -> list[dict[str, Any]]:
    """The manifest's schema: name, warehouse type, Parquet type and nullability per column."""
    return [
        {
            "name": c.name,
            "type": str(c.type.compile(dialect=sa.dialects.postgresql.dialect())),
            "parquet_type": str(ARROW_TYPES[_kind(c)]),
            "nullable": bool(c.nullable),
        }
        for c in table.columns
    ]


def json_value(value: Any) -> Any:
    """A JSON-native value: nested JSON stays nested; timestamps ISO; NaN is ``null``."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def flat(value: Any) -> Any:
    """A CSV cell: JSON documents as JSON text, timestamps ISO, NULL as the empty cell."""
    if value is None:
        return None
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return json_value(value)


def _arrow_value(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "json":
        return value if isinstance(value, str) else flat(value)
    if kind == "uuid":
        return str(value)
    if kind == "float" and isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --- writers ------------------------------------------------------------------------------------


def _text_sink(path: Path, compression: str) -> IO[str]:
    """A text file, gzip-compressed with a zero mtime so the same rows give the same sha256."""
    if compression == "gzip":
        raw = gzip.GzipFile(filename="", mode="wb", fileobj=path.open("wb"), mtime=0)
        return io.TextIOWrapper(raw, encoding="utf-8", newline="")
    return path.open("w", encoding="utf-8", newline="")


class _Writers:
    """The writers of one dataset (one per format), fed chunk by chunk, in the staging folder."""

    def __init__(
        self,
        staging: Path,
        dataset: Dataset,
        stamp: str,
        formats: Sequence[str],
        compression: str,
    ) -> None:
        self.columns = [c.name for c in dataset.table.columns]
        self.kinds = [_kind(c) for c in dataset.table.columns]
        self.schema = arrow_schema(dataset.table)
        self.paths = {
            fmt: staging / file_name(dataset.name, stamp, fmt, compression) for fmt in formats
        }
        self.rows = 0
        self._handles: list[IO[str]] = []
        self._json: IO[str] | None = None
        self._csv: Any = None
        self._parquet: pq.ParquetWriter | None = None
        if "json" in formats:
            self._json = _text_sink(self.paths["json"], compression)
            self._handles.append(self._json)
            self._json.write("[")
        if "csv" in formats:
            handle = _text_sink(self.paths["csv"], compression)
            self._handles.append(handle)
            self._csv = csv.writer(handle)
            self._csv.writerow(self.columns)
        if "parquet" in formats:
            self._parquet = pq.ParquetWriter(
                self.paths["parquet"], self.schema, compression=_parquet_codec(compression)
            )

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        """Rows as tuples of warehouse values (JSON columns as Python objects)."""
        self._write_text(rows)
        if self._parquet is not None and rows:
            arrays = [
                pa.array([_arrow_value(kind, row[i]) for row in rows], type=self.schema[i].type)
                for i, kind in enumerate(self.kinds)
            ]
            self._parquet.write_table(pa.Table.from_arrays(arrays, schema=self.schema))

    def write_batch(self, batch: pa.RecordBatch) -> None:
        """An Arrow batch already in the Parquet schema (JSON columns as JSON text): Parquet
        takes it as it is; JSON and CSV get rows, JSON text parsed back so JSON nests."""
        if self._json is not None or self._csv is not None:
            columns = [
                [None if v is None else json.loads(v) for v in column.to_pylist()]
                if kind == "json"
                else column.to_pylist()
                for column, kind in zip(batch.columns, self.kinds, strict=True)
            ]
            self._write_text(list(zip(*columns, strict=True)))
        else:
            self.rows += batch.num_rows
        if self._parquet is not None and batch.num_rows:
            self._parquet.write_batch(batch)

    def _write_text(self, rows: Sequence[Sequence[Any]]) -> None:
        if self._json is not None:
            for row in rows:
                self._json.write(",\n" if self.rows else "\n")
                record = {c: json_value(v) for c, v in zip(self.columns, row, strict=True)}
                self._json.write(json.dumps(record, separators=(",", ":")))
                self.rows += 1
        else:
            self.rows += len(rows)
        if self._csv is not None:
            self._csv.writerows([flat(v) for v in row] for row in rows)

    def close(self) -> None:
        if self._json is not None:
            self._json.write("\n]\n" if self.rows else "]\n")
        for handle in self._handles:
            handle.close()
        if self._parquet is not None:
            self._parquet.close()

    def abort(self) -> None:
        """Close whatever is open; the staging folder (and these files) is removed by the caller."""
        for handle in self._handles:
            with contextlib.suppress(Exception):
                handle.close()
        if self._parquet is not None:
            with contextlib.suppress(Exception):
                self._parquet.close()


def read_chunks(engine: Engine, query: sa.Select[Any]) -> Iterator[list[tuple[Any, ...]]]:
    """Rows as tuples, ``CHUNK_ROWS`` at a time: a server-side cursor on PostgreSQL
    (stream_results), fetchmany on SQLite. Plain tuples, not DataFrames: pandas would turn the
    NULLs of an integer column into floats and change what is written."""
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(query)
        for partition in result.partitions(CHUNK_ROWS):
            yield [tuple(r) for r in partition]


STALE_FRACTION = 0.1
"""Rows changed since the last ANALYZE, as a share of the table, that make its statistics stale
(autovacuum's default ``autovacuum_analyze_scale_factor``)."""


def refresh_statistics(engine: Engine, table: sa.Table) -> bool:
    """ANALYZE ``table`` when its planner statistics are stale; True when it did.

    The window is read in (time, id) order, which the time column's index gives for the cost of
    a scan, but only when the planner knows the table's size: right after a backfill, before
    autovacuum has analyzed it (or where autovacuum is off), it estimates a few rows and sorts a
    million on disk instead (10.8 s against 4.5 s measured at 1M rows). Same threshold as
    autovacuum: 50 rows plus 10% of the table changed since the last ANALYZE.
    """
    name = engine.dialect.identifier_preparer.format_table(table)
    with engine.begin() as conn:
        changed, live = conn.execute(
            sa.text(
                "SELECT n_mod_since_analyze, n_live_tup FROM pg_stat_user_tables "
                "WHERE relid = CAST(:name AS regclass)"
            ),
            {"name": name},
        ).one()
        if changed <= 50 + STALE_FRACTION * live:
            return False
        conn.execute(sa.text(f"ANALYZE {name}"))
    return True


PIPE_BYTES = 1 << 20


def _pipe() -> tuple[int, int]:
    """A pipe whose buffer holds a megabyte where the OS allows (Linux; 64 KiB by default), so
    the server keeps sending while Arrow parses and the Parquet writer compresses a batch."""
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(ImportError, AttributeError, OSError):  # not Linux, or above the limit
        import fcntl

        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    return read_fd, write_fd


def read_batches_copy(
    engine: Engine, query: sa.Select[Any], schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """PostgreSQL: ``COPY (query) TO STDOUT`` as CSV, parsed by Arrow as it streams.

    No Python object per value: the server formats, Arrow's C++ parser types each column from
    the export schema, and batches go straight to the Parquet writer. About 10x the rate of
    fetching rows through a cursor, with memory bounded by Arrow's block size. JSON columns come
    as PostgreSQL's jsonb text (same values as the row path, keys in jsonb's order).
    """
    import threading

    import pyarrow.csv as pacsv

    compiled = query.compile(dialect=engine.dialect)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        select = cursor.mogrify(str(compiled), compiled.construct_params()).decode()
        # One backend formats every row of a COPY: parallel workers would only split the scan,
        # and on the export's cores their gather-merge competed with Arrow and Parquet (1M rows:
        # 6.6 s with two workers, 5.3 s without). JIT compiles for heavy expressions; ours are
        # a range test. Both settings end with this transaction.
        cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        cursor.execute("SET LOCAL jit = off")
        read_fd, write_fd = _pipe()
        failure: list[BaseException] = []

        def produce() -> None:
            try:
                with os.fdopen(write_fd, "wb") as sink:
                    cursor.copy_expert(f"COPY ({select}) TO STDOUT WITH (FORMAT csv)", sink)
            except BaseException as exc:  # reported by the consumer below
                failure.append(exc)

        producer = threading.Thread(target=produce, name="export-copy", daemon=True)
        producer.start()
        try:
            with os.fdopen(read_fd, "rb") as source:
                if not source.peek(1):
                    return  # no row in the window (Arrow refuses an empty CSV)
                reader = pacsv.open_csv(
                    source,
                    read_options=pacsv.ReadOptions(column_names=schema.names, block_size=1 << 22),
                    parse_options=pacsv.ParseOptions(newlines_in_values=True),
                    convert_options=pacsv.ConvertOptions(
                        column_types=schema,
                        strings_can_be_null=True,  # an unquoted empty field is NULL...
                        quoted_strings_can_be_null=False,  # ...a quoted one is ''
                        true_values=["t"],
                        false_values=["f"],
                    ),
                )
                yield from reader
        finally:
            producer.join()
        if failure:
            raise failure[0]
    finally:
        raw.rollback()
        raw.close()


# --- the export ---------------------------------------------------------------------------------


@dataclass
class ExportResult:
    location: str  # the folder or s3://bucket/prefix/ the files are in
    manifest: str = ""  # its path or s3:// URI
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # "dataset.fmt" -> entry
    row_counts: dict[str, int] = field(default_factory=dict)


def count_rows(engine: Engine, dataset: Dataset, start: date, end: date) -> int:
    query = sa.select(sa.func.count()).select_from(dataset.table)
    with engine.connect() as conn:
        return int(conn.execute(query.where(window_filter(dataset, start, end))).scalar_one())


def export_window(
    engine: Engine,
    destination: Destination,
    start: date,
    end: date,
    formats: Sequence[str] = FORMATS,
    compression: str = "none",
    progress: ExportProgress | None = None,
    kind: str = "adhoc",
    extra_manifest: dict[str, Any] | None = None,
) -> ExportResult:
    """Write the three datasets of [start, end], named for its last day, to ``destination``.

    What earlier exports left there when they died is removed first (``Destination.recover``).
    All files are written to staging first and published together, the manifest last: if any
    dataset fails, nothing of this run is published and the previous export stays as it was
    (see ``publish``). ``extra_manifest`` adds fields to the manifest (the quality report).
    A full disk, an unwritable folder or an S3 prefix out of reach raises ``ExportError``: one
    sentence naming the folder (or prefix) and the cause.
    """
    try:
        destination.recover()
        return _export_window(
            engine, destination, start, end, formats, compression, progress, kind, extra_manifest
        )
    except Exception as exc:
        filename = getattr(exc, "filename", None)
        in_staging = (
            filename is not None and destination.staging_root in Path(os.fsdecode(filename)).parents
        )
        where = str(destination.staging_root) if in_staging else destination.location
        error = export_error(exc, where)
        if error is None:
            raise
        raise error from exc


def _export_window(
    engine: Engine,
    destination: Destination,
    start: date,
    end: date,
    formats: Sequence[str],
    compression: str,
    progress: ExportProgress | None,
    kind: str,
    extra_manifest: dict[str, Any] | None,
) -> ExportResult:
    formats = tuple(dict.fromkeys(formats))
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; use some of {FORMATS}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r}; use one of {COMPRESSIONS}")
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    progress = progress or ExportProgress()
    stamp = end.strftime("%Y%m%d")
    result = ExportResult(location=destination.location)
    key_epoch = keyring.manifest_entry(engine)
    with destination.staging() as staging:
        staged: list[Path] = []
        for dataset in datasets():
            total = count_rows(engine, dataset, start, end) if progress.wants_totals else None
            progress.begin(dataset.name, total, "rows")
            writers = _Writers(staging, dataset, stamp, formats, compression)
            try:
                query = window_query(dataset, start, end)
                if engine.dialect.name == "postgresql":
                    refresh_statistics(engine, dataset.table)
                    for batch in read_batches_copy(engine, query, writers.schema):
                        writers.write_batch(batch)
                        progress.advance(batch.num_rows)
                        crash_point("export.write")
                else:
                    for rows in read_chunks(engine, query):
                        writers.write(rows)
                        progress.advance(len(rows))
                        crash_point("export.write")
                writers.close()
            except BaseException:
                writers.abort()
                raise
            progress.end()
            result.row_counts[dataset.name] = writers.rows
            for fmt, written in writers.paths.items():
                digest = sha256(written)
                path = written.rename(written.with_name(published_name(written.name, digest)))
                staged.append(path)
                result.files[f"{dataset.name}.{fmt}"] = {
                    "name": path.name,
                    "format": fmt,
                    "compression": compression if fmt != "parquet" else _parquet_codec(compression),
                    "rows": writers.rows,
                    "bytes": path.stat().st_size,
                    "sha256": digest,
                }
        manifest = {
            "kind": kind,
            "window": {"start": start.isoformat(), "end": end.isoformat()},
            "code_version": code_version(),
            "exported_at": settings.now().isoformat(),
            "row_counts": result.row_counts,
            "schema": {d.name: dataset_schema(d.table) for d in datasets()},
            "files": result.files,
            # Which hash space the files are in: hashes of different epochs never match.
            "anonymization_key": keyring.same_epoch(engine, key_epoch),
            **(extra_manifest or {}),
        }
        manifest_path = staging / f"manifest_{stamp}.json"
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        result.manifest = destination.publish(staged, manifest_path, progress)
    return result


def _parquet_codec(compression: str) -> str:
    return "gzip" if compression == "gzip" else "snappy"
