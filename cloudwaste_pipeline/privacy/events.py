"""User-action events: the one judge of an event, whatever path it came by.

The API, the drop folder, the S3 inbox and the outbox rows other apps write all ask
``check_action_event``, so an event is accepted or refused the same way everywhere, and what it
accepts always stores on SQLite and on PostgreSQL (whose ``varchar`` counts characters and whose
``jsonb`` refuses ``\\u0000`` and lone surrogates). A refusal is a short sentence naming the field
and the limit, never the value: these reasons reach quarantine, exceptions and logs, and the
values are raw user, account and resource ids.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.warehouse import schema

ACTIONS = ("deleted", "ignored", "kept")
PROVIDERS = ("aws", "azure")
ID_FIELDS = ("event_id", "user_id", "account_id", "resource_id")
CONTENT_FIELDS = ("user_id", "account_id", "provider", "resource_id", "action", "action_at")
"""What makes two events with one event id the same event (with ``context``)."""

EARLIEST = datetime(2000, 1, 1)
FUTURE_SLACK = timedelta(days=1)
"""``action_at`` lies in [EARLIEST, now + FUTURE_SLACK]: a decision dated 2099 would otherwise
beat every later real one, and year 1 breaks date arithmetic downstream. The day of slack
absorbs clock skew between the apps and the pipeline."""

MAX_CONTEXT_BYTES = 16 * 1024
MAX_CONTEXT_DEPTH = 32
MAX_CONTEXT_INT = 2**63
MAX_TIMESTAMP_CHARS = 64

_LENGTHS = {
    name: schema.resource_action_events.c[name].type.length for name in (*ID_FIELDS, "provider")
}
_WORD = re.compile(r"[A-Za-z_-]{1,20}")
_BAD_CATEGORIES = frozenset({"Cc", "Cs"})  # control characters; lone surrogates (not UTF-8)
CONFLICTING_DUPLICATE = "conflicting duplicate of an earlier event id (different content)"


def _has_bad_character(text: str) -> bool:
    return not text.isprintable() and any(unicodedata.category(c) in _BAD_CATEGORIES for c in text)


def _unstorable(text: str) -> bool:
    """NUL or a lone surrogate: jsonb refuses the first, UTF-8 cannot encode the second."""
    return not text.isprintable() and any(
        c == "\x00" or unicodedata.category(c) == "Cs" for c in text
    )


_UNSTORABLE = "context holds a NUL character or an invalid code point"


def _choice_problem(name: str, value: Any, allowed: tuple[str, ...]) -> str | None:
    """Unknown provider or action: the value is echoed only when it is a short word (a typo
    like 'archived'), never when it could be an id."""
    if isinstance(value, str) and value in allowed:
        return None
    shown = f" {value!r}" if isinstance(value, str) and _WORD.fullmatch(value) else ""
    return f"unknown {name}{shown} (expected one of {', '.join(allowed)})"


def _id_problem(name: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return f"missing field '{name}'"
    if not isinstance(value, str):
        return f"field '{name}' must be a string, not {_json_kind(value)}"
    if len(value) > _LENGTHS[name]:
        return f"field '{name}' is longer than {_LENGTHS[name]} characters"
    if _has_bad_character(value):
        return f"field '{name}' holds a control character"
    return None


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return f"a {type(value).__name__}"


def action_time(value: Any, now: datetime) -> tuple[datetime | None, str | None]:
    """(naive UTC ``action_at``, None), or (None, why not). Naive values, ``now`` included,
    are UTC (the warehouse's convention); aware ones are converted."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, "missing field 'action_at'"
    if isinstance(value, str):
        if len(value) > MAX_TIMESTAMP_CHARS:
            return None, "action_at is not an ISO timestamp"
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None, "action_at is not an ISO timestamp"
    elif not isinstance(value, datetime) or value != value:  # NaT is a datetime, unequal to itself
        return None, "action_at is not an ISO timestamp"
    try:
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        value = datetime(*value.timetuple()[:6], value.microsecond)  # a plain datetime
        latest = (now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now) + FUTURE_SLACK
    except (OverflowError, ValueError):
        return None, "action_at is out of range"
    if not EARLIEST <= value <= latest:
        return None, f"action_at is outside {EARLIEST:%Y-%m-%d} .. now + {FUTURE_SLACK.days} day"
    return value, None


def _context_problem(context: Any) -> str | None:
    """None when ``context`` is absent or a JSON object every store accepts.

    Walked without recursion, stopping as soon as the size limit is passed, so a deep or huge
    object is refused cheaply and never raises.
    """
    if context is None:
        return None
    if not isinstance(context, dict):
        return f"context must be a JSON object, not {_json_kind(context)}"
    size, stack = 0, [(context, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_CONTEXT_DEPTH:
            return f"context is nested deeper than {MAX_CONTEXT_DEPTH} levels"
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    return "context keys must be strings"
                if _unstorable(key):
                    return _UNSTORABLE
                size += len(key) + 4
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            size += 2 + len(value)
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            if _unstorable(value):
                return _UNSTORABLE
            size += len(value) + 2
        elif isinstance(value, bool) or value is None:
            size += 5
        elif isinstance(value, int):
            if abs(value) >= MAX_CONTEXT_INT:
                return "context holds a number out of range"
            size += 20
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                return "context holds a number that is not finite"
            size += 24
        else:
            return f"context holds {_json_kind(value)}, which is not a JSON value"
        if size > MAX_CONTEXT_BYTES:
            return f"context is larger than {MAX_CONTEXT_BYTES} bytes"
    encoded = json.dumps(context, ensure_ascii=False, separators=(",", ":")).encode()
    if len(encoded) > MAX_CONTEXT_BYTES:
        return f"context is larger than {MAX_CONTEXT_BYTES} bytes"
    return None


def check_action_event(
    event: Mapping[str, Any], now: datetime | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """(the outbox columns of a usable event, None), or (None, why it cannot be used).

    Never raises, whatever ``event`` holds. The columns keep the ids as given (hashing and
    erasure normalise them, one way, elsewhere); ``action_at`` becomes naive UTC. Fields other
    than the event's own (an outbox row's ``seq``, ``received_at``...) are ignored.
    """
    if not isinstance(event, Mapping):
        return None, "an event must be a JSON object"
    for name in ID_FIELDS:
        problem = _id_problem(name, event.get(name))
        if problem:
            return None, problem
    for name, allowed in (("provider", PROVIDERS), ("action", ACTIONS)):
        value = event.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None, f"missing field '{name}'"
        problem = _choice_problem(name, event.get(name), allowed)
        if problem:
            return None, problem
    when, problem = action_time(event.get("action_at"), now or settings.now())
    if problem:
        return None, problem
    context = event.get("context")
    if isinstance(context, float) and context != context:
        context = None  # a missing JSON value read back through pandas
    problem = _context_problem(context)
    if problem:
        return None, problem
    row = {name: event[name] for name in (*ID_FIELDS, "provider", "action")}
    return {**row, "action_at": when, "context": context}, None


def validate_action_event(event: Mapping[str, Any], now: datetime | None = None) -> str | None:
    """Why an event cannot be used, or None when it can (``check_action_event``'s verdict)."""
    return check_action_event(event, now)[1]


def _same_json(a: Any, b: Any) -> bool:
    """JSON equality as the stores give values back: jsonb turns ``1e5`` into ``100000`` and
    ``-0.0`` into ``0``, but ``true`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return Decimal(repr(a)) == Decimal(repr(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def same_event(stored: Mapping[str, Any], row: Mapping[str, Any]) -> bool:
    """Whether an outbox row and a checked event are one event (an idempotent re-delivery)."""
    if any(stored[name] != row[name] for name in CONTENT_FIELDS if name != "action_at"):
        return False
    stamp = stored["action_at"]
    stamp = stamp if isinstance(stamp, datetime) else datetime.fromisoformat(str(stamp))
    return stamp.replace(tzinfo=None) == row["action_at"] and _same_json(
        stored["context"], row["context"]
    )


def storable_text(text: str, limit: int) -> str:
    """Text that fits a JSON column of either store: NUL and lone surrogates replaced (jsonb
    refuses them), cut to ``limit`` characters."""
    text = text[:limit]
    if not _unstorable(text):
        return text
    return "".join("\ufffd" if c == "\x00" or unicodedata.category(c) == "Cs" else c for c in text)


MAX_PAYLOAD_CHARS = 4000


def storable_payload(event: Mapping[str, Any], limit: int = MAX_PAYLOAD_CHARS) -> dict[str, Any]:
    """A quarantine payload for an event that failed ``check_action_event``: the event as JSON
    text (unknown types as text) with NUL and lone surrogates replaced, cut to ``limit``
    characters, so a poison event can always be quarantined on PostgreSQL, whatever it holds.
    """
    try:
        text = json.dumps(dict(event), default=str, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):  # a 5,000-digit int, odd keys, deep nesting
        return {"event": f"not serialisable as JSON ({type(event).__name__})"}
    return {"event": storable_text(text, limit), "truncated": len(text) > limit}
