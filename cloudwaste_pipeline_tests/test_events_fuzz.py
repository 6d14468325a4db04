"""The event validator as a property: any JSON-like event gets a verdict (never an exception),
and whatever it accepts stores on SQLite and PostgreSQL and reads back as the same event."""

from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from cloudwaste_pipeline.privacy.events import check_action_event, same_event, storable_payload
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline.warehouse.load import insert_new
from cloudwaste_pipeline_tests.test_events import GOOD, NOW


def test_the_time_window_is_inclusive_and_converts_zones():
    later = NOW + timedelta(days=1)
    assert check_action_event({**GOOD, "action_at": later}, NOW)[0]["action_at"] == datetime(
        2026, 11, 17, 6
    )
    assert check_action_event({**GOOD, "action_at": later + timedelta(seconds=1)}, NOW)[1]
    east = datetime(2000, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    assert check_action_event({**GOOD, "action_at": east}, NOW)[0]["action_at"] == datetime(
        2000, 1, 1
    )


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
)
json_like = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=10,
)
garbage = st.one_of(
    st.text(alphabet="ab\x00\x1f\x7f\u2028 ", max_size=8),
    st.text(min_size=195, max_size=205),
    st.text(max_size=3).map(lambda t: t * 700),
    json_like,
)
zones = st.sampled_from(
    [None, UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12, minutes=-30))]
)
moments = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=zones
)
printable = st.characters(exclude_categories=("Cc", "Cs"))
valid = {
    "event_id": st.text(printable, min_size=1, max_size=40).filter(str.strip),
    "user_id": st.text(printable, min_size=1, max_size=40).filter(str.strip),
    "account_id": st.text(printable, min_size=1, max_size=40).filter(str.strip),
    "provider": st.sampled_from(["aws", "azure"]),
    "resource_id": st.text(printable, min_size=1, max_size=300).filter(str.strip),
    "action": st.sampled_from(["deleted", "ignored", "kept"]),
    "action_at": st.one_of(
        st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2026, 11, 17, 6), timezones=zones
        ),
        st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2026, 11, 17)).map(
            datetime.isoformat
        ),
    ),
    "context": st.one_of(st.none(), st.dictionaries(st.text(max_size=8), json_like, max_size=5)),
}
broken = {
    **dict.fromkeys(valid, garbage),
    "action_at": st.one_of(moments, moments.map(datetime.isoformat), garbage),
    "extra": json_like,
}
events = st.fixed_dictionaries(valid).flatmap(
    lambda event: st.dictionaries(st.sampled_from(sorted(broken)), st.none(), max_size=2).flatmap(
        lambda names: st.fixed_dictionaries({n: broken[n] for n in names}).map(
            lambda changes: {**event, **changes}
        )
    )
)


def test_any_event_gets_a_verdict_and_what_passes_stores_unchanged(engine: Engine):
    budget = 100 if engine.dialect.name == "sqlite" else 50
    table = schema.resource_action_events

    @settings(
        derandomize=True,
        max_examples=budget,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(events)
    def check(event: dict) -> None:
        row, problem = check_action_event(event, NOW)
        assert (row is None) != (problem is None)
        if row is None:
            assert isinstance(problem, str) and problem
            with conn.begin() as transaction:  # the asset quarantines it: that must store too
                bad = {"source": "fuzz", "source_ref": "1", "reason": problem}
                frame = pd.DataFrame([{**bad, "payload": storable_payload(event)}])
                assert insert_new(conn, schema.quarantine, frame, ["source", "source_ref"]) == 1
                transaction.rollback()
            return
        with conn.begin() as transaction:
            frame = pd.DataFrame([{**row, "received_at": NOW.replace(tzinfo=None)}])
            assert insert_new(conn, table, frame, ["event_id"]) == 1
            stored = conn.execute(sa.select(table).where(table.c.event_id == row["event_id"]))
            assert same_event(stored.one()._mapping, row)
            transaction.rollback()

    with engine.connect() as conn:  # one connection: SQLite attaches the raw store per connect
        check()
