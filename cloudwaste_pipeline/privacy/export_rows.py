"""The rows of one exported file that name an erased subject: found, and filtered out.

Every format the exporter writes (``exports.py``) is handled as it writes it, streamed so memory
stays flat whatever the file's size: Parquet batch by batch in its own schema and codec, CSV row
by row in the writer's dialect, JSON in the exporter's layout (one record per line, kept as its
original text), text formats gzipped with a zero mtime as the exporter does. Kept rows come out
as they went in, so the only difference a rewrite makes is the rows removed.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

HASH_COLUMNS = ("account_hash", "user_hash")
"""The exported columns that can name a subject."""

FORMATS = ("parquet", "csv", "json")
KINDS = ("account", "user")


class Unrewritable(ValueError):
    """A file this module cannot rewrite faithfully (unknown format, unexpected layout)."""


@dataclass(frozen=True)
class Wanted:
    """The erased subjects' hashes, per exported column that can hold them."""

    accounts: frozenset[str]
    users: frozenset[str]

    @classmethod
    def of(cls, subjects: list[dict[str, str]]) -> Wanted:
        """From the report's subjects (``kind``, ``hash``)."""
        by_kind = {k: frozenset(s["hash"] for s in subjects if s["kind"] == k) for k in KINDS}
        return cls(by_kind["account"], by_kind["user"])

    @property
    def hashes(self) -> frozenset[str]:
        return self.accounts | self.users

    def by_column(self) -> dict[str, frozenset[str]]:
        return {"account_hash": self.accounts, "user_hash": self.users}

    def names(self, row: Mapping[str, Any]) -> bool:
        return any(row.get(c) in hashes for c, hashes in self.by_column().items() if hashes)


def file_format(name: str) -> tuple[str, bool]:
    """(format, gzipped) from an export file's name (``x.parquet``, ``x.csv``, ``x.json.gz``)."""
    stem, gzipped = (name[: -len(".gz")], True) if name.endswith(".gz") else (name, False)
    fmt = stem.rsplit(".", 1)[-1] if "." in stem else ""
    if fmt not in FORMATS or (fmt == "parquet" and gzipped):
        raise Unrewritable(f"unknown export format of {name}")
    return fmt, gzipped


def holds(path: Path, wanted: Wanted) -> bool:
    """Whether a file holds one of the hashes: Parquet by its hash columns alone (cheap), any
    other file (gzipped or not, whatever its format) by a streamed byte search, with an overlap
    so a hash split across two blocks is still seen (a 64-hex HMAC cannot occur by chance)."""
    with path.open("rb") as handle:
        return stream_holds(path.name, handle, wanted.hashes)


def stream_holds(name: str, stream: BinaryIO, hashes: frozenset[str] | set[str]) -> bool:
    """``holds`` on an open stream (seekable for Parquet)."""
    import pyarrow.parquet as pq

    if not hashes:
        return False
    if name.endswith(".parquet"):
        parquet = pq.ParquetFile(stream)
        columns = [c for c in HASH_COLUMNS if c in parquet.schema_arrow.names]
        if not columns:
            return False
        table = parquet.read(columns=columns)
        return any(bool(set(table.column(c).to_pylist()) & hashes) for c in columns)
    if name.endswith(".gz"):
        stream = gzip.GzipFile(fileobj=stream)  # type: ignore[assignment]
    needles = [h.encode() for h in hashes]
    overlap = max(len(n) for n in needles) - 1
    tail = b""
    for block in iter(lambda: stream.read(1 << 20), b""):
        window = tail + block
        if any(n in window for n in needles):
            return True
        tail = window[-overlap:]
    return False


def rewrite(source: Path, target: Path, wanted: Wanted) -> tuple[int, int]:
    """Write ``source`` to ``target`` without the rows that name a subject, in the same format,
    compression and layout. Returns (rows kept, rows removed)."""
    fmt, gzipped = file_format(source.name)
    if fmt == "parquet":
        return _rewrite_parquet(source, target, wanted)
    with _text_source(source, gzipped) as reader, _text_sink(target, gzipped) as writer:
        if fmt == "csv":
            return _rewrite_csv(reader, writer, wanted)
        return _rewrite_json(reader, writer, wanted)


