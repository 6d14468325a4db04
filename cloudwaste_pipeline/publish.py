"""Publishing an export: files staged aside, then made visible at once, the manifest the commit
(what a manifest is and how a reader checks one: ``manifests``).

What a reader can rely on, in a local folder or under an S3 prefix alike:

- **Only what a manifest lists is an export**, and ``verify_export`` says whether every file it
  lists is there with its size and sha256. Anything else in the folder is not to be trusted.
- **The previous export stays valid until the new manifest lands.** A published file's name
  carries the first characters of its sha256 (``ml_training_data_20261115_3fa9c2e1.parquet``),
  so a new export never overwrites a file the current manifest lists. The new files are put in
  place first; the manifest is replaced last, in one atomic step (``os.replace``, one S3 PUT);
  then the files no manifest lists any more are removed. Same rows, same bytes, same names: a
  re-run of an unchanged window changes nothing.
- **A dead export leaves nothing a later run keeps.** Each staging folder is locked
  (``flock`` on the folder itself) by the process writing it; the kernel drops the lock however
  that process dies, so ``sweep_staging`` removes exactly the staging folders nobody holds, at
  once, with no age threshold that would either delete a slow live export or keep an erased
  account's rows for hours. ``sweep_orphans`` removes published files that no manifest lists (a
  publish killed half-way). Both run at the start of every export to the folder; the erasure
  calls them too.
- Publishes into one local folder are serialised by a lock on the folder, so a sweep never
  removes a live publish's files. S3 has no such lock: there, after the new manifest is in
  place, the objects of its window it does not list and that are no newer than it are removed
  (one export at a time is the run queue's job: ``cloudwaste/export`` is limited to 1).
- Disk full, a read-only or unwritable folder end in ``ExportError``: one sentence naming the
  folder and the cause; staging is removed and the previous export is left as it was.

No Dagster import here, and nothing specific to the datasets: ``exports`` builds the files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cloudwaste_pipeline.errors import CloudWasteError
from cloudwaste_pipeline.faults import crash_point
from cloudwaste_pipeline.manifests import (
    EXPORT_FILE,
    MANIFEST,
    listed_names,
    manifest_stamp,
    orphans,
)

log = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"


class ExportError(CloudWasteError):
    """An export could not be written (disk full, no permission...): nothing was published."""


CAUSES = {
    errno.ENOSPC: "no space is left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EFBIG: "a file grew beyond what the file system allows",
    errno.EACCES: "permission is denied",
    errno.EPERM: "the operation is not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EIO: "the device reported an input/output error",
}
"""The OS errors an operator fixes on the destination; anything else is a bug and propagates."""
S3_CAUSES = {
    "AccessDenied": "S3 denies access",
    "AllAccessDisabled": "S3 denies access",
    "NoSuchBucket": "the bucket does not exist",
    "InvalidAccessKeyId": "S3 does not know the access key",
    "SignatureDoesNotMatch": "S3 rejects the secret key",
    "ExpiredToken": "the AWS credentials have expired",
    "NoCredentialsError": "no AWS credentials were found",
    "EndpointConnectionError": "the S3 endpoint cannot be reached",
}
"""The same for S3: error codes of a ``ClientError``, or botocore's exception class names."""


def export_error(exc: Exception, where: str) -> ExportError | None:
    """The sentence for a destination's error, or None when it is not one an operator fixes."""
    if isinstance(exc, OSError):
        cause = CAUSES.get(exc.errno or 0)
    else:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        cause = S3_CAUSES.get(code or type(exc).__name__)
    return ExportError(f"cannot write the export to {where}: {cause}") if cause else None


class Progress(Protocol):
    def begin(self, label: str, total: int | None, unit: str) -> None: ...
    def advance(self, amount: int) -> None: ...
    def end(self) -> None: ...


# --- locks and sweeps (local) -------------------------------------------------------------------


