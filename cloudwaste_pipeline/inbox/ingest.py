"""One file's lines into the outbox and quarantine, judged the same for every source."""

from __future__ import annotations

import errno
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloudwaste_pipeline.privacy.events import (
    CONFLICTING_DUPLICATE,
    CONTENT_FIELDS,
    check_action_event,
    same_event,
    storable_text,
)
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline.warehouse.load import insert_new

SOURCE = "user_action_file"
MAX_FILE_BYTES = 64 * 1024 * 1024
"""Larger files and objects are skipped (reported, left in place): one tick reads in memory."""
MAX_LINE_BYTES = 256 * 1024
"""A longer line is quarantined unparsed: no field of a valid event comes near it."""
PAYLOAD_CHARS = 2000
"""Quarantine keeps this much of a bad line: enough to see what was wrong, bounded."""

_REF_LENGTH = schema.quarantine.c.source_ref.type.length
_DIGEST_CHARS = 12


@dataclass
class IngestReport:
    """What one pass over a source did. ``failed`` maps a name left in place (read or move
    failed; retried next pass) to the error code; ``skipped`` maps an entry that is not read
    (a link, a directory, a FIFO, too large) to why; ``waiting`` counts files that look
    incomplete and are left for a later pass; ``more`` says objects were left for the next pass
    (``MAX_OBJECTS``)."""

    files: list[str] = field(default_factory=list)
    events: int = 0
    quarantined: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    waiting: int = 0
    more: bool = False

    def describe(self, what: str) -> str:
        """A log line with counts, codes and reasons only: names may embed ids, so they stay
        out."""
        text = (
            f"read {len(self.files)} {what}(s): {self.events} event(s), "
            f"{self.quarantined} quarantined line(s)"
        )
        if self.failed:
            codes = ", ".join(sorted(set(self.failed.values())))
            text += f"; {len(self.failed)} left in place for the next tick ({codes})"
        if self.skipped:
            reasons = ", ".join(sorted(set(self.skipped.values())))
            text += f"; {len(self.skipped)} skipped ({reasons})"
        if self.waiting:
            text += f"; {self.waiting} still being written, left for a later tick"
        if self.more:
            text += "; more left for the next tick"
        return text


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a JSON object has a duplicate key")
    return dict(pairs)


def parse_line(line: str, now: datetime | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """(outbox columns, None) for a usable line, (None, reason) otherwise; never raises.

    A repeated key is refused rather than letting the last one win silently.
    """
    try:
        event = json.loads(line, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        return None, f"malformed JSON ({exc.msg})"
    except ValueError as exc:  # the duplicate key above; an integer of over 4,300 digits
        return None, f"malformed JSON ({exc.args[0] if 'duplicate' in str(exc) else 'number'})"
    except RecursionError:
        return None, "malformed JSON (nested too deeply)"
    if not isinstance(event, dict):
        return None, "a line must be a JSON object"
    return check_action_event(event, now)


def lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) of each non-blank line: lines end at ``\\n`` only (a JSON
    string may hold U+2028, which ``str.splitlines`` would break on)."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for number, line in enumerate(data.split(b"\n"), 1):
        if line.strip():
            yield number, line.removesuffix(b"\r")


def _printable(name: str) -> str:
    """A name as it can be stored and logged: undecodable bytes and control characters of a
    file name (or S3 key) become ``?``; the digest of the ref keeps refs distinct."""
    text = name.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)


def source_ref(name: str, digest: str, number: int) -> str:
    """``name#digest:line``, where ``digest`` is the file's content's; when that exceeds the
    column, a digest of the name and the name's tail stand for the name.

    Deterministic, so a re-read file maps to the same quarantine rows (no duplicates); the
    content digest keeps two files of one name apart, and the name digest long S3 keys that
    share their last characters, or names that differ only in unprintable characters.
    """
    printable, suffix = _printable(name), f"#{digest}:{number}"
    if printable == name and len(printable) + len(suffix) <= _REF_LENGTH:
        return printable + suffix
    named = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    room = _REF_LENGTH - len(named) - 1 - len(suffix)
    return f"{named}~{printable[-room:]}{suffix}"


