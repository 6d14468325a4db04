"""The JSON-lines drop folder: good lines reach the outbox once, bad lines are quarantined with
``name#digest:line`` and a reason, each complete regular file is read once and moved without
overwriting anything, and no odd entry (link, directory, FIFO, socket, file still being
written) is read, hangs or fails the tick."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloudwaste_pipeline import inbox as inbox_package
from cloudwaste_pipeline.faults import CRASH_ENV, CRASH_EXIT_CODE
from cloudwaste_pipeline.inbox import ingest_folder
from cloudwaste_pipeline.warehouse import schema

NOW = datetime(2026, 11, 16, 6, tzinfo=UTC)
OLD = 3600  # seconds: a file this old is complete whatever its last line


def event(event_id: str, **change) -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "user_id": "user-1",
            "account_id": "123456789012",
            "provider": "aws",
            "resource_id": "arn:aws:ec2:us-east-1:123456789012:volume/vol-0123456789abcdef0",
            "action": "deleted",
            "action_at": "2026-11-16T05:00:00+00:00",
            **change,
        }
    )


def age(path: Path, seconds: float = OLD) -> None:
    """Date the file's last change ``seconds`` back (a writer long finished)."""
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp), follow_symlinks=False)


def drop(inbox: Path, name: str, *lines: str, seconds: float = OLD) -> Path:
    inbox.mkdir(exist_ok=True)
    path = inbox / name
    path.write_text("\n".join(lines))
    age(path, seconds)
    return path


def outbox(engine: Engine) -> dict[str, dict]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(schema.resource_action_events))
        return {r.event_id: dict(r._mapping) for r in rows}


def quarantined(engine: Engine) -> dict[tuple[str, int], list[dict]]:
    """Quarantine rows by (file name, line): refs are ``name#digest:line``."""
    found: dict[tuple[str, int], list[dict]] = {}
    with engine.connect() as conn:
        for row in conn.execute(sa.select(schema.quarantine)):
            name, line = re.fullmatch(r"(.*)#[0-9a-f]{12}:(\d+)", row.source_ref).groups()
            found.setdefault((name, int(line)), []).append(dict(row._mapping))
    return found


def test_good_lines_land_once_and_bad_lines_are_quarantined(engine, tmp_path):
    inbox = tmp_path / "inbox"
    drop(
        inbox,
        "a.jsonl",
        *[event("e1"), event("e2"), event("e1"), "{not json", event("e3", action="archived"), ""],
    )
    report = ingest_folder(engine, inbox, NOW)
    assert report.files == ["a.jsonl"] and report.events == 2 and report.quarantined == 2
    assert not (inbox / "a.jsonl").exists() and (inbox / "processed" / "a.jsonl").exists()
    stored = outbox(engine)
    assert sorted(stored) == ["e1", "e2"]
    assert {r["action_at"] for r in stored.values()} == {datetime(2026, 11, 16, 5, 0)}  # naive UTC
    reasons = {k: v[0]["reason"] for k, v in quarantined(engine).items()}
    assert set(reasons) == {("a.jsonl", 4), ("a.jsonl", 5)}
    assert reasons["a.jsonl", 4].startswith("malformed JSON")
    assert "unknown action 'archived'" in reasons["a.jsonl", 5]
    assert ingest_folder(engine, inbox, NOW).files == []


def test_a_link_to_a_secret_is_never_read(sqlite_engine, tmp_path):
    secret = tmp_path / "anonymization.key"
    secret.write_text("TOP-SECRET-KEY-MATERIAL\n")
    age(secret)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a-symlink.jsonl").symlink_to(secret)
    os.link(secret, inbox / "b-hardlink.jsonl")
    drop(inbox, "c.jsonl", event("e1"))

    report = ingest_folder(sqlite_engine, inbox, NOW)

    assert report.files == ["c.jsonl"] and report.events == 1
    assert report.skipped == {
        "a-symlink.jsonl": "a symbolic link",
        "b-hardlink.jsonl": "a file with several names (hard link)",
    }
    assert report.quarantined == 0 and quarantined(sqlite_engine) == {}
    assert (inbox / "a-symlink.jsonl").is_symlink() and (inbox / "b-hardlink.jsonl").exists()
    assert secret.read_text() == "TOP-SECRET-KEY-MATERIAL\n"
    assert "SECRET" not in report.describe("dropped file")


def test_odd_entries_are_skipped_and_never_hang_or_fail_the_tick(sqlite_engine, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a-directory.jsonl").mkdir()
    (inbox / "b-dangling.jsonl").symlink_to(tmp_path / "nowhere")
    os.mkfifo(inbox / "c-fifo.jsonl")  # opened for reading, a FIFO waits for a writer
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(inbox / "d-socket.jsonl"))
    drop(inbox, "e.jsonl", event("e1"))
    try:
        report = ingest_folder(sqlite_engine, inbox, NOW)
    finally:
        server.close()
    assert report.files == ["e.jsonl"] and report.events == 1 and report.failed == {}
    assert report.skipped == {
        "a-directory.jsonl": "a directory",
        "b-dangling.jsonl": "a symbolic link",
        "c-fifo.jsonl": "a FIFO",
        "d-socket.jsonl": "a socket",
    }
    assert "4 skipped (a FIFO, a directory, a socket, a symbolic link)" in report.describe("file")
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == ["e.jsonl"]


