"""The S3 inbox: the ``.jsonl`` objects under a prefix, read like dropped files.

botocore is imported by the functions that are handed a client, not at load: the code location
imports this module in every run and step process, S3 inbox or not.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

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

PROCESSED = "processed/"
MAX_OBJECTS = 100
"""S3 objects read per call: a backlog is worked off over several sensor ticks, each well inside
the sensor's evaluation timeout, instead of one tick that times out."""


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


def _processed_key(s3_client: Any, bucket: str, key: str, etag: str, digest: str) -> str:
    """``key``, unless an object with other content holds it (a file of the same name read
    before): then the key with the content digest, which only these very bytes ever take.

    The same content under ``key`` (a retry after a failed delete, an app sending a file
    again) keeps ``key``: copying over it changes nothing.
    """
    from botocore.exceptions import ClientError

    try:
        held = s3_client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
            return key
        raise
    if held.get("ETag") == etag:
        return key
    return f"{key.removesuffix('.jsonl')}.{digest}.jsonl"


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
    then moved to ``<prefix>processed/<rest of key>`` (copy, then delete), never over another
    object's content (``_processed_key``).

    Quarantine refs start with ``s3://bucket/key``: bucket and key are not personal data, and
    the full key keeps two ``a.jsonl`` in different folders (or a dropped ``a.jsonl``) apart.

    An object that cannot be read or moved is left in place and reported in ``failed`` with its
    error code, and the others still go through; the next pass reads it again, which adds
    nothing already stored. The copy names the ETag that was read, so an object overwritten
    after the read is not moved unread: it fails the move and is read next pass. A listing
    error (no bucket, no permission) raises: it is not about one object.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    report = IngestReport()
    prefix = as_folder(prefix)
    keys = pending_keys(s3_client, bucket, prefix)
    report.more = len(keys) > max_objects
    for key in keys[:max_objects]:
        step = "read"
        try:
            got = s3_client.get_object(Bucket=bucket, Key=key)
            if got["ContentLength"] > MAX_FILE_BYTES:
                got["Body"].close()
                report.skipped[key] = f"larger than {MAX_FILE_BYTES} bytes"
                logger.warning("S3 actions inbox: an object is skipped: %s", report.skipped[key])
                continue
            body = got["Body"].read()
            events, quarantined = ingest_bytes(engine, f"s3://{bucket}/{key}", body, now)
            report.events += events
            report.quarantined += quarantined
            crash_point("inbox.move")
            step = "move"
            target = _processed_key(
                s3_client,
                bucket,
                prefix + PROCESSED + key[len(prefix) :],
                got["ETag"],
                content_digest(body),
            )
            s3_client.copy_object(
                Bucket=bucket,
                Key=target,
                CopySource={"Bucket": bucket, "Key": key},
                CopySourceIfMatch=got["ETag"],
            )
            s3_client.delete_object(Bucket=bucket, Key=key)
        except (BotoCoreError, ClientError, OSError) as exc:
            report.failed[key] = f"{step} {error_code(exc)}"
            logger.warning(
                "S3 actions inbox: could not %s an object (%s); left for the next pass",
                step,
                error_code(exc),
            )
            continue
        report.files.append(key)
    return report
