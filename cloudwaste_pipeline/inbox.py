"""JSON-lines user actions for apps that cannot reach the database: a drop folder, an S3 prefix.

Each ``*.jsonl`` file (or object) holds one event per line (the fields of
``api.record_user_action``). Valid events go to the outbox (a repeated event id is ignored), bad
lines to quarantine with ``name:line`` and the reason; the file then moves to ``processed/`` so it
is read once. Both sources hand the text to ``ingest_text``, so a line is judged the same wherever
it came from, and re-reading a file whose move failed adds nothing: events are keyed by event id
and quarantine rows by ``name:line``.
"""

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.engine import Engine

from cloudwaste_pipeline.privacy.derive import naive_utc, validate_action_event
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline.warehouse.load import insert_new

logger = logging.getLogger(__name__)

FIELDS = ("event_id", "user_id", "account_id", "provider", "resource_id", "action", "action_at")
SOURCE = "user_action_file"
PROCESSED = "processed/"
MAX_OBJECTS = 100
"""S3 objects read per call: a backlog is worked off over several sensor ticks, each well inside
the sensor's evaluation timeout, instead of one tick that times out."""

_REF_LENGTH = schema.quarantine.c.source_ref.type.length
_TEXT_LIMITS = {
    name: schema.resource_action_events.c[name].type.length
    for name in FIELDS
    if name != "action_at"
}


@dataclass
class IngestReport:
    """What one pass over a source did. ``failed`` maps a name left in place (read or move
    failed; retried next pass) to the error code; ``more`` says objects were left for the next
    pass (``MAX_OBJECTS``)."""

    files: list[str] = field(default_factory=list)
    events: int = 0
    quarantined: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    more: bool = False

    def describe(self, what: str) -> str:
        """A log line with counts and error codes only: names may embed ids, so they stay out."""
        text = (
            f"read {len(self.files)} {what}(s): {self.events} event(s), "
            f"{self.quarantined} quarantined line(s)"
        )
        if self.failed:
            codes = ", ".join(sorted(set(self.failed.values())))
            text += f"; {len(self.failed)} left in place for the next tick ({codes})"
        if self.more:
            text += "; more left for the next tick"
        return text


def parse_line(line: str) -> tuple[dict[str, Any] | None, str | None]:
    """(event, None) for a usable line, (None, reason) otherwise."""
    try:
        event = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"malformed JSON ({exc.msg})"
    if not isinstance(event, dict):
        return None, "a line must be a JSON object"
    problem = validate_action_event(event)
    if problem:
        return None, problem
    # Checked here, not left to the database: on PostgreSQL an overlong value fails the whole
    # file's transaction, so the file would never move and would fail every tick.
    for name, limit in _TEXT_LIMITS.items():
        if len(str(event[name])) > limit:
            return None, f"field '{name}' is longer than {limit} characters"
    return event, None


def source_ref(name: str, number: int) -> str:
    """``name:line``, or when that exceeds the column a digest of the name plus its tail.

    Deterministic, so a re-read file maps to the same quarantine rows (no duplicates), and
    distinct names stay distinct even when long S3 keys share their last characters.
    """
    ref = f"{name}:{number}"
    if len(ref) <= _REF_LENGTH:
        return ref
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{digest}~{ref[-(_REF_LENGTH - len(digest) - 1) :]}"


def ingest_text(engine: Engine, name: str, text: str, now: datetime) -> tuple[int, int]:
    """One file's lines into the outbox and quarantine, in one transaction.

    Returns (events inserted, lines quarantined), both counting new rows only: a second pass
    over the same name and text inserts nothing, which is what makes a failed move harmless.
    """
    good, bad = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        event, reason = parse_line(line)
        if event is None:
            bad.append(
                {
                    "source": SOURCE,
                    "source_ref": source_ref(name, number),
                    "payload": {"line": line[:2000]},
                    "reason": reason,
                    "quarantined_at": naive_utc(now),
                }
            )
            continue
        good.append(
            {
                **{k: str(event[k]) for k in FIELDS if k != "action_at"},
                "action_at": naive_utc(str(event["action_at"])),
                "context": event.get("context"),
                "received_at": naive_utc(now),
            }
        )
    with engine.begin() as conn:
        events = insert_new(conn, schema.resource_action_events, pd.DataFrame(good), ["event_id"])
        quarantined = insert_new(
            conn, schema.quarantine, pd.DataFrame(bad), ["source", "source_ref"]
        )
    return events, quarantined


