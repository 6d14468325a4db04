"""Erasure in the exports: published files rewritten without the subject, staging debris removed.

Run once the warehouse erasure has committed (no row lock is held while files are rewritten), on
the local exports folder (``$CLOUDWASTE_HOME/ml_datasets``) and on the S3 exports prefix when one
is configured. Per folder:

1. A journal left by a rewrite that was killed is settled first (see below).
2. Every file a manifest lists is checked for the subjects' hashes (``export_rows.holds``); the
   files that hold them are rewritten without their rows to a scratch file (``.erasure-tmp-*``,
   in the same folder locally). Data files no manifest lists (a stale compression variant, an
   interrupted publish) are checked and rewritten the same way.
3. The manifest-to-be (rows, bytes, sha256, row counts, and an ``erasures`` record: counts
   only) is written as a journal (``.erasure-journal-<manifest>``), then each rewritten file is
   put in place under its new content name (``manifests.published_name``: a listed file is never
   overwritten, as when exporting), then the manifest, last; then the old files and the journal
   are removed.

A process killed before the manifest leaves the old manifest describing the old files (still
whole) and the journal: the next erasure (of anyone) gives each listed entry whose new file is in
place its new entry, so the manifest always describes files that exist (a new file it does not
adopt is an orphan the next export sweeps); killed after the manifest, the journal still names
the superseded files, which the next erasure removes. What cannot be rewritten (a listed file
missing, an unknown format, a write error, an S3 permission) is reported as remaining, never
skipped in silence.

Staging folders (``.staging-*``) under the exports folder hold unpublished files that may name the
subject: an export killed mid-write leaves them, and one running now may have read the subject's
rows before the erasure committed. They are removed (such a running export then fails and is run
again, now without the subject), and so are the incomplete multipart uploads under the S3 prefix.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cloudwaste_pipeline.faults import crash_point
from cloudwaste_pipeline.manifests import published_name
from cloudwaste_pipeline.privacy.export_rows import (
    Unrewritable,
    Wanted,
    file_format,
    holds,
    rewrite,
    sha256,
)
from cloudwaste_pipeline.privacy.export_stores import (
    SCRATCH_PREFIX,
    Folder,
    LocalFolder,
    S3Folder,
    listed_name,
)

STAGING_PREFIX = ".staging-"
JOURNAL_PREFIX = ".erasure-journal-"
MANIFEST = re.compile(r"manifest_[^/]*\.json")
DATA_NAME = re.compile(r"[^.][^/]*\.(parquet|csv|json|csv\.gz|json\.gz)")


@dataclass
class ExportErasure:
    """What an erasure did to the exports: paths and counts only."""

    files_rewritten: list[dict[str, Any]] = field(default_factory=list)  # file, rows_removed
    staging_removed: list[str] = field(default_factory=list)
    remaining: list[dict[str, str]] = field(default_factory=list)  # item, reason

    def extend(self, other: ExportErasure) -> None:
        self.files_rewritten += other.files_rewritten
        self.staging_removed += other.staging_removed
        self.remaining += other.remaining


def erase_folder(folder: Folder, wanted: Wanted, now: datetime) -> ExportErasure:
    """Settle, search and rewrite one folder (see the module's docstring)."""
    done = ExportErasure()
    for name in sorted(n for n in folder.names if n.startswith(JOURNAL_PREFIX)):
        _settle_journal(folder, name, done)
    listed: set[str] = set()
    for manifest in sorted(n for n in folder.names if MANIFEST.fullmatch(n)):
        _erase_manifest(folder, manifest, wanted, now, listed, done)
    unlisted = sorted(
        n for n in folder.names - listed if DATA_NAME.fullmatch(n) and not MANIFEST.fullmatch(n)
    )
    staged = _rewrite_files(folder, {n: n for n in unlisted}, wanted, done)
    for name, (scratch, _, removed) in staged.items():
        _install(folder, scratch, name, name, removed, done)  # in place: no manifest to switch
    return done


def _erase_manifest(
    folder: Folder,
    manifest_name: str,
    wanted: Wanted,
    now: datetime,
    listed: set[str],
    done: ExportErasure,
) -> None:
    try:
        manifest = json.loads(folder.read(manifest_name))
        entries = {k: dict(v) for k, v in manifest["files"].items()}
        names = {k: listed_name(e) for k, e in entries.items()}
    except Exception as exc:  # unreadable: its files cannot be told apart, nor its entries fixed
        done.remaining.append({"item": folder.label + manifest_name, "reason": _why(exc)})
        return
    listed.update(names.values())
    staged = _rewrite_files(folder, names, wanted, done)
    if not staged:
        return
    pending = dict(manifest, files=dict(entries))
    removed: dict[str, int] = {}
    for key, (_, entry, count) in staged.items():
        pending["files"][key] = {**entries[key], **entry}
        removed[key] = count
    journal_name = JOURNAL_PREFIX + manifest_name
    journal = {
        "manifest": pending,
        "replaces": {key: names[key] for key in staged},  # removed once the manifest is written
        "rows_removed": removed,
        "erased_at": now.isoformat(),
    }
    try:
        folder.put(journal_name, _dump(journal))
    except Exception as exc:
        done.remaining += [{"item": folder.label + names[k], "reason": _why(exc)} for k in staged]
        for scratch, _, _ in staged.values():
            scratch.unlink(missing_ok=True)
        return
    installed = {
        key
        for key, (scratch, entry, count) in staged.items()
        if _install(folder, scratch, names[key], entry["name"], count, done)
    }
    crash_point("erasure.export_manifest")
    _commit(folder, manifest_name, journal_name, manifest, journal, installed, done)


def _rewrite_files(
    folder: Folder, names: dict[str, str], wanted: Wanted, done: ExportErasure
) -> dict[str, tuple[Path, dict[str, Any], int]]:
    """The files of ``names`` (key -> file name) that hold a subject, rewritten to scratch files:
    key -> (scratch, its rows/bytes/sha256, rows removed). What fails is listed as remaining."""
    staged: dict[str, tuple[Path, dict[str, Any], int]] = {}
    for key, name in names.items():
        if name not in folder.names:
            done.remaining.append(
                {"item": folder.label + name, "reason": "listed by its manifest but missing"}
            )
            continue
        scratch: Path | None = None
        try:
            with folder.local(name) as path:
                if not holds(path, wanted):
                    continue
                file_format(name)  # before any scratch file: an unknown format stays as it is
                scratch = folder.scratch(name)
                kept, removed = rewrite(path, scratch, wanted)
                if not removed:  # a hash outside the hash columns: no row of it to drop
                    raise Unrewritable(f"{name} holds a subject's hash outside its hash columns")
            digest = sha256(scratch)
            entry = {
                "name": published_name(name, digest),
                "rows": kept,
                "bytes": scratch.stat().st_size,
                "sha256": digest,
            }
            staged[key] = (scratch, entry, removed)
        except Exception as exc:  # one file's failure must not stop the others: listed instead
            if scratch is not None:
                scratch.unlink(missing_ok=True)
            done.remaining.append({"item": folder.label + name, "reason": _why(exc)})
    return staged


def _install(
    folder: Folder, scratch: Path, name: str, target: str, removed: int, done: ExportErasure
) -> bool:
    """The rewrite of ``name`` put in place as ``target``; on failure ``name`` (which still holds
    the subject) is reported as remaining."""
    try:
        folder.install(scratch, target)
    except Exception as exc:
        done.remaining.append({"item": folder.label + name, "reason": _why(exc)})
        return False
    finally:
        scratch.unlink(missing_ok=True)
    done.files_rewritten.append({"file": folder.label + target, "rows_removed": removed})
    crash_point("erasure.export_file")
    return True


def _commit(
    folder: Folder,
    manifest_name: str,
    journal_name: str,
    old: dict[str, Any],
    journal: dict[str, Any],
    installed: set[str],
    done: ExportErasure,
) -> None:
    """The manifest describing the files as they now are: the new entry of each ``installed``
    file, the old entry of the others; then the files the journal's new entries replace (once
    the manifest lists those entries), then the journal, are removed."""
    pending = journal["manifest"]
    files = {
        key: pending["files"][key] if key in installed else entry
        for key, entry in old.get("files", {}).items()
    }
    manifest = dict(old, files=files)
    if installed:
        rows = _dataset_rows(files)
        manifest["row_counts"] = {**old.get("row_counts", {}), **rows}
        removed: dict[str, int] = {}
        for key in installed:
            dataset = key.rsplit(".", 1)[0]
            count = int(journal["rows_removed"].get(key, 0))
            removed[dataset] = max(removed.get(dataset, 0), count)
        record = {
            "erased_at": journal["erased_at"],
            "files_rewritten": len(installed),
            "rows_removed": removed,
        }
        manifest["erasures"] = [*old.get("erasures", []), record]
    replaces = journal.get("replaces", {})
    settled = {key for key, entry in files.items() if entry == pending["files"].get(key)}
    superseded = {replaces[key] for key in settled & set(replaces)}
    superseded -= {listed_name(entry) for entry in files.values()}
    try:
        if installed:
            folder.put(manifest_name, _dump(manifest))
            crash_point("erasure.export_committed")
        for name in sorted(superseded & folder.names):
            folder.remove(name)  # the old version still names the subject
        folder.remove(journal_name)
    except Exception as exc:  # the journal stays: the next erasure settles it
        done.remaining.append({"item": folder.label + manifest_name, "reason": _why(exc)})


def _dataset_rows(files: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Rows per dataset where all its files agree (every format holds the same rows)."""
    seen: dict[str, set[int]] = {}
    for key, entry in files.items():
        if isinstance(entry.get("rows"), int):
            seen.setdefault(key.rsplit(".", 1)[0], set()).add(entry["rows"])
    return {dataset: rows.pop() for dataset, rows in seen.items() if len(rows) == 1}


def _settle_journal(folder: Folder, journal_name: str, done: ExportErasure) -> None:
    """A rewrite killed after its journal: each file listed gets the entry whose sha256 it has."""
    manifest_name = journal_name[len(JOURNAL_PREFIX) :]
    try:
        journal = json.loads(folder.read(journal_name))
        old = json.loads(folder.read(manifest_name))
        installed = set()
        for key, entry in journal["manifest"]["files"].items():
            name = listed_name(entry)
            if entry != old["files"].get(key) and name in folder.names:
                with folder.local(name) as path:
                    if sha256(path) == entry.get("sha256"):
                        installed.add(key)
    except Exception as exc:
        done.remaining.append({"item": folder.label + journal_name, "reason": _why(exc)})
        return
    _commit(folder, manifest_name, journal_name, old, journal, installed, done)


def _dump(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2, sort_keys=True, default=str).encode()


def _why(exc: BaseException) -> str:
    """A short reason without content: an S3 error code, an OS error's name, else the type."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        return f"S3 {response['Error'].get('Code', 'error')}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__}: {os.strerror(exc.errno)}"
    if isinstance(exc, Unrewritable):
        return str(exc)
    return f"cannot be rewritten ({type(exc).__name__})"


# --- the stores ---------------------------------------------------------------------------------


def erase_local_exports(exports_dir: Path, wanted: Wanted, now: datetime) -> ExportErasure:
    """Every folder under ``exports_dir``: staging removed, exports rewritten."""
    done = ExportErasure()
    if not wanted.hashes or not exports_dir.is_dir():
        return done
    for folder, dirs, _ in os.walk(exports_dir):
        for name in sorted(d for d in dirs if d.startswith(".")):
            dirs.remove(name)  # hidden: staging debris, never a published export
            if name.startswith(STAGING_PREFIX):
                staging = Path(folder) / name
                try:
                    shutil.rmtree(staging)
                    done.staging_removed.append(str(staging))
                except OSError as exc:
                    done.remaining.append({"item": str(staging), "reason": _why(exc)})
        try:
            for name in os.listdir(folder):
                if name.startswith(SCRATCH_PREFIX):  # a rewrite killed before its journal
                    (Path(folder) / name).unlink(missing_ok=True)
            local = LocalFolder(Path(folder))
        except OSError as exc:  # an unreadable folder: its files cannot be checked
            done.remaining.append({"item": f"{folder}/", "reason": _why(exc)})
            continue
        done.extend(erase_folder(local, wanted, now))
    return done


def erase_s3_exports(
    client: Any, bucket: str, prefix: str, wanted: Wanted, now: datetime
) -> ExportErasure:
    """Every folder under the S3 exports prefix, from one paginated listing; incomplete
    multipart uploads under it aborted first."""
    done = ExportErasure()
    if not wanted.hashes:
        return done
    _abort_uploads(client, bucket, prefix, done)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        keys = [obj["Key"] for page in pages for obj in page.get("Contents", [])]
    except Exception as exc:
        done.remaining.append({"item": f"s3://{bucket}/{prefix}", "reason": _why(exc)})
        return done
    folders: dict[str, set[str]] = {}
    for key in keys:
        folder, _, name = key.rpartition("/")
        folders.setdefault(folder + "/" if folder else "", set()).add(name)
    with tempfile.TemporaryDirectory(prefix="cloudwaste-erasure-") as work:
        for folder, names in sorted(folders.items()):
            s3 = S3Folder(client, bucket, folder, names, Path(work))
            done.extend(erase_folder(s3, wanted, now))
    return done


def _abort_uploads(client: Any, bucket: str, prefix: str, done: ExportErasure) -> None:
    """S3's staging debris: the parts of an upload a killed export never completed are stored
    (and may name the subject) though no object shows them; an upload running now may carry rows
    read before the erasure committed. Aborted, as local staging folders are removed."""
    try:
        pages = client.get_paginator("list_multipart_uploads").paginate(
            Bucket=bucket, Prefix=prefix
        )
        uploads = [(u["Key"], u["UploadId"]) for page in pages for u in page.get("Uploads", [])]
    except Exception as exc:
        done.remaining.append({"item": f"s3://{bucket}/{prefix} uploads", "reason": _why(exc)})
        return
    for key, upload_id in uploads:
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            done.staging_removed.append(f"s3://{bucket}/{key} (incomplete upload)")
        except Exception as exc:
            done.remaining.append({"item": f"s3://{bucket}/{key} (upload)", "reason": _why(exc)})
