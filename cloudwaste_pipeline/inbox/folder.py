"""The drop folder: complete regular files only, never a link, never an overwrite."""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Engine

from cloudwaste_pipeline.faults import crash_point
from cloudwaste_pipeline.inbox.ingest import (
    MAX_FILE_BYTES,
    IngestReport,
    content_digest,
    error_code,
    ingest_bytes,
)

logger = logging.getLogger(__name__)

WAITING = "still being written"
SETTLE_SECONDS = 5.0
"""A dropped file modified more recently than this may still be being written: left for a
later tick (a file renamed in right after it was written waits one tick at most)."""
UNTERMINATED_SECONDS = 300.0
"""A file whose last line lacks its newline is waited for this long, then read as it is."""


def _recent(status: os.stat_result, seconds: float) -> bool:
    """Modified less than ``seconds`` ago. A time a little ahead (a writer's clock running
    fast, a network file system) counts as recent too; one far ahead is bogus and does not,
    or the file would wait until that day."""
    return -UNTERMINATED_SECONDS < time.time() - status.st_mtime < seconds


def _odd_kind(status: os.stat_result) -> str | None:
    """Why an entry named ``*.jsonl`` is not read, or None for a plain regular file.

    A second name (hard link) is refused like a symbolic link: it may be the key file's.
    """
    mode = status.st_mode
    for test, kind in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if status.st_nlink > 1:
        return "a file with several names (hard link)"
    if status.st_size > MAX_FILE_BYTES:
        return f"larger than {MAX_FILE_BYTES} bytes"
    return None


def _identity(status: os.stat_result) -> tuple[int, int, int, int]:
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def read_complete(path: Path, settle_seconds: float) -> tuple[bytes, os.stat_result] | str:
    """(content, status) of a complete regular file, or why it is not read now (``WAITING``
    for a file that may still grow: it is read on a later tick).

    ``lstat`` sorts out links and odd entries without touching them; the file is then opened
    with ``O_NOFOLLOW`` (a link swapped in meanwhile fails) and ``O_NONBLOCK`` (a FIFO swapped in
    does not hang the tick), and ``fstat`` checks that what was opened is what was inspected.
    A size or time that moves while the file is read means a writer is still at work.
    """
    before = os.lstat(path)
    odd = _odd_kind(before)
    if odd:
        return odd
    if _recent(before, settle_seconds):
        return WAITING
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link"
        raise
    try:
        opened = os.fstat(fd)
        odd = _odd_kind(opened)
        if odd or _identity(opened) != _identity(before):
            return odd or WAITING
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                return f"larger than {MAX_FILE_BYTES} bytes"
            chunks.append(chunk)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if _identity(after) != _identity(opened) or len(data) != after.st_size:
        return WAITING
    if data and not data.endswith(b"\n") and _recent(after, UNTERMINATED_SECONDS):
        return WAITING
    return data, after


def _processed_name(done: Path, name: str, digest: str) -> Path:
    """``processed/<name>``, or when a file of that name was processed before, the name with
    the content digest: what may be replaced there then holds these very bytes."""
    if not os.path.lexists(done / name):
        return done / name
    return done / f"{name.removesuffix('.jsonl')}.{digest}.jsonl"


def move_to_processed(path: Path, data: bytes, status: os.stat_result) -> bool:
    """Move a read file under ``processed/`` without overwriting another file's content there;
    False (left in place, read again next tick) when it changed since it was read.

    The sensor is the folder's only reader, so a name found free stays free until the rename.
    """
    done = path.parent / "processed"
    try:
        done.mkdir()
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(done).st_mode):  # a file or a link: never written through
            raise NotADirectoryError(errno.ENOTDIR, "processed/ is not a folder") from None
    if _identity(os.lstat(path)) != _identity(status):
        return False
    os.rename(path, _processed_name(done, path.name, content_digest(data)))
    return True


def ingest_folder(
    engine: Engine, folder: Path, now: datetime, *, settle_seconds: float = SETTLE_SECONDS
) -> IngestReport:
    """The complete ``*.jsonl`` regular files of the folder (not its subfolders).

    Never raises for an entry: odd entries are skipped with a logged reason, incomplete files
    waited for, and a file that cannot be read or moved is left for the next tick (re-reading
    it adds nothing). Only a database error propagates.
    """
    report = IngestReport()
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.name.endswith(".jsonl"))
    except (FileNotFoundError, NotADirectoryError):
        return report
    for name in names:
        path = folder / name
        step = "read"
        try:
            taken = read_complete(path, settle_seconds)
            if isinstance(taken, str):
                if taken == WAITING:
                    report.waiting += 1
                else:
                    report.skipped[name] = taken
                    logger.warning("actions drop folder: an entry is skipped: %s", taken)
                continue
            data, status = taken
            events, quarantined = ingest_bytes(engine, name, data, now)
            report.events += events
            report.quarantined += quarantined
            crash_point("inbox.move")
            step = "move"
            if not move_to_processed(path, data, status):
                report.waiting += 1
                continue
        except FileNotFoundError:
            continue  # taken away meanwhile: nothing to read or move
        except OSError as exc:
            report.failed[name] = f"{step} {error_code(exc)}"
            logger.warning(
                "actions drop folder: could not %s a file (%s); left for the next tick",
                step,
                error_code(exc),
            )
            continue
        report.files.append(name)
    return report
