"""The S3 prefix inbox against a moto server: good lines reach the outbox once, bad lines are
quarantined with ``s3://bucket/key#digest:line`` and a reason, each object moves under
``processed/`` (never over another object of the same name), an object that fails to read or
move is left for the next pass without duplicates, and the sensor reads the prefix only when
one is configured."""

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import dagster as dg
import pytest
import sqlalchemy as sa
from botocore.exceptions import ClientError
from sqlalchemy.engine import Engine

from cloudwaste_pipeline.definitions import defs
from cloudwaste_pipeline.defs.resources import WarehouseResource
from cloudwaste_pipeline.faults import CRASH_ENV, CRASH_EXIT_CODE
from cloudwaste_pipeline.inbox import ingest_s3_prefix, parse_s3_uri
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline_tests.test_inbox import NOW, event


@pytest.fixture
def s3(moto_url: str) -> Any:
    return boto3.client("s3")


@pytest.fixture
def bucket(s3: Any) -> str:
    """A fresh bucket per test, so tests share the server but never each other's objects."""
    name = f"actions-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def put(s3: Any, bucket: str, key: str, *lines: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body="\n".join(lines).encode())


def keys(s3: Any, bucket: str) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def outbox_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(r.event_id for r in conn.execute(sa.select(schema.resource_action_events)))


def quarantine(engine: Engine) -> dict[str, str]:
    """Reasons by ``s3://bucket/key:line`` (the ref without its content digest)."""
    with engine.connect() as conn:
        return {
            re.sub(r"#[0-9a-f]{12}:", ":", r.source_ref): r.reason
            for r in conn.execute(sa.select(schema.quarantine))
        }


class FailingClient:
    """The real client, except that ``operation`` fails with AccessDenied for one key."""

    def __init__(self, client: Any, operation: str, key: str) -> None:
        self.client, self.operation, self.key = client, operation, key

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.client, name)
        if name != self.operation:
            return real

        def call(**kwargs: Any) -> Any:
            if self.key in (kwargs.get("Key"), kwargs.get("CopySource", {}).get("Key")):
                error = {"Error": {"Code": "AccessDenied", "Message": "denied"}}
                raise ClientError(error, name)
            return real(**kwargs)

        return call


def test_good_lines_land_once_and_bad_lines_are_quarantined(engine, s3, bucket):
    put(
        s3,
        bucket,
        "drop/a.jsonl",
        event("e1"),
        event("e2"),
        event("e1"),
        "{not json",
        event("e3", action="archived"),
        "",
        event("x" * 201),
    )
    put(s3, bucket, "drop/2026/11/b.jsonl", event("e4"))
    put(s3, bucket, "drop/notes.txt", event("not-read-txt"))
    put(s3, bucket, "drop/processed/old.jsonl", event("not-read-processed"))
    put(s3, bucket, "elsewhere/c.jsonl", event("not-read-elsewhere"))

    report = ingest_s3_prefix(engine, s3, bucket, "drop", NOW)  # no slash: added

    assert report.files == ["drop/2026/11/b.jsonl", "drop/a.jsonl"]
    assert (report.events, report.quarantined, report.failed) == (3, 3, {})
    assert outbox_ids(engine) == ["e1", "e2", "e4"]
    reasons = quarantine(engine)
    assert set(reasons) == {f"s3://{bucket}/drop/a.jsonl:{n}" for n in (4, 5, 7)}
    assert reasons[f"s3://{bucket}/drop/a.jsonl:4"].startswith("malformed JSON")
    assert "unknown action 'archived'" in reasons[f"s3://{bucket}/drop/a.jsonl:5"]
    assert "'event_id' is longer than 200" in reasons[f"s3://{bucket}/drop/a.jsonl:7"]
    assert keys(s3, bucket) == {
        "drop/processed/a.jsonl",
        "drop/processed/2026/11/b.jsonl",
        "drop/notes.txt",
        "drop/processed/old.jsonl",
        "elsewhere/c.jsonl",
    }