def ingest_folder(engine: Engine, folder: Path, now: datetime) -> IngestReport:
    """The ``*.jsonl`` files of the folder (not its subfolders); quarantine refs are
    ``file name:line``."""
    report = IngestReport()
    if not folder.is_dir():
        return report
    done = folder / "processed"
    for path in sorted(folder.glob("*.jsonl")):
        events, quarantined = ingest_text(engine, path.name, path.read_text(errors="replace"), now)
        report.events += events
        report.quarantined += quarantined
        done.mkdir(exist_ok=True)
        path.replace(done / path.name)
        report.files.append(path.name)
    return report


# --- S3 -----------------------------------------------------------------------------------------


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket/prefix/``; the prefix is empty or ends with ``/``."""
    parts = urlsplit(uri.strip())
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"actions inbox {uri!r} is not an s3://bucket/prefix/ URI")
    return parts.netloc, as_folder(parts.path.lstrip("/"))


def as_folder(prefix: str) -> str:
    """The prefix with a trailing slash: ``actions`` must not also read ``actions-old/``, and its
    processed folder is ``actions/processed/``, not ``actionsprocessed/``."""
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def pending_keys(s3_client: Any, bucket: str, prefix: str) -> list[str]:
    """The ``.jsonl`` keys under the prefix (any depth) but not under ``<prefix>processed/``.

    Walked one level at a time (``Delimiter='/'``) so ``processed/`` is never listed: it only
    grows, and a flat listing would page through every file ever read, on every tick.
    """
    paginator = s3_client.get_paginator("list_objects_v2")
    done, folders, keys = prefix + PROCESSED, [prefix], []
    while folders:
        pages = paginator.paginate(Bucket=bucket, Prefix=folders.pop(), Delimiter="/")
        for page in pages:
            keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".jsonl")]
            folders += [p["Prefix"] for p in page.get("CommonPrefixes", []) if p["Prefix"] != done]
    return sorted(keys)


def _error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "ClientError")
    return type(exc).__name__


def ingest_s3_prefix(
    engine: Engine,
    s3_client: Any,
    bucket: str,
    prefix: str,
    now: datetime,
    *,
    max_objects: int = MAX_OBJECTS,
) -> IngestReport:
    """The ``.jsonl`` objects under ``s3://bucket/prefix``, each ingested like a dropped file,
    then moved to ``<prefix>processed/<rest of key>`` (copy, then delete).

    Quarantine refs are ``s3://bucket/key:line``: bucket and key are not personal data, and the
    full key keeps two ``a.jsonl`` in different folders (or a dropped ``a.jsonl``) apart, where
    a basename would make the second one's bad lines collide with the first's and be dropped.

    An object that cannot be read or moved is left in place and reported in ``failed`` with its
    error code, and the others still go through; the next pass reads it again, which adds
    nothing already stored. A listing error (no bucket, no permission) raises: it is not about
    one object. Apps should write each file under a new key: an object overwritten between the
    read and the move would reach ``processed/`` without being read.
    """
    report = IngestReport()
    prefix = as_folder(prefix)
    keys = pending_keys(s3_client, bucket, prefix)
    report.more = len(keys) > max_objects
    for key in keys[:max_objects]:
        step = "read"
        try:
            body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
            events, quarantined = ingest_text(
                engine, f"s3://{bucket}/{key}", body.decode("utf-8", errors="replace"), now
            )
            report.events += events
            report.quarantined += quarantined
            step = "move"
            target = prefix + PROCESSED + key[len(prefix) :]
            s3_client.copy_object(
                Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": key}
            )
            s3_client.delete_object(Bucket=bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            report.failed[key] = f"{step} {_error_code(exc)}"
            logger.warning(
                "S3 actions inbox: could not %s an object (%s); left for the next pass",
                step,
                _error_code(exc),
            )
            continue
        report.files.append(key)
    return report
