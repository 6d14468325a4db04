"""JSON-lines user actions for apps that cannot reach the database: a drop folder, an S3 prefix.

Each ``*.jsonl`` file (or object) holds one event per line (the fields of
``api.record_user_action``). Valid events go to the outbox, bad lines to quarantine with their
reason; the file then moves to ``processed/`` so it is read once. Both sources hand the bytes to
``ingest_bytes``, so a line is judged the same wherever it came from (by
``privacy.events.check_action_event``, as the API's events are).

Nothing is lost and nothing doubles when a pass is repeated: events are keyed by event id (an
identical re-delivery is a no-op; one with the same id and other content is quarantined as a
conflicting duplicate), and quarantine rows by ``name#digest:line``, where the digest is the
file's content: re-reading a file whose move failed adds nothing, while two different files
that share a name never share a ref.

The writer's contract for the drop folder: write the file under any name not ending in
``.jsonl`` (e.g. ``name.jsonl.tmp``) in the same folder, close it, then rename it to
``name.jsonl`` (a rename is atomic), and use a name never used before. A writer that ignores it
is still coped with: a file modified within ``SETTLE_SECONDS``, or whose last line has no
newline yet (for ``UNTERMINATED_SECONDS``), or that changes while it is read, is left for a
later tick. Only regular files are read, and links are never followed (a link named
``.jsonl`` could otherwise copy any readable file, such as the key, into quarantine).
"""

from cloudwaste_pipeline.inbox.folder import (
    WAITING,
    ingest_folder,
    move_to_processed,
    read_complete,
)
from cloudwaste_pipeline.inbox.ingest import (
    SOURCE,
    IngestReport,
    ingest_bytes,
    parse_line,
    source_ref,
)
from cloudwaste_pipeline.inbox.s3 import as_folder, ingest_s3_prefix, parse_s3_uri, pending_keys

__all__ = [
    "SOURCE",
    "WAITING",
    "IngestReport",
    "as_folder",
    "ingest_bytes",
    "ingest_folder",
    "ingest_s3_prefix",
    "move_to_processed",
    "parse_line",
    "parse_s3_uri",
    "pending_keys",
    "read_complete",
    "source_ref",
]