def test_a_second_pass_and_a_reupload_add_nothing(engine, s3, bucket):
    lines = (event("e1"), "{not json")
    put(s3, bucket, "drop/a.jsonl", *lines)
    first = ingest_s3_prefix(engine, s3, bucket, "drop/", NOW)
    assert (first.events, first.quarantined) == (1, 1)
    assert ingest_s3_prefix(engine, s3, bucket, "drop/", NOW).files == []
    put(s3, bucket, "drop/a.jsonl", *lines)  # the app sends the same file again
    again = ingest_s3_prefix(engine, s3, bucket, "drop/", NOW)
    assert (again.files, again.events, again.quarantined) == (["drop/a.jsonl"], 0, 0)
    assert outbox_ids(engine) == ["e1"] and len(quarantine(engine)) == 1
    assert keys(s3, bucket) == {"drop/processed/a.jsonl"}


@pytest.mark.parametrize("operation", ["get_object", "copy_object", "delete_object"])
def test_an_object_that_fails_is_left_for_the_next_pass(sqlite_engine, s3, bucket, operation):
    engine = sqlite_engine  # the failure paths do not depend on the database
    put(s3, bucket, "drop/a.jsonl", event("e1"), "{not json")
    put(s3, bucket, "drop/b.jsonl", event("e2"))
    flaky = FailingClient(s3, operation, "drop/a.jsonl")

    report = ingest_s3_prefix(engine, flaky, bucket, "drop/", NOW)

    step = "read" if operation == "get_object" else "move"
    assert report.files == ["drop/b.jsonl"]
    assert report.failed == {"drop/a.jsonl": f"{step} AccessDenied"}
    assert "drop/a.jsonl" in keys(s3, bucket)
    assert outbox_ids(engine) == (["e2"] if step == "read" else ["e1", "e2"])
    retry = ingest_s3_prefix(engine, s3, bucket, "drop/", NOW)
    assert retry.files == ["drop/a.jsonl"] and retry.failed == {}
    assert (retry.events, retry.quarantined) == ((1, 1) if step == "read" else (0, 0))
    assert outbox_ids(engine) == ["e1", "e2"] and len(quarantine(engine)) == 1
    assert keys(s3, bucket) == {"drop/processed/a.jsonl", "drop/processed/b.jsonl"}


def test_a_backlog_is_read_a_batch_at_a_time(sqlite_engine, s3, bucket):
    for name in ("a", "b", "c"):
        put(s3, bucket, f"{name}.jsonl", event(name))  # at the bucket's root: empty prefix
    first = ingest_s3_prefix(sqlite_engine, s3, bucket, "", NOW, max_objects=2)
    assert (first.files, first.more) == (["a.jsonl", "b.jsonl"], True)
    second = ingest_s3_prefix(sqlite_engine, s3, bucket, "", NOW, max_objects=2)
    assert (second.files, second.more) == (["c.jsonl"], False)
    assert keys(s3, bucket) == {"processed/a.jsonl", "processed/b.jsonl", "processed/c.jsonl"}


def test_long_keys_get_distinct_quarantine_refs_that_fit(engine, s3, bucket):
    long_keys = [f"drop/{'d' * 240}/{name}.jsonl" for name in ("a", "b")]
    for key in long_keys:
        put(s3, bucket, key, "{not json")
    report = ingest_s3_prefix(engine, s3, bucket, "drop/", NOW)
    assert report.quarantined == 2
    with engine.connect() as conn:
        refs = [r.source_ref for r in conn.execute(sa.select(schema.quarantine))]
    assert len(set(refs)) == 2 and all(len(ref) <= 200 for ref in refs)
    assert {re.sub(r"#[0-9a-f]{12}:", ":", ref)[-9:] for ref in refs} == {"a.jsonl:1", "b.jsonl:1"}


def test_a_key_used_twice_overwrites_nothing(engine, s3, bucket):
    """An app that reuses a key: the second object is read and kept beside the first, and its
    bad line is quarantined beside the first's (refs carry the content digest)."""
    put(s3, bucket, "drop/a.jsonl", event("e1"), "{first bad line")
    assert ingest_s3_prefix(engine, s3, bucket, "drop/", NOW).quarantined == 1
    put(s3, bucket, "drop/a.jsonl", event("e2"), "{second bad line")
    report = ingest_s3_prefix(engine, s3, bucket, "drop/", NOW)
    assert (report.files, report.events, report.quarantined) == (["drop/a.jsonl"], 1, 1)
    processed = sorted(keys(s3, bucket))
    assert len(processed) == 2 and all(k.startswith("drop/processed/a.") for k in processed)
    bodies = sorted(s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in processed)
    assert bodies == sorted(
        "\n".join(lines).encode()
        for lines in ((event("e1"), "{first bad line"), (event("e2"), "{second bad line"))
    )
    with engine.connect() as conn:
        lines = sorted(r.payload["line"] for r in conn.execute(sa.select(schema.quarantine)))
    assert lines == ["{first bad line", "{second bad line"]
    assert outbox_ids(engine) == ["e1", "e2"]


