"""The export files that hold an erased subject: searched in the local exports folder and under
the S3 exports prefix, from the export manifests (see ``privacy/erasure.py`` for when).

Per exported dataset, the Parquet file's hash columns alone are read (columnar, cheap), else the
CSV or JSON file is scanned for the subject's hashes as bytes (a 64-hex HMAC cannot occur by
chance). Every format of a dataset holds the same rows, so a hit lists them all.
"""

from __future__ import annotations

import gzip
import json
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow.parquet as pq

HASH_COLUMNS = ("account_hash", "user_hash")
"""The exported columns that can name a subject."""


def _holds(name: str, stream: BinaryIO, hashes: set[str]) -> bool:
    """Whether one exported file holds one of ``hashes``: Parquet by its hash columns alone
    (``stream`` must then be seekable), any other format (gzipped or not) by a streamed byte
    search, with an overlap so that a hash split across two blocks is still seen."""
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


def _by_dataset(manifest: dict[str, Any]) -> dict[str, list[str]]:
    """The file names a manifest lists, per dataset, the one to search first."""
    by_dataset: dict[str, list[str]] = {}
    for name, entry in manifest.get("files", {}).items():
        # ``name`` in the current manifests, ``path`` (a file name too) in earlier ones.
        file_name = Path(str(entry.get("name") or entry.get("path", ""))).name
        if file_name:
            by_dataset.setdefault(name.rsplit(".", 1)[0], []).append(file_name)
    order = {"parquet": 0, "csv": 1, "json": 2}
    return {
        dataset: sorted(names, key=lambda n: (order.get(n.split(".")[1], 3), n))
        for dataset, names in by_dataset.items()
    }


def exported_files(exports_dir: Path, hashes: Iterable[str]) -> list[str]:
    """Files listed by the manifests under ``exports_dir`` that hold one of ``hashes``.

    One format per dataset is searched (Parquet first: only its hash columns are read); all the
    dataset's files are reported, since every format holds the same rows.
    """
    wanted = set(hashes)
    if not wanted or not exports_dir.exists():
        return []
    hits: list[str] = []
    for manifest in sorted(exports_dir.rglob("manifest_*.json")):
        for names in _by_dataset(json.loads(manifest.read_text())).values():
            paths = [manifest.parent / n for n in names if (manifest.parent / n).exists()]
            if not paths:
                continue
            with paths[0].open("rb") as handle:
                if _holds(paths[0].name, handle, wanted):
                    hits.extend(str(p) for p in sorted(paths))
    return hits


def exported_objects(client: Any, bucket: str, prefix: str, hashes: Iterable[str]) -> list[str]:
    """``s3://`` URIs of the objects listed by the manifests under ``prefix`` that hold one of
    ``hashes``: the same search as ``exported_files``, on exports published to S3.

    One ``list_objects_v2`` listing (paginated) finds the manifests and tells which of the
    files they list still exist. A Parquet object is downloaded to a temporary file (its footer
    and hash columns need random access); the others are searched as they stream in, so memory
    stays flat whatever the export's size.
    """
    wanted = set(hashes)
    if not wanted:
        return []
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = {obj["Key"] for page in pages for obj in page.get("Contents", [])}
    manifests = sorted(
        k for k in keys if re.fullmatch(r"manifest_[^/]*\.json", k.rsplit("/", 1)[-1])
    )
    hits: list[str] = []
    for manifest_key in manifests:
        folder = manifest_key[: manifest_key.rfind("/") + 1]
        body = client.get_object(Bucket=bucket, Key=manifest_key)["Body"].read()
        for names in _by_dataset(json.loads(body)).values():
            present = [n for n in names if folder + n in keys]
            if present and _s3_holds(client, bucket, folder + present[0], wanted):
                hits.extend(f"s3://{bucket}/{folder}{n}" for n in sorted(present))
    return hits


def _s3_holds(client: Any, bucket: str, key: str, hashes: set[str]) -> bool:
    if key.endswith(".parquet"):
        with tempfile.TemporaryFile() as handle:
            client.download_fileobj(bucket, key, handle)
            handle.seek(0)
            return _holds(key, handle, hashes)  # type: ignore[arg-type]
    return _holds(key, client.get_object(Bucket=bucket, Key=key)["Body"], hashes)
