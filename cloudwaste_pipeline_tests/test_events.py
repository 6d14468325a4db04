"""The one event validator (``privacy.events``) and its users that are not files: the API and
outbox rows written by other apps. Bad ids, timestamps out of a sane window, control characters
and huge contexts are refused with a reason that names the field, never the value (the property
tests are in ``test_events_fuzz``)."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloudwaste_pipeline import api
from cloudwaste_pipeline.errors import CloudWasteError
from cloudwaste_pipeline.privacy import derive
from cloudwaste_pipeline.warehouse import queries, schema
from cloudwaste_pipeline.warehouse.load import insert_new

NOW = datetime(2026, 11, 16, 6, tzinfo=UTC)
ARN = "arn:aws:ec2:us-east-1:123456789012:volume/vol-0123456789abcdef0"
GOOD = {
    "event_id": "e1",
    "user_id": "user-1",
    "account_id": "123456789012",
    "provider": "aws",
    "resource_id": ARN,
    "action": "deleted",
    "action_at": "2026-11-16T05:00:00+00:00",
}
HUGE = {"blob": "x" * (5 * 1024 * 1024)}

BAD = [
    ({"user_id": 1001}, "field 'user_id' must be a string"),
    ({"user_id": {"a": 1}}, "field 'user_id' must be a string"),
    ({"user_id": True}, "field 'user_id' must be a string"),
    ({"account_id": 123456789012}, "field 'account_id' must be a string"),
    ({"event_id": ["e1"]}, "field 'event_id' must be a string"),
    ({"resource_id": " \t"}, "missing field 'resource_id'"),
    ({"user_id": "user\x00-1"}, "field 'user_id' holds a control character"),
    ({"account_id": "1234\n5678"}, "field 'account_id' holds a control character"),
    ({"resource_id": "r" * 2001}, "field 'resource_id' is longer than 2000 characters"),
    ({"event_id": "e" * 201}, "field 'event_id' is longer than 200 characters"),
    ({"provider": "123456789012"}, "unknown provider (expected one of aws, azure)"),
    ({"provider": True}, "unknown provider"),
    ({"action": "kept" * 1000}, "unknown action (expected one of deleted, ignored, kept)"),
    ({"action_at": "2099-01-01T00:00:00"}, "action_at is outside 2000-01-01 .. now + 1 day"),
    ({"action_at": datetime(1, 1, 1)}, "action_at is outside"),
    ({"action_at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))}, "out of range"),
    ({"action_at": "9999-12-31T23:59:59-05:00"}, "action_at is out of range"),
    ({"action_at": "1999-12-31T23:59:59"}, "action_at is outside"),
    ({"action_at": 1763269200}, "action_at is not an ISO timestamp"),
    ({"action_at": pd.NaT}, "action_at is not an ISO timestamp"),
    ({"context": HUGE}, "context is larger than 16384 bytes"),
    ({"context": {"note": "a\x00b"}}, "context holds a NUL character"),
    ({"context": {"a\x00": 1}}, "context holds a NUL character"),
    ({"context": {"bad": "\ud800"}}, "invalid code point"),
    ({"context": ["a"]}, "context must be a JSON object, not an array"),
    ({"context": {"n": float("inf")}}, "not finite"),
    ({"context": {"n": 10**5000}}, "out of range"),
    ({"context": {"when": datetime(2026, 1, 1)}}, "not a JSON value"),
]


@pytest.mark.parametrize(("change", "reason"), BAD, ids=[r for _, r in BAD])
def test_a_bad_field_gets_a_reason_that_never_holds_the_value(change, reason, monkeypatch):
    monkeypatch.setenv("CLOUDWASTE_NOW", NOW.isoformat())
    problem = derive.validate_action_event({**GOOD, **change})
    assert problem is not None and reason in problem
    assert len(problem) < 120 and "123456789012" not in problem and "kept" * 2 not in problem


def test_the_default_clock_is_the_pipelines(monkeypatch):
    monkeypatch.setenv("CLOUDWASTE_NOW", "2030-01-01T00:00:00")
    assert derive.validate_action_event({**GOOD, "action_at": "2029-06-01T00:00:00"}) is None
    monkeypatch.setenv("CLOUDWASTE_NOW", "2026-01-01T00:00:00")
    assert "outside" in derive.validate_action_event({**GOOD, "action_at": "2029-06-01"})


# --- outbox rows written by other apps ------------------------------------------------------------


def test_outbox_rows_read_back_pass_and_bad_ones_written_around_the_api_do_not(
    engine: Engine, monkeypatch
):
    """The action asset revalidates outbox rows read through pandas: a good row must pass
    (Timestamps, extra columns, no context), one another app dated 2099 must not."""
    monkeypatch.setenv("CLOUDWASTE_NOW", NOW.isoformat())
    base = {**GOOD, "action_at": datetime(2026, 11, 16, 5), "received_at": datetime(2026, 11, 16)}
    rows = pd.DataFrame(
        [
            {**base, "event_id": "good", "context": {"screen": "list"}},
            {**base, "event_id": "plain"},
            {**base, "event_id": "pinned", "action": "kept", "action_at": datetime(2099, 1, 1)},
        ]
    )
    table = schema.resource_action_events
    with engine.begin() as conn:
        insert_new(conn, table, rows, ["event_id"])
        records = queries.frame(conn, sa.select(table).order_by(table.c.seq)).to_dict("records")
    verdicts = {r["event_id"]: derive.validate_action_event(r) for r in records}
    assert verdicts["good"] is None and verdicts["plain"] is None
    assert "action_at is outside" in verdicts["pinned"]


# --- the API --------------------------------------------------------------------------------------


def recorder(engine: Engine, monkeypatch: pytest.MonkeyPatch):
    """``api.record_user_action`` on the test's warehouse, the clock pinned at NOW."""
    monkeypatch.setenv("CLOUDWASTE_NOW", NOW.isoformat())
    url = engine.url.render_as_string(hide_password=False)

    def call(**change):
        fields = {k: v for k, v in GOOD.items() if k != "action_at"}
        fields["action_at"] = NOW - timedelta(hours=1)
        return api.record_user_action(**{**fields, **change}, database_url=url)

    return call