def test_s3_uris():
    assert parse_s3_uri("s3://bucket/drop/actions") == ("bucket", "drop/actions/")
    assert parse_s3_uri("s3://bucket/drop/") == ("bucket", "drop/")
    assert parse_s3_uri("s3://bucket") == ("bucket", "")
    for wrong in ("bucket/drop/", "https://bucket/drop/", "s3:///drop/"):
        with pytest.raises(ValueError, match="not an s3://bucket/prefix/ URI"):
            parse_s3_uri(wrong)


# --- the sensor ---------------------------------------------------------------------------------


@pytest.fixture
def tick(sqlite_url, sqlite_engine, tmp_path, monkeypatch) -> Callable[[], Any]:
    """One user_action_sensor tick with the production resources, on a warehouse of its own."""
    monkeypatch.setenv("CLOUDWASTE_ACTIONS_INBOX", str(tmp_path / "empty-inbox"))
    monkeypatch.delenv("CLOUDWASTE_ACTIONS_S3_URI", raising=False)
    resources = {**defs.resources, "warehouse": WarehouseResource(database_url=sqlite_url)}
    sensor = defs.resolve_sensor_def("user_action_sensor")

    def evaluate() -> Any:  # dagster's SensorExecutionData, not public
        context = dg.build_sensor_context(
            instance=dg.DagsterInstance.ephemeral(), cursor=None, resources=resources
        )
        return sensor.evaluate_tick(context)

    return evaluate


def test_the_sensor_reads_the_configured_prefix(tick, sqlite_engine, s3, bucket, monkeypatch):
    put(s3, bucket, "inbox/a.jsonl", event("e1"), event("e2"), "{not json")
    monkeypatch.setenv("CLOUDWASTE_ACTIONS_S3_URI", f"s3://{bucket}/inbox/")
    result = tick()
    assert [r.run_key for r in result.run_requests] == ["actions:1"]
    assert outbox_ids(sqlite_engine) == ["e1", "e2"]
    assert f"s3://{bucket}/inbox/a.jsonl:3" in quarantine(sqlite_engine)
    assert keys(s3, bucket) == {"inbox/processed/a.jsonl"}


def test_the_sensor_without_a_prefix_builds_no_aws_client(tick, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")  # any boto3 client would raise
    result = tick()
    assert not result.run_requests
    assert result.skip_message == "no user action due"


def test_an_unreachable_bucket_does_not_fail_the_tick(tick, moto_url, monkeypatch):
    monkeypatch.setenv("CLOUDWASTE_ACTIONS_S3_URI", "s3://no-such-bucket-here/inbox/")
    result = tick()
    assert "S3 actions inbox not listed (NoSuchBucket)" in result.skip_message
    assert json.loads(result.cursor)["last"] is None  # no run asked for


CHILD = """
import sys
from datetime import datetime
import boto3
from cloudwaste_pipeline.inbox import ingest_s3_prefix
from cloudwaste_pipeline.warehouse.engine import make_engine
ingest_s3_prefix(
    make_engine(sys.argv[1]), boto3.client("s3"), sys.argv[2], "drop/",
    datetime.fromisoformat(sys.argv[3]),
)
"""


def test_a_process_killed_before_the_move_loses_and_duplicates_nothing(
    sqlite_url, sqlite_engine, s3, bucket
):
    put(s3, bucket, "drop/a.jsonl", event("e1"), "{not json")
    sqlite_engine.dispose()
    killed = subprocess.run(
        [sys.executable, "-c", CHILD, sqlite_url, bucket, NOW.isoformat()],
        env={**os.environ, CRASH_ENV: "inbox.move"},
        check=False,
    )
    assert killed.returncode == CRASH_EXIT_CODE
    assert keys(s3, bucket) == {"drop/a.jsonl"} and outbox_ids(sqlite_engine) == ["e1"]
    report = ingest_s3_prefix(sqlite_engine, s3, bucket, "drop/", NOW)
    assert (report.files, report.events, report.quarantined) == (["drop/a.jsonl"], 0, 0)
    assert keys(s3, bucket) == {"drop/processed/a.jsonl"} and len(quarantine(sqlite_engine)) == 1