def test_a_file_still_being_written_is_left_until_complete(sqlite_engine, tmp_path):
    inbox = tmp_path / "inbox"
    path = drop(inbox, "a.jsonl", event("e1"), event("e2") + "\n", seconds=0)  # just written
    report = ingest_folder(sqlite_engine, inbox, NOW)
    assert report.files == [] and path.exists() and outbox(sqlite_engine) == {}
    assert report.waiting == 1

    with path.open("a") as file:  # the writer goes on: half a line, then a pause
        file.write(event("e3")[:40])
    age(path, 60)
    report = ingest_folder(sqlite_engine, inbox, NOW)
    assert (report.waiting, report.files, report.quarantined) == (1, [], 0)
    assert path.exists() and outbox(sqlite_engine) == {}

    with path.open("a") as file:
        file.write(event("e3")[40:] + "\n")
    age(path, 60)
    report = ingest_folder(sqlite_engine, inbox, NOW)
    assert (report.files, report.events, report.quarantined) == (["a.jsonl"], 3, 0)
    assert sorted(outbox(sqlite_engine)) == ["e1", "e2", "e3"]


def test_a_last_line_without_newline_is_read_once_the_file_is_old(sqlite_engine, tmp_path):
    inbox = tmp_path / "inbox"
    drop(inbox, "a.jsonl", event("e1"), event("e2"), seconds=OLD)  # no final newline
    assert ingest_folder(sqlite_engine, inbox, NOW).events == 2


def test_a_time_a_little_ahead_waits_and_one_far_ahead_does_not_block(sqlite_engine, tmp_path):
    inbox = tmp_path / "inbox"
    drop(inbox, "a.jsonl", event("e1") + "\n", seconds=-60)  # a writer's clock a minute fast
    drop(inbox, "b.jsonl", event("e2") + "\n", seconds=-365 * 86400)  # a bogus date
    report = ingest_folder(sqlite_engine, inbox, NOW)
    assert (report.files, report.waiting) == (["b.jsonl"], 1)
    assert sorted(outbox(sqlite_engine)) == ["e2"]


def test_a_file_that_grows_after_it_was_read_is_read_again(sqlite_engine, tmp_path, monkeypatch):
    """A writer that ignores the contract appends between the read and the move: the file is
    left in place, and the next pass takes everything, nothing twice."""
    inbox = tmp_path / "inbox"
    path = drop(inbox, "a.jsonl", event("e1"), "{not json", "")
    folder_module = inbox_package.folder
    real = folder_module.ingest_bytes

    def ingest_then_append(*args, **kwargs):
        counts = real(*args, **kwargs)
        with path.open("a") as file:
            file.write(event("e2") + "\n")
        age(path)
        return counts

    monkeypatch.setattr(folder_module, "ingest_bytes", ingest_then_append)
    first = ingest_folder(sqlite_engine, inbox, NOW)
    assert (first.files, first.waiting, first.events) == ([], 1, 1)
    assert path.exists() and not (inbox / "processed" / "a.jsonl").exists()
    monkeypatch.setattr(folder_module, "ingest_bytes", real)

    second = ingest_folder(sqlite_engine, inbox, NOW)
    assert (second.files, second.events) == (["a.jsonl"], 1)
    assert sorted(outbox(sqlite_engine)) == ["e1", "e2"]
    assert (inbox / "processed" / "a.jsonl").read_text().endswith(event("e2") + "\n")


def test_a_name_used_twice_overwrites_nothing(sqlite_engine, tmp_path):
    inbox = tmp_path / "inbox"
    first = [event("e1"), "{first bad line"]
    second = [event("e2"), "{second bad line"]
    drop(inbox, "a.jsonl", *first)
    assert ingest_folder(sqlite_engine, inbox, NOW).quarantined == 1
    drop(inbox, "a.jsonl", *second)
    report = ingest_folder(sqlite_engine, inbox, NOW)
    assert (report.files, report.events, report.quarantined) == (["a.jsonl"], 1, 1)

    kept = sorted(p.read_text() for p in (inbox / "processed").iterdir())
    assert kept == sorted(["\n".join(first), "\n".join(second)])
    rows = quarantined(sqlite_engine)[("a.jsonl", 2)]
    assert sorted(r["payload"]["line"] for r in rows) == ["{first bad line", "{second bad line"]
    assert sorted(outbox(sqlite_engine)) == ["e1", "e2"]

    drop(inbox, "a.jsonl", *second)  # the same file dropped again adds nothing
    again = ingest_folder(sqlite_engine, inbox, NOW)
    assert (again.files, again.events, again.quarantined) == (["a.jsonl"], 0, 0)
    assert len(list((inbox / "processed").iterdir())) == 2


