"""Where exports are, for erasure: a local folder or an S3 prefix behind one small interface.

Reads give a local path (the file itself, or a download); a rewrite is written to a scratch file
and installed whole (``os.replace`` in the same folder, or one PUT), so a reader sees the old
file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

SCRATCH_PREFIX = ".erasure-tmp-"


def listed_name(entry: dict[str, Any]) -> str:
    """The file name a manifest entry lists: ``name`` now, ``path`` in earlier manifests."""
    return Path(str(entry.get("name") or entry.get("path") or "")).name


class Folder(Protocol):
    """One export folder: a local directory or an S3 prefix."""

    label: str  # the path or s3:// URI of the folder, ending with "/"
    names: set[str]  # the files in it

    def read(self, name: str) -> bytes: ...

    def local(self, name: str) -> contextlib.AbstractContextManager[Path]:
        """A readable local copy of ``name`` (the file itself, or a download)."""
        ...

    def scratch(self, name: str) -> Path:
        """Where a rewrite of ``name`` is written before ``install``."""
        ...

    def install(self, scratch: Path, name: str) -> None: ...

    def put(self, name: str, data: bytes) -> None:
        """Write ``name`` whole, atomically."""
        ...

    def remove(self, name: str) -> None: ...


@dataclass
class LocalFolder:
    path: Path
    names: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.names = {p.name for p in self.path.iterdir() if p.is_file() and not p.is_symlink()}

    @property
    def label(self) -> str:
        return f"{self.path}/"

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    @contextlib.contextmanager
    def local(self, name: str) -> Iterator[Path]:
        yield self.path / name

    def scratch(self, name: str) -> Path:
        return self.path / f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:12]}-{name}"

    def install(self, scratch: Path, name: str) -> None:
        _fsync(scratch)
        os.replace(scratch, self.path / name)

    def put(self, name: str, data: bytes) -> None:
        scratch = self.scratch(name)
        try:
            scratch.write_bytes(data)
            self.install(scratch, name)
        finally:
            scratch.unlink(missing_ok=True)
        self.names.add(name)

    def remove(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)
        self.names.discard(name)


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


@dataclass
class S3Folder:
    """An S3 prefix; downloads and rewrites go through a local temporary folder."""

    client: Any
    bucket: str
    prefix: str
    names: set[str]
    work: Path

    @property
    def label(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def read(self, name: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()

    @contextlib.contextmanager
    def local(self, name: str) -> Iterator[Path]:
        path = self.work / f"download-{uuid.uuid4().hex[:12]}-{name}"
        try:
            self.client.download_file(self.bucket, self.prefix + name, str(path))
            yield path
        finally:
            path.unlink(missing_ok=True)

    def scratch(self, name: str) -> Path:
        return self.work / f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:12]}-{name}"

    def install(self, scratch: Path, name: str) -> None:
        self.client.upload_file(str(scratch), self.bucket, self.prefix + name)

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data)
        self.names.add(name)

    def remove(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + name)
        self.names.discard(name)