@contextlib.contextmanager
def folder_lock(folder: Path, wait: bool = True) -> Iterator[bool]:
    """An exclusive ``flock`` on the folder itself (no lock file to leave behind); yields
    whether it was taken (always, when ``wait``). Held by staging folders for their writer's
    life, and by an export folder while files are published into or swept from it."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _remove_if_dead(staging: Path) -> bool:
    """Remove a staging folder when no live export holds its lock."""
    if staging.is_symlink() or not staging.is_dir():
        return False  # not one of ours: staging folders are never links
    try:
        with folder_lock(staging, wait=False) as free:
            if free:
                shutil.rmtree(staging)
            return free
    except FileNotFoundError:
        return False  # removed meanwhile by its writer


def sweep_staging(root: Path) -> int:
    """Remove the staging folders under ``root`` (at any depth) that no live export is writing:
    what a killed export left, which may hold an erased subject's hashes. Returns how many."""
    removed = 0
    for folder, subfolders, _ in os.walk(root):
        stale = sorted(d for d in subfolders if d.startswith(STAGING_PREFIX))
        subfolders[:] = [d for d in subfolders if not d.startswith(STAGING_PREFIX)]
        if stale:
            with folder_lock(Path(folder)):
                removed += sum(_remove_if_dead(Path(folder) / d) for d in stale)
    return removed


def _local_manifests(folder: Path) -> dict[str, set[str] | None]:
    manifests: dict[str, set[str] | None] = {}
    for path in folder.glob("manifest_*.json"):
        match = MANIFEST.fullmatch(path.name)
        if match:
            try:
                manifests[match["stamp"]] = listed_names(json.loads(path.read_text()))
            except (OSError, ValueError):
                manifests[match["stamp"]] = None
    return manifests


def _remove_orphans_in(folder: Path) -> int:
    """Under the folder's lock: remove the export files its manifests do not list."""
    names = [p.name for p in folder.iterdir() if p.is_file() and not p.is_symlink()]
    found = orphans(names, _local_manifests(folder))
    for name in found:
        (folder / name).unlink(missing_ok=True)
    return len(found)


def sweep_orphans(root: Path) -> int:
    """Remove, under ``root`` (at any depth), the export files that no manifest lists: the new
    files of a publish killed before its manifest, the old ones of one killed right after it.
    Each folder is locked meanwhile, so a live publish is never cut short. Returns how many."""
    removed = 0
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if not d.startswith(STAGING_PREFIX)]
        if any(EXPORT_FILE.fullmatch(f) for f in files):
            with folder_lock(Path(folder)):
                removed += _remove_orphans_in(Path(folder))
    return removed


@contextlib.contextmanager
def staging_folder(root: Path) -> Iterator[Path]:
    """A new staging folder in ``root``, locked until it is removed on the way out.

    Created and locked while ``root`` is locked, so a sweep cannot take it in between."""
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        with folder_lock(root):
            path = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
            held.enter_context(folder_lock(path))
            held.callback(shutil.rmtree, path, ignore_errors=True)  # runs before the lock goes
        yield path


def _fsync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (the new files before the manifest names them)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- destinations -------------------------------------------------------------------------------


class Destination(Protocol):
    """Where an export is published: a local folder or an S3 prefix."""

    location: str
    staging_root: Path  # the local folder staging lives in (for messages and sweeps)

    def recover(self) -> int:
        """Remove what dead exports left here; return how many folders and files."""
        ...

    def staging(self) -> contextlib.AbstractContextManager[Path]:
        """A local folder for the files while they are written; removed afterwards."""
        ...

    def publish(self, files: list[Path], manifest: Path, progress: Progress) -> str:
        """Put the complete files in place, the manifest last; return the manifest's location."""
        ...