def _rewrite_parquet(source: Path, target: Path, wanted: Wanted) -> tuple[int, int]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(source)
    schema = parquet.schema_arrow
    metadata = parquet.metadata
    codec = "snappy"  # the exporter's default, for a file without a row group to tell
    if metadata.num_row_groups and metadata.num_columns:
        codec = metadata.row_group(0).column(0).compression.lower()
    codec = "none" if codec == "uncompressed" else codec
    columns = {c: h for c, h in wanted.by_column().items() if h and c in schema.names}
    kept = removed = 0
    with pq.ParquetWriter(target, schema, compression=codec) as writer:
        for batch in parquet.iter_batches():
            named = pa.array([False] * batch.num_rows)
            for column, hashes in columns.items():
                found = pc.is_in(batch.column(column), value_set=pa.array(sorted(hashes)))
                named = pc.or_(named, pc.fill_null(found, False))
            left = batch.filter(pc.invert(named))
            kept, removed = kept + left.num_rows, removed + batch.num_rows - left.num_rows
            if left.num_rows:
                writer.write_batch(left)
    return kept, removed


def _rewrite_csv(reader: IO[str], writer: IO[str], wanted: Wanted) -> tuple[int, int]:
    rows = csv.reader(reader)
    out = csv.writer(writer)  # the exporter's dialect: excel, "\r\n"
    header = next(rows, None)
    if header is None:
        raise Unrewritable("a CSV export without its header row")
    out.writerow(header)
    columns = {header.index(c): h for c, h in wanted.by_column().items() if h and c in header}
    kept = removed = 0
    for row in rows:
        if any(i < len(row) and row[i] in hashes for i, hashes in columns.items()):
            removed += 1
        else:
            out.writerow(row)
            kept += 1
    return kept, removed


def _rewrite_json(reader: IO[str], writer: IO[str], wanted: Wanted) -> tuple[int, int]:
    """The exporter's layout: ``[``, then one record per line (``,`` between), then ``]``;
    ``[]`` when empty. Records are kept as their original text."""
    first = reader.readline()
    if first.strip() not in ("[", "[]"):
        raise Unrewritable("a JSON export not in the exporter's one-record-per-line layout")
    kept = removed = 0
    writer.write("[")
    for line in _json_records(reader) if first.strip() == "[" else iter(()):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise Unrewritable("a JSON export line that is not one record") from None
        if not isinstance(record, dict):
            raise Unrewritable("a JSON export line that is not one record")
        if wanted.names(record):
            removed += 1
            continue
        writer.write(",\n" if kept else "\n")
        writer.write(line)
        kept += 1
    writer.write("\n]\n" if kept else "]\n")
    return kept, removed


def _json_records(reader: IO[str]) -> Iterator[str]:
    for raw in reader:
        line = raw.rstrip("\r\n")
        if line == "]":
            if reader.read().strip():
                raise Unrewritable("text after the end of a JSON export")
            return
        yield line[:-1] if line.endswith(",") else line
    raise Unrewritable("a JSON export cut short (no closing bracket)")


@contextlib.contextmanager
def _text_source(path: Path, gzipped: bool) -> Iterator[IO[str]]:
    with path.open("rb") as handle:
        raw = gzip.GzipFile(fileobj=handle, mode="rb") if gzipped else handle
        with io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:  # type: ignore[arg-type]
            yield text


@contextlib.contextmanager
def _text_sink(path: Path, gzipped: bool) -> Iterator[IO[str]]:
    """As the exporter writes text: gzip with a zero mtime, so the same rows give the same
    sha256 whenever they are written."""
    with path.open("wb") as handle:
        raw = gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0) if gzipped else handle
        with io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:  # type: ignore[arg-type]
            yield text


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