def content_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:_DIGEST_CHARS]


def _bad(ref: str, line: str, reason: str, now: datetime) -> dict[str, Any]:
    return {
        "source": SOURCE,
        "source_ref": ref,
        "payload": {"line": storable_text(line, PAYLOAD_CHARS)},
        "reason": reason,
        "quarantined_at": now,
    }


def stored_events(conn: sa.Connection, event_ids: list[str]) -> dict[str, Any]:
    """The outbox's rows of these event ids, by event id (what ``same_event`` compares)."""
    events = schema.resource_action_events
    columns = [events.c[name] for name in ("event_id", *CONTENT_FIELDS, "context")]
    stored = {}
    for start in range(0, len(event_ids), 5_000):  # SQLite's bound-parameter limit
        chunk = event_ids[start : start + 5_000]
        for row in conn.execute(sa.select(*columns).where(events.c.event_id.in_(chunk))):
            stored[row.event_id] = row._mapping
    return stored


def _judge_lines(
    name: str, data: bytes, now: datetime, at: datetime
) -> tuple[list[tuple[str, str, dict[str, Any]]], list[dict[str, Any]]]:
    """(ref, text, outbox columns) of each usable line, and the quarantine rows of the rest."""
    digest = content_digest(data)
    usable, bad = [], []
    for number, raw in lines(data):
        ref = source_ref(name, digest, number)
        text = raw.decode("utf-8", "replace")
        if len(raw) > MAX_LINE_BYTES:
            bad.append(_bad(ref, text, f"line longer than {MAX_LINE_BYTES} bytes", at))
            continue
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(_bad(ref, text, "line is not valid UTF-8", at))
            continue
        row, reason = parse_line(text, now)
        if row is None:
            bad.append(_bad(ref, text, reason or "unusable event", at))
        else:
            usable.append((ref, text, row))
    return usable, bad


def ingest_bytes(engine: Engine, name: str, data: bytes, now: datetime) -> tuple[int, int]:
    """One file's lines into the outbox and quarantine, in one transaction.

    Returns (events inserted, lines quarantined), both counting new rows only: a second pass
    over the same name and content inserts nothing, which is what makes a failed move harmless.
    An event id already in the outbox, or earlier in the file, is a no-op when the content is
    the same and a quarantined conflicting duplicate when not. Ids a concurrent writer stored
    between the look-up and the insert are compared again after it.
    """
    at = now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now
    usable, bad = _judge_lines(name, data, now, at)
    with engine.begin() as conn:
        known: dict[str, Any] = stored_events(conn, sorted({r["event_id"] for _, _, r in usable}))
        new = []
        for ref, text, row in usable:
            held = known.get(row["event_id"])
            if held is None:
                known[row["event_id"]] = row
                new.append((ref, text, row))
            elif not same_event(held, row):
                bad.append(_bad(ref, text, CONFLICTING_DUPLICATE, at))
        rows = pd.DataFrame([{**row, "received_at": at} for _, _, row in new])
        events = insert_new(conn, schema.resource_action_events, rows, ["event_id"])
        if events < len(new):
            raced = stored_events(conn, [row["event_id"] for _, _, row in new])
            bad += [
                _bad(ref, text, CONFLICTING_DUPLICATE, at)
                for ref, text, row in new
                if not same_event(raced.get(row["event_id"], row), row)
            ]
        quarantined = insert_new(
            conn, schema.quarantine, pd.DataFrame(bad), ["source", "source_ref"]
        )
    return events, quarantined


def error_code(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.errno in errno.errorcode:
        return errno.errorcode[exc.errno]
    if hasattr(exc, "response"):  # botocore's ClientError
        return str(exc.response.get("Error", {}).get("Code") or "ClientError")
    return type(exc).__name__
