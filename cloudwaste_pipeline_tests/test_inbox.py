"""The JSON-lines drop folder: good lines reach the outbox once, bad lines are quarantined with
file:line and a reason, and each file is read once."""

import json
from datetime import UTC, datetime

import sqlalchemy as sa

from cloudwaste_pipeline.inbox import ingest_folder
from cloudwaste_pipeline.warehouse import schema

NOW = datetime(2026, 11, 16, 6, tzinfo=UTC)


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


def test_good_lines_land_once_and_bad_lines_are_quarantined(engine, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.jsonl").write_text(
        "\n".join(
            [event("e1"), event("e2"), event("e1"), "{not json", event("e3", action="archived"), ""]
        )
    )
    report = ingest_folder(engine, inbox, NOW)
    assert report.files == ["a.jsonl"] and report.events == 2 and report.quarantined == 2
    assert not (inbox / "a.jsonl").exists() and (inbox / "processed" / "a.jsonl").exists()
    with engine.connect() as conn:
        ids = sorted(r.event_id for r in conn.execute(sa.select(schema.resource_action_events)))
        stamps = {r.action_at for r in conn.execute(sa.select(schema.resource_action_events))}
        reasons = {r.source_ref: r.reason for r in conn.execute(sa.select(schema.quarantine))}
    assert ids == ["e1", "e2"]
    assert stamps == {datetime(2026, 11, 16, 5, 0)}  # naive UTC
    assert reasons["a.jsonl:4"].startswith("malformed JSON")
    assert "unknown action 'archived'" in reasons["a.jsonl:5"]
    assert ingest_folder(engine, inbox, NOW).files == []
