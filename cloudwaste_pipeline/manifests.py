"""Export manifests and the names they list: what a reader trusts, and how to check it.

A manifest (``manifest_<YYYYMMDD>.json``) is the commit record of an export: only the files it
lists belong to the export, each with its size and sha256. ``verify_export`` checks a manifest
against the files beside it (a local folder or an S3 prefix); ``orphans`` tells which export
files no manifest lists (a publish killed half-way). Published names carry a content id
(``ml_training_data_20261115_3fa9c2e1.parquet``), so two versions of a file never share a name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

CONTENT_ID_CHARS = 8
"""Hex characters of the sha256 in a published name: unique among the versions of one file."""
EXPORT_FILE = re.compile(
    r"(?!manifest_)[a-z]+(?:_[a-z]+)*_(?P<stamp>\d{8})(?:_[0-9a-f]{8})?\.(?:json|csv|parquet)(?:\.gz)?"
)
"""The names ``exports`` publishes (and the un-suffixed names of earlier versions): the only
files a sweep ever removes, so a folder shared with anything else loses nothing else."""
MANIFEST = re.compile(r"manifest_(?P<stamp>\d{8})\.json")


def _measure(blocks: Iterator[bytes]) -> tuple[int, str]:
    """Size and sha256 of a stream of blocks."""
    digest = hashlib.sha256()
    size = 0
    for block in blocks:
        digest.update(block)
        size += len(block)
    return size, digest.hexdigest()


def sha256(path: Path) -> str:
    """The file's sha256, read back from disk; the file is then flushed to it (``fsync``), so
    what a manifest lists is on disk before the manifest is."""
    with path.open("rb") as handle:
        _, digest = _measure(iter(lambda: handle.read(1 << 20), b""))
        os.fsync(handle.fileno())
    return digest


CONTENT_ID = re.compile(r"(?:(?<=_\d{8})|(?=_\d{0,7}[a-f]))_[0-9a-f]{8}$")
"""The content id ending a stem: eight hex characters after a ``_<YYYYMMDD>`` stamp, or, in a
name without a stamp, eight with a letter among them (eight digits alone are taken for a stamp,
so a stamp is never mistaken for an id; an all-digit id there is replaced the next time)."""


def published_name(name: str, digest: str) -> str:
    """``ml_training_data_20261115.json.gz`` -> ``ml_training_data_20261115_<sha8>.json.gz``;
    a name that already carries a content id gets the new one instead (a rewritten file), so
    names do not grow with each rewrite."""
    stem, dot, extension = name.partition(".")
    return f"{base_name(stem)}_{digest[:CONTENT_ID_CHARS]}{dot}{extension}"


def base_name(name: str) -> str:
    """The name without its content id: the same for every version of one file
    (``ml_training_data_20261115_3fa9c2e1.csv`` -> ``ml_training_data_20261115.csv``)."""
    stem, dot, extension = name.partition(".")
    return f"{CONTENT_ID.sub('', stem)}{dot}{extension}"


def listed_names(manifest: dict[str, Any]) -> set[str]:
    """The file names a manifest lists (``name``; ``path`` in the earliest manifests)."""
    files = manifest.get("files")
    if not isinstance(files, dict):
        return set()
    entries = [e for e in files.values() if isinstance(e, dict)]
    return {Path(str(n)).name for e in entries if (n := e.get("name") or e.get("path"))}


def orphans(names: list[str], manifests: dict[str, set[str] | None]) -> list[str]:
    """Export files of ``names`` that the manifest of their window (``manifests`` by stamp; None
    when it could not be read, so nothing of its window is touched) does not list."""
    found = []
    for name in names:
        match = EXPORT_FILE.fullmatch(name)
        if match is None:
            continue
        listed = manifests.get(match["stamp"], set())
        if listed is not None and name not in listed:
            found.append(name)
    return sorted(found)


def manifest_stamp(manifest_name: str) -> str:
    match = MANIFEST.fullmatch(manifest_name)
    if match is None:
        raise ValueError(f"{manifest_name!r} is not a manifest name (manifest_YYYYMMDD.json)")
    return match["stamp"]


# --- verification -------------------------------------------------------------------------------


def verify_export(manifest: str | Path, client: Any = None) -> list[str]:
    """What is wrong with the export a manifest describes (a path, or an ``s3://`` URI read
    with ``client``, boto3's default when None); an empty list when a reader can trust it. A
    local folder stands for its manifests (every one of them verified).

    Every listed file must be a plain name in the manifest's folder, be there, and have the
    listed size and sha256; the formats of one dataset must hold the same number of rows.
    Problems name files and counts only, never a row's values."""
    text = str(manifest)
    if not text.startswith("s3://") and Path(text).is_dir():
        found = sorted(p for p in Path(text).glob("manifest_*.json") if MANIFEST.fullmatch(p.name))
        if not found:
            return [f"{text}: no manifest"]
        return [problem for path in found for problem in verify_export(path)]
    read_manifest, measure = _reader(text, client)
    try:
        document = json.loads(read_manifest())
    except FileNotFoundError:
        return [f"{text}: no manifest"]
    except Exception as exc:  # a missing object, bad JSON...: untrusted
        return [f"{text}: unreadable manifest ({type(exc).__name__})"]
    files = document.get("files") if isinstance(document, dict) else None
    if not isinstance(files, dict) or not files:
        return [f"{text}: the manifest lists no files"]
    problems: list[str] = []
    rows: dict[str, set[Any]] = {}
    for key_name, entry in sorted(files.items()):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            problems.append(f"{key_name}: not a file name in the manifest's folder")
            continue
        rows.setdefault(key_name.rsplit(".", 1)[0], set()).add(entry.get("rows"))
        found = measure(name)
        if found is None:
            problems.append(f"{name}: listed but missing")
        elif found[0] != entry.get("bytes"):
            problems.append(f"{name}: {found[0]} bytes, the manifest says {entry.get('bytes')}")
        elif found[1] != entry.get("sha256"):
            problems.append(f"{name}: sha256 differs from the manifest")
    counts = document.get("row_counts", {})
    for dataset, seen in sorted(rows.items()):
        if len(seen) > 1 or (dataset in counts and seen != {counts[dataset]}):
            problems.append(f"{dataset}: its files disagree on the number of rows")
    return problems


Measure = Callable[[str], tuple[int, str] | None]


def _reader(manifest: str, client: Any) -> tuple[Callable[[], bytes], Measure]:
    """How to read the manifest, and to measure (size, sha256) a file beside it."""
    if not manifest.startswith("s3://"):
        path = Path(manifest)
        return path.read_bytes, lambda name: _local_measure(path.parent / name)
    bucket, _, key = manifest[len("s3://") :].partition("/")
    s3 = client or _default_s3_client()
    folder = key[: key.rfind("/") + 1]

    def read() -> bytes:
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            raise FileNotFoundError(manifest) from None

    return read, lambda name: _s3_measure(s3, bucket, folder + name)


def _local_measure(path: Path) -> tuple[int, str] | None:
    if not path.is_file() or path.is_symlink():
        return None
    with path.open("rb") as handle:
        return _measure(iter(lambda: handle.read(1 << 20), b""))


def _s3_measure(client: Any, bucket: str, key: str) -> tuple[int, str] | None:
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
    except client.exceptions.NoSuchKey:
        return None
    return _measure(body.iter_chunks(1 << 20))


def _default_s3_client() -> Any:
    import boto3

    return boto3.client("s3")