@dataclass
class LocalDestination:
    """A folder. Staging is a hidden folder inside it (same file system), so publishing is one
    ``os.replace`` per file: a reader sees a whole file or none of it."""

    folder: Path

    @property
    def location(self) -> str:
        return str(self.folder)

    @property
    def staging_root(self) -> Path:
        return self.folder

    def recover(self) -> int:
        if not self.folder.is_dir():
            return 0
        return sweep_staging(self.folder) + sweep_orphans(self.folder)

    def staging(self) -> contextlib.AbstractContextManager[Path]:
        return staging_folder(self.folder)

    def publish(self, files: list[Path], manifest: Path, progress: Progress) -> str:
        target = self.folder / manifest.name
        with folder_lock(self.folder):
            current = _local_manifests(self.folder).get(manifest_stamp(manifest.name)) or set()
            placed: list[Path] = []
            try:
                for path in files:
                    os.replace(path, self.folder / path.name)
                    if path.name not in current:
                        placed.append(self.folder / path.name)
                    crash_point("export.publish")
                _fsync_folder(self.folder)
                os.replace(manifest, target)  # the commit
            except BaseException:
                for path in placed:  # the current manifest lists none of them
                    with contextlib.suppress(OSError):
                        path.unlink(missing_ok=True)
                raise
            crash_point("export.committed")
            try:  # committed: what is left here, the next run's sweep removes
                _fsync_folder(self.folder)
                _remove_orphans_in(self.folder)
            except OSError as exc:
                log.warning("export published to %s; old files not removed: %s", self.folder, exc)
        return str(target)


def s3_staging_root() -> Path:
    """Where S3 exports are staged: one folder per user in the temporary folder, so a sweep
    finds what a killed S3 export left there."""
    return Path(tempfile.gettempdir()) / f"cloudwaste-export-staging-{os.getuid()}"


@dataclass
class S3Destination:
    """An S3 prefix. Files are staged in a local folder, then uploaded with ``upload_file``
    (multipart for large files: S3 shows an object only once its upload is complete), the
    manifest last; objects of the window the new manifest does not list are deleted after it."""

    client: Any
    bucket: str
    prefix: str  # "" or ending with "/"
    staging_root: Path = field(default_factory=s3_staging_root)

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def recover(self) -> int:
        return sweep_staging(self.staging_root) if self.staging_root.is_dir() else 0

    def staging(self) -> contextlib.AbstractContextManager[Path]:
        return staging_folder(self.staging_root)

    def _objects(self) -> dict[str, Any]:
        """This prefix's objects (not those of deeper prefixes): name -> LastModified."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"
        )
        return {
            o["Key"][len(self.prefix) :]: o["LastModified"]
            for page in pages
            for o in page.get("Contents", [])
        }

    def _listed(self, key: str) -> set[str]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return set()
        try:
            return listed_names(json.loads(body))
        except ValueError:
            return set()

    def publish(self, files: list[Path], manifest: Path, progress: Progress) -> str:
        manifest_key = self.prefix + manifest.name
        current = self._listed(manifest_key)
        uploaded: list[str] = []
        try:
            for path in files:
                key = self.prefix + path.name
                progress.begin(f"upload {path.name}", path.stat().st_size, "B")
                self.client.upload_file(str(path), self.bucket, key, Callback=progress.advance)
                progress.end()
                if path.name not in current:
                    uploaded.append(key)
                crash_point("export.publish")
            self.client.upload_file(str(manifest), self.bucket, manifest_key)  # the commit
        except BaseException:
            for key in uploaded:  # the current manifest lists none of them
                with contextlib.suppress(Exception):
                    self.client.delete_object(Bucket=self.bucket, Key=key)
            raise
        crash_point("export.committed")
        try:
            self._remove_orphans(manifest.name, {p.name for p in files})
        except Exception as exc:  # committed: the next publish removes them
            log.warning("export published to %s; old objects not removed: %s", self.location, exc)
        return f"s3://{self.bucket}/{manifest_key}"

    def _remove_orphans(self, manifest_name: str, listed: set[str]) -> None:
        """Delete the window's objects the new manifest does not list and that are no newer
        than it (a newer one belongs to a publish still running)."""
        objects = self._objects()
        committed_at = objects.get(manifest_name)
        stamp = manifest_stamp(manifest_name)
        window = [n for n in objects if (m := EXPORT_FILE.fullmatch(n)) and m["stamp"] == stamp]
        for name in orphans(window, {stamp: listed}):
            if committed_at is None or objects[name] <= committed_at:
                self.client.delete_object(Bucket=self.bucket, Key=self.prefix + name)