def test_nul_and_over_long_values_are_quarantined_on_every_database(engine, tmp_path):
    """On PostgreSQL these made every tick raise: jsonb refuses NUL, and a reason that echoed
    a 5,000-character provider overflowed the quarantine's reason column."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    lines = [
        event("nul-escaped", user_id="user\u00001"),
        event("nul-in-context", context={"note": "a\u0000b"}),
        event("ok", context={"note": "fine"}),
        event("long-provider", provider="p" * 5000),
        event("long-action", action="a" * 5000),
        event("long-resource", resource_id="r" * 2001),
    ]
    data = ("\n".join(lines) + "\n").encode()
    data += b'{"event_id": "raw-nul\x00", "note": "a raw NUL byte in the file"}\n'
    data += b'{"event_id": "bad-utf8", "user_id": "\xff\xfe"}\n'
    (inbox / "a.jsonl").write_bytes(data)
    age(inbox / "a.jsonl")

    report = ingest_folder(engine, inbox, NOW)

    assert (report.files, report.events, report.quarantined) == (["a.jsonl"], 1, 7)
    rows = {line: found[0] for (_, line), found in quarantined(engine).items()}
    assert "holds a control character" in rows[1]["reason"]
    assert "NUL character" in rows[2]["reason"]
    assert rows[4]["reason"] == "unknown provider (expected one of aws, azure)"
    assert "longer than 2000 characters" in rows[6]["reason"]
    assert "\x00" not in rows[7]["payload"]["line"] and "raw NUL" in rows[7]["payload"]["line"]
    assert rows[8]["reason"] == "line is not valid UTF-8"
    assert all(len(r["reason"]) < 200 for r in rows.values())


def test_a_conflicting_duplicate_is_quarantined_and_an_identical_one_is_not(engine, tmp_path):
    inbox = tmp_path / "inbox"
    drop(inbox, "a.jsonl", event("e1"), event("e1"), event("e1", action="kept"), event("e2"))
    drop(inbox, "b.jsonl", event("e2", user_id="user-2"), event("e2"))
    report = ingest_folder(engine, inbox, NOW)
    assert (report.events, report.quarantined) == (2, 2)
    rows = quarantined(engine)
    assert set(rows) == {("a.jsonl", 3), ("b.jsonl", 1)}
    assert {r[0]["reason"] for r in rows.values()} == {
        "conflicting duplicate of an earlier event id (different content)"
    }
    assert outbox(engine)["e1"]["action"] == "deleted"  # the first stays, the held original too


CHILD = """
import sys
from datetime import datetime
from pathlib import Path
from cloudwaste_pipeline.inbox import ingest_folder
from cloudwaste_pipeline.warehouse.engine import make_engine
ingest_folder(make_engine(sys.argv[1]), Path(sys.argv[2]), datetime.fromisoformat(sys.argv[3]))
"""


def test_a_process_killed_before_the_move_loses_and_duplicates_nothing(engine, tmp_path):
    inbox = tmp_path / "inbox"
    drop(inbox, "a.jsonl", event("e1"), event("e2"), "{not json")
    url = engine.url.render_as_string(hide_password=False)
    engine.dispose()  # the child writes to the same SQLite file
    killed = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(inbox), NOW.isoformat()],
        env={**os.environ, CRASH_ENV: "inbox.move"},
        check=False,
    )
    assert killed.returncode == CRASH_EXIT_CODE
    assert (inbox / "a.jsonl").exists() and sorted(outbox(engine)) == ["e1", "e2"]

    report = ingest_folder(engine, inbox, NOW)

    assert (report.files, report.events, report.quarantined) == (["a.jsonl"], 0, 0)
    assert sorted(outbox(engine)) == ["e1", "e2"] and len(quarantined(engine)) == 1
    assert sorted(p.name for p in (inbox / "processed").iterdir()) == ["a.jsonl"]


@pytest.mark.parametrize("unreadable", ["processed-is-a-file", "processed-is-a-link"])
def test_a_processed_folder_that_is_not_a_folder_is_never_written_through(
    sqlite_engine, tmp_path, unreadable
):
    inbox = tmp_path / "inbox"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    drop(inbox, "a.jsonl", event("e1"))
    if unreadable == "processed-is-a-file":
        (inbox / "processed").write_text("")
    else:
        (inbox / "processed").symlink_to(elsewhere)
    report = ingest_folder(sqlite_engine, inbox, NOW)
    assert report.failed == {"a.jsonl": "move ENOTDIR"} and report.events == 1
    assert (inbox / "a.jsonl").exists() and list(elsewhere.iterdir()) == []