@pytest.fixture
def record(engine: Engine, monkeypatch):
    return recorder(engine, monkeypatch)


@pytest.fixture
def record_sqlite(sqlite_engine: Engine, monkeypatch):
    """For refusals: they are decided before the database is touched."""
    return recorder(sqlite_engine, monkeypatch)


def outbox(engine: Engine) -> dict[str, dict]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(schema.resource_action_events))
        return {r.event_id: dict(r._mapping) for r in rows}


API_BAD = [
    ({"user_id": 1001}, "field 'user_id' must be a string, not a number"),
    ({"user_id": {"a": 1}}, "field 'user_id' must be a string, not an object"),
    ({"user_id": True}, "field 'user_id' must be a string, not a boolean"),
    ({"action_at": datetime(1, 1, 1)}, "action_at is outside 2000-01-01 .. now + 1 day"),
    ({"action_at": datetime(2099, 1, 1)}, "action_at is outside 2000-01-01 .. now + 1 day"),
    ({"context": HUGE}, "context is larger than 16384 bytes"),
    ({"context": {"note": "\x00"}}, "context holds a NUL character or an invalid code point"),
    ({"resource_id": "arn:" + "r" * 2000}, "field 'resource_id' is longer than 2000 characters"),
    ({"account_id": "1234\x005678"}, "field 'account_id' holds a control character"),
]


@pytest.mark.parametrize(("change", "reason"), API_BAD, ids=[r for _, r in API_BAD])
def test_the_api_refuses_what_the_drop_folder_would_quarantine(
    record_sqlite, sqlite_engine, change, reason
):
    with pytest.raises(CloudWasteError) as raised:
        record_sqlite(**change)
    assert str(raised.value) == f"invalid user action: {reason}"
    assert outbox(sqlite_engine) == {}


def test_a_2099_kept_cannot_pin_a_label_against_a_later_deleted(record_sqlite, sqlite_engine):
    with pytest.raises(CloudWasteError, match="action_at is outside"):
        record_sqlite(event_id="pin", action="kept", action_at=datetime(2099, 1, 1, tzinfo=UTC))
    record_sqlite(event_id="real", action="deleted")
    assert {e: r["action"] for e, r in outbox(sqlite_engine).items()} == {"real": "deleted"}


def test_a_conflicting_duplicate_raises_and_an_identical_one_is_a_no_op(record, engine):
    when = NOW - timedelta(minutes=5)
    first = {"event_id": "e1", "action_at": when, "context": {"screen": "list", "n": 1.5}}
    assert record(**first) == "e1"
    assert record(**{**first, "context": {"n": 1.5, "screen": "list"}}) == "e1"
    for change in (
        {"action": "kept"},
        {"user_id": "user-2"},
        {"action_at": when + timedelta(microseconds=1)},
        {"context": {"screen": "grid", "n": 1.5}},
        {"context": None},
    ):
        with pytest.raises(CloudWasteError, match="conflicting duplicate of an earlier event id"):
            record(**{**first, **change})
    stored = outbox(engine)
    assert list(stored) == ["e1"] and stored["e1"]["action"] == "deleted"


def test_the_api_accepts_iso_text_and_uuid_event_ids(record_sqlite, sqlite_engine):
    given_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert record_sqlite(event_id=given_id, action_at="2026-11-16T04:00:00+01:00") == str(given_id)
    assert outbox(sqlite_engine)[str(given_id)]["action_at"] == datetime(2026, 11, 16, 3)
