"""Dataset exports: the three datasets of the usage guide, streamed, in JSON, CSV and Parquet.

Rows are read from the warehouse in chunks and written incrementally, so memory stays flat as the
tables grow. Files are written under temporary names and renamed into place only once complete:
a failed export leaves no partial file, and a re-run of the same window replaces its files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloudwaste_pipeline.warehouse import schema

FORMATS = ("json", "csv", "parquet")
CHUNK_ROWS = 50_000
CODE_VERSION = "0.1.0"


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


@dataclass
class ExportResult:
    folder: Path
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    row_counts: dict[str, int] = field(default_factory=dict)
    manifest: Path | None = None


def window_filter(dataset: Dataset, start: date, end: date) -> sa.ColumnElement[bool]:
    """Rows of [start, end] inclusive; cost trends by the months the window touches."""
    column = dataset.table.c[dataset.window_column]
    if dataset.window_column == "month":
        return sa.and_(column >= start.strftime("%Y-%m"), column <= end.strftime("%Y-%m"))
    return sa.and_(
        column >= datetime.combine(start, datetime.min.time()),
        column < datetime.combine(end + timedelta(days=1), datetime.min.time()),
    )


def read_chunks(engine: Engine, query: sa.Select[Any]) -> Iterator[pd.DataFrame]:
    """Server-side cursor on PostgreSQL (stream_results), plain fetchmany on SQLite."""
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(query)
        columns = list(result.keys())
        for partition in result.partitions(CHUNK_ROWS):
            yield pd.DataFrame([tuple(r) for r in partition], columns=columns)


def flat(value: Any) -> Any:
    """JSON columns become JSON text in CSV and Parquet (one schema however nested)."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, float) and value != value:
        return None
    return value


class _Writers:
    """The three writers of one dataset, fed chunk by chunk."""

    def __init__(self, stem: Path, formats: tuple[str, ...]) -> None:
        self.paths = {fmt: stem.with_name(f"{stem.name}.{fmt}") for fmt in formats}
        self.temp = {fmt: p.with_name(f".{p.name}.partial") for fmt, p in self.paths.items()}
        self.json = self.temp["json"].open("w") if "json" in formats else None
        self.csv_file = self.temp["csv"].open("w", newline="") if "csv" in formats else None
        self.csv: Any = None
        self.parquet: pq.ParquetWriter | None = None
        self.parquet_schema: pa.Schema | None = None
        self.rows = 0
        if self.json:
            self.json.write("[")

    def write(self, chunk: pd.DataFrame) -> None:
        records = chunk.to_dict("records")
        if self.json:
            for record in records:
                self.json.write(",\n" if self.rows else "\n")
                self.json.write(json.dumps({k: json_value(v) for k, v in record.items()}))
                self.rows += 1
        else:
            self.rows += len(records)
        flat_chunk = chunk.apply(lambda col: col.map(flat)) if not chunk.empty else chunk
        if self.csv_file:
            if self.csv is None:
                self.csv = csv.writer(self.csv_file)
                self.csv.writerow(chunk.columns)
            self.csv.writerows(
                flat_chunk.astype(object).where(flat_chunk.notna(), None).itertuples(index=False)
            )
        if "parquet" in self.temp:
            table = pa.Table.from_pandas(flat_chunk.astype(object), preserve_index=False)
            if self.parquet is None:
                self.parquet_schema = table.schema
                self.parquet = pq.ParquetWriter(self.temp["parquet"], table.schema)
            self.parquet.write_table(table.cast(self.parquet_schema))

    def close(self, columns: list[str]) -> None:
        if self.json:
            self.json.write("\n]\n" if self.rows else "]\n")
            self.json.close()
        if self.csv_file:
            if self.csv is None:
                csv.writer(self.csv_file).writerow(columns)
            self.csv_file.close()
        if "parquet" in self.temp:
            if self.parquet is None:
                empty = pa.schema([(c, pa.string()) for c in columns])
                pq.ParquetWriter(self.temp["parquet"], empty).close()
            else:
                self.parquet.close()

    def abort(self) -> None:
        for handle in (self.json, self.csv_file):
            if handle and not handle.closed:
                handle.close()
        if self.parquet is not None:
            self.parquet.close()
        for path in self.temp.values():
            path.unlink(missing_ok=True)

    def commit(self) -> dict[str, Path]:
        for fmt, temp in self.temp.items():
            os.replace(temp, self.paths[fmt])
        return self.paths


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_window(
    engine: Engine,
    folder: Path,
    start: date,
    end: date,
    formats: tuple[str, ...] = FORMATS,
) -> ExportResult:
    """Write the three datasets of [start, end] under ``folder``, named for its last day."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown export format(s) {sorted(unknown)}; use {FORMATS}")
    folder.mkdir(parents=True, exist_ok=True)
    result = ExportResult(folder=folder)
    stamp = end.strftime("%Y%m%d")
    for dataset in datasets():
        columns = [c.name for c in dataset.table.columns]
        query = (
            sa.select(dataset.table)
            .where(window_filter(dataset, start, end))
            .order_by(dataset.table.c[dataset.window_column], dataset.table.c.id)
        )
        writers = _Writers(folder / f"{dataset.name}_{stamp}", formats)
        try:
            for chunk in read_chunks(engine, query):
                writers.write(chunk)
            writers.close(columns)
        except BaseException:
            writers.abort()
            raise
        paths = writers.commit()
        result.row_counts[dataset.name] = writers.rows
        for fmt, path in paths.items():
            result.files[f"{dataset.name}.{fmt}"] = {
                "path": str(path),
                "bytes": path.stat().st_size,
                "sha256": sha256(path),
                "rows": writers.rows,
            }
    manifest = {
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "code_version": CODE_VERSION,
        "row_counts": result.row_counts,
        "schema": {d.name: [c.name for c in d.table.columns] for d in datasets()},
        "files": {k: {**v, "path": Path(v["path"]).name} for k, v in result.files.items()},
    }
    manifest_path = folder / f"manifest_{stamp}.json"
    temp = manifest_path.with_name(f".{manifest_path.name}.partial")
    temp.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(temp, manifest_path)
    result.manifest = manifest_path
    return result
