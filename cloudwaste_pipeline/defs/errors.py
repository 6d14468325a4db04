"""Error text that Dagster stores is scrubbed of raw ids.

Dagster keeps the error of a failed step or sensor tick for good (event log, tick history, the UI,
the failure alert): its message, its stack, and the messages of its ``__cause__`` and
``__context__`` chain (``SerializableErrorInfo.from_traceback``). Cloud SDK, database and parser
errors routinely quote the ARN, account id, subscription path or row that failed. ``scrubbed``
wraps a Dagster body (asset, op, check, sensor, schedule) so that whatever it raises reaches
Dagster as a ``dg.Failure`` whose description and metadata went through ``scrub_text``, raised
``from None``: the original exception, its chain and its frames (whose locals Dagster does not
keep, but whose messages it would) are not stored. The original type name is kept, as it says
what went wrong without saying to whom.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import dagster as dg
import sqlalchemy as sa

from cloudwaste_pipeline.privacy.anonymize import scrub_text

F = TypeVar("F", bound=Callable[..., Any])

MAX_DESCRIPTION = 2000
"""Enough for a sentence and its hint; a driver's multi-kilobyte dump helps nobody."""

# Control flow, not errors: Dagster acts on these by type, and they carry no message of ours.
PASS_THROUGH: tuple[type[BaseException], ...] = (dg.RetryRequested,)


def error_text(exc: BaseException) -> str:
    """What an exception says, scrubbed: ``Type: message``.

    A SQLAlchemy statement error's text quotes the statement's parameters (the raw ids of the
    rows being written) and PostgreSQL's ``DETAIL`` line quotes the conflicting key: of those,
    only the driver's first line is kept.
    """
    if isinstance(exc, sa.exc.StatementError):
        cause = exc.orig if exc.orig is not None else exc
        lines = str(cause.args[0] if cause.args else "").strip().splitlines()
        message = f"{type(cause).__name__}: {lines[0] if lines else 'database error'}"
    elif isinstance(exc, dg.Failure):
        message = exc.description or type(exc).__name__
    else:
        message = f"{type(exc).__name__}: {exc}".rstrip(": ")
    return scrub_text(message)[:MAX_DESCRIPTION]


def scrubbed_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Failure metadata with every text scrubbed; numbers and booleans as they were."""
    clean: dict[str, Any] = {}
    for name, value in metadata.items():
        raw = value.value if isinstance(value, dg.MetadataValue) else value
        if isinstance(raw, bool | int | float) or raw is None:
            clean[name] = value
        elif isinstance(raw, str):
            clean[name] = scrub_text(raw)
        else:  # markdown, JSON, tables, paths, URLs...: kept as scrubbed text
            clean[name] = scrub_text(json.dumps(raw, default=str))
    return clean


def scrubbed_failure(exc: BaseException) -> dg.Failure:
    """The ``dg.Failure`` Dagster stores instead of ``exc``."""
    if isinstance(exc, dg.Failure):
        return dg.Failure(
            description=error_text(exc),
            metadata=scrubbed_metadata(exc.metadata),
            allow_retries=exc.allow_retries,
        )
    return dg.Failure(description=error_text(exc), metadata={"error_type": type(exc).__name__})


def scrubbed(fn: F) -> F:
    """Decorate a Dagster body (under its ``@dg.asset`` / ``@dg.op`` / ``@dg.sensor`` ...): any
    exception it raises becomes a scrubbed ``dg.Failure`` with no chained exception.

    Generator bodies stay generators (Dagster decides how to read outputs from that), and the
    signature is kept (``functools.wraps``: Dagster reads config and resources from it).
    """
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Any:
            failure = None
            try:
                yield from fn(*args, **kwargs)
            except PASS_THROUGH:
                raise
            except Exception as exc:  # every error: re-raised, scrubbed
                failure = scrubbed_failure(exc)
            if failure is not None:
                raise failure from None

        return generator  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        failure = None
        try:
            return fn(*args, **kwargs)
        except PASS_THROUGH:
            raise
        except Exception as exc:  # every error: re-raised, scrubbed
            failure = scrubbed_failure(exc)
        # Raised outside the ``except`` block: the failure has no ``__context__`` at all, and
        # ``exc`` (with its traceback) is released before Dagster looks at the failure.
        raise failure from None

    return wrapper  # type: ignore[return-value]
