"""No waiting events, no poison event blocking the others: the user-action sensor and asset on a
small warehouse of their own (SQLite and PostgreSQL), no demo.

Every outbox row ends processed (stored, quarantined, dropped) or held with a back-off; the sensor
launches whenever due rows exist, whatever their sequence number, and retries a failed run with
back-off for as long as it takes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloudwaste_pipeline.defs.assets.actions import user_action_patterns
from cloudwaste_pipeline.defs.jobs import user_actions_job
from cloudwaste_pipeline.defs.resources import (
    ActionsInboxResource,
    AnonymizerResource,
    WarehouseResource,
)
from cloudwaste_pipeline.defs.sensors import (
    ActionCursor,
    plan_action_tick,
    retry_backoff,
    user_action_sensor,
)
from cloudwaste_pipeline.privacy import derive
from cloudwaste_pipeline.privacy.anonymize import hash_event
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline.warehouse.load import bulk_insert, insert_new

KEY = "k" * 40
NOW = datetime(2026, 11, 16, 12, 0)
ACCOUNT = "123456789012"
DETECTED = f"arn:aws:ec2:us-east-1:{ACCOUNT}:volume/vol-0123456789abcdef0"
UNDETECTED = f"arn:aws:ec2:us-east-1:{ACCOUNT}:volume/vol-0fedcba9876543210"
OUTBOX = schema.resource_action_events


def event(event_id: str, resource: str = DETECTED, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "user_id": "user-1",
        "account_id": ACCOUNT,
        "provider": "aws",
        "resource_id": resource,
        "action": "deleted",
        "action_at": NOW - timedelta(hours=1),
        "received_at": NOW - timedelta(minutes=5),
        **fields,
    }


@dataclass
class Harness:
    """One warehouse, one Dagster instance, the pipeline's clock, and the sensor and job."""

    engine: Engine
    url: str
    instance: dg.DagsterInstance
    monkeypatch: pytest.MonkeyPatch
    now: datetime = NOW

    def resources(self, **overrides: Any) -> dict[str, Any]:
        return {
            "warehouse": WarehouseResource(database_url=self.url),
            "anonymizer": AnonymizerResource(key=KEY),
            "actions_inbox": ActionsInboxResource(),
            **overrides,
        }

    def at(self, when: datetime) -> None:
        self.now = when
        self.monkeypatch.setenv("CLOUDWASTE_NOW", when.isoformat() + "+00:00")

    def insert(self, *events: dict[str, Any]) -> None:
        """Written straight into the outbox, as another application may."""
        with self.engine.begin() as conn:
            insert_new(conn, OUTBOX, pd.DataFrame(list(events)), ["event_id"])

    def tick(self, cursor: str | None) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=cursor, resources=self.resources()
        )
        return user_action_sensor.evaluate_tick(context)

    def run(self, run_key: str | None = None, **resources: Any) -> dg.ExecuteInProcessResult:
        defs = dg.Definitions(
            assets=[user_action_patterns], jobs=[user_actions_job], resources=self.resources()
        )
        job = defs.resolve_job_def("user_actions_job")
        return job.execute_in_process(
            instance=self.instance,
            tags={"dagster/run_key": run_key} if run_key else None,
            resources=resources or None,
            raise_on_error=False,
        )

    def outbox(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return {r.event_id: r for r in conn.execute(sa.select(OUTBOX))}

    def quarantined(self) -> dict[str, str]:
        """Reason per event id, from the outbox-row-keyed quarantine rows."""
        q = schema.quarantine
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(q.c.source_ref, q.c.payload, q.c.reason))
            return {r.payload["event_id"]: r.reason for r in rows if r.source_ref[:7] == "outbox:"}

    def stored(self) -> list[str]:
        patterns = schema.user_action_patterns
        with self.engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(sa.select(patterns.c.event_hash)))


def detected_resource(engine: Engine) -> None:
    """``DETECTED`` has been scanned: one training row, so its events can be stored."""
    detection = {
        "provider": "aws",
        "account_id": ACCOUNT,
        "resource_id": DETECTED,
        "resource_type": "ebs_volume",
        "region": "us-east-1",
        "detection_scenario": "unattached",
        "confidence_level": "high",
        "cost_monthly": 8.0,
        "detected_at": (NOW - timedelta(days=2)).isoformat(),
    }
    rows = derive.training_rows([detection], KEY.encode(), NOW.date() - timedelta(days=2), NOW)
    with engine.begin() as conn:
        bulk_insert(conn, schema.ml_training_data, rows)


@pytest.fixture
def harness(engine: Engine, tmp_path, monkeypatch) -> Harness:
    monkeypatch.setenv("CLOUDWASTE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CLOUDWASTE_ACTIONS_S3_URI", raising=False)
    detected_resource(engine)
    url = engine.url.render_as_string(hide_password=False)
    h = Harness(engine, url, dg.DagsterInstance.ephemeral(), monkeypatch)
    h.at(NOW)
    return h


def launch(h: Harness, tick: dg.SensorResult, **resources: Any) -> list[dg.ExecuteInProcessResult]:
    """Run what the tick asked for, tagged with its run_key as the daemon tags it."""
    return [h.run(r.run_key, **resources) for r in tick.run_requests]


def test_a_row_committed_below_the_seen_sequence_still_launches_a_run(harness):
    """PostgreSQL hands out sequence numbers at insert and rows appear at commit: a row may
    become visible after a higher number was seen (here inserted with its number explicitly)."""
    h = harness
    h.insert(event("e1", seq=1), event("e3", seq=3))
    first = h.tick(None)
    assert len(first.run_requests) == 1
    assert all(r.success for r in launch(h, first))
    idle = h.tick(first.cursor)
    assert not idle.run_requests
    h.insert(event("e2", seq=2))  # the late commit
    late = h.tick(idle.cursor)
    assert len(late.run_requests) == 1
    assert late.run_requests[0].run_key != first.run_requests[0].run_key
    assert all(r.success for r in launch(h, late))
    assert h.stored() == sorted(hash_event(e, KEY.encode()) for e in ("e1", "e2", "e3"))
    assert not h.tick(h.tick(late.cursor).cursor).run_requests


def test_no_run_is_asked_for_while_one_is_in_flight_even_a_manual_one(harness):
    h = harness
    h.insert(event("e1"))
    job = dg.Definitions(
        assets=[user_action_patterns], jobs=[user_actions_job], resources=h.resources()
    ).resolve_job_def("user_actions_job")
    manual = h.instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
    busy = h.tick(None)
    assert not busy.run_requests and "in flight" in busy.skip_message
    h.instance.delete_run(manual.run_id)
    assert len(h.tick(busy.cursor).run_requests) == 1


def test_failed_runs_are_retried_with_growing_backoff_until_one_succeeds(harness):
    h = harness
    h.insert(event("e1"))
    broken = {"anonymizer": AnonymizerResource(key="short")}  # every run fails
    cursor, keys = None, []
    for failures in range(1, 8):  # well past the 5 attempts the sensor used to give up after
        tick = h.tick(cursor)
        assert len(tick.run_requests) == 1, tick.skip_message
        keys.append(tick.run_requests[0].run_key)
        assert not any(r.success for r in launch(h, tick, **broken))
        waiting = h.tick(tick.cursor)
        assert not waiting.run_requests
        assert f"last {failures} run(s) failed" in waiting.skip_message
        assert "retrying at" in waiting.skip_message
        backoff = retry_backoff(failures)
        assert backoff == min(timedelta(minutes=2 ** (failures - 1)), timedelta(hours=1))
        h.at(h.now + backoff - timedelta(seconds=1))
        assert not h.tick(waiting.cursor).run_requests  # not before its time
        h.at(h.now + timedelta(seconds=1))
        cursor = waiting.cursor
    assert len(set(keys)) == len(keys)  # a failed run_key is never relaunched: new keys
    tick = h.tick(cursor)
    assert all(r.success for r in launch(h, tick))
    done = h.tick(tick.cursor)
    assert not done.run_requests and "no user action due" in done.skip_message
    assert json.loads(done.cursor)["failures"] == 0
    assert h.stored() == [hash_event("e1", KEY.encode())]


def test_the_sensor_never_launches_beside_a_run_in_flight():
    state, key, _ = plan_action_tick(ActionCursor(), None, False, 3, NOW)
    assert key == "actions:1" and state.last == key and state.count == 1
    again, none, reason = plan_action_tick(state, dg.DagsterRunStatus.STARTED, False, 3, NOW)
    assert none is None and "in flight" in reason and again == state
    done, none, reason = plan_action_tick(state, dg.DagsterRunStatus.SUCCESS, True, 3, NOW)
    assert none is None and "in flight" in reason and done.last is None
    lost, key, _ = plan_action_tick(state, None, False, 3, NOW)  # its run was never created
    assert key == "actions:2" and lost.count == 2


def test_a_year_one_row_written_around_the_api_is_quarantined_and_the_next_events_land(harness):
    """On main this event made every later user_actions_job fail."""
    h = harness
    h.insert(event("before"), event("poison", action_at=datetime(1, 1, 1)), event("after"))
    result = h.run()
    assert result.success
    assert h.stored() == sorted(hash_event(e, KEY.encode()) for e in ("before", "after"))
    assert set(h.quarantined()) == {"poison"}
    assert all(row.processed_at is not None for row in h.outbox().values())
    h.insert(event("later"))
    assert h.run().success
    assert hash_event("later", KEY.encode()) in h.stored()


def test_an_event_whose_processing_raises_is_quarantined_with_its_type_only(harness, monkeypatch):
    h = harness
    real = derive.action_rows

    def explode_on_poison(events: pd.DataFrame, *args: Any, **kwargs: Any) -> Any:
        if "poison" in set(events["event_id"]):
            raise RuntimeError(f"cannot handle {DETECTED}")
        return real(events, *args, **kwargs)

    monkeypatch.setattr(derive, "action_rows", explode_on_poison)
    h.insert(event("a"), event("poison"), event("b"))
    result = h.run()
    assert result.success
    [materialization] = result.asset_materializations_for_node("user_action_patterns")
    assert materialization.metadata["events_failed_processing"].value == 1
    assert h.quarantined() == {"poison": "processing failed: RuntimeError"}
    assert h.stored() == sorted(hash_event(e, KEY.encode()) for e in ("a", "b"))
    assert all(row.processed_at is not None for row in h.outbox().values())


def test_events_left_by_runs_that_died_are_processed_one_by_one(harness, monkeypatch):
    """A run killed mid-batch leaves its claim (attempts counted, nothing finished); after two
    such runs the events are taken one at a time, so one that kills processing cannot take the
    rest with it; after eight, one is quarantined without being processed again."""
    h = harness
    h.insert(
        event("a", attempts=2),
        event("poison", attempts=2),
        event("b", attempts=2),
        event("killer", attempts=8),
        event("fresh", attempts=1),  # one death only: still processed with the batch
    )
    seen: list[int] = []
    real = derive.action_rows

    def spy(events: pd.DataFrame, *args: Any, **kwargs: Any) -> Any:
        seen.append(len(events))
        if "poison" in set(events["event_id"]):
            raise MemoryError("processing died")
        return real(events, *args, **kwargs)

    monkeypatch.setattr(derive, "action_rows", spy)
    assert h.run().success
    assert seen == [1, 1, 1, 1]  # "fresh" alone in its batch, then a, poison, b one by one
    quarantined = h.quarantined()
    assert set(quarantined) == {"poison", "killer"}
    assert quarantined["poison"] == "processing failed: MemoryError"
    assert "did not finish in 8 runs" in quarantined["killer"]
    assert h.stored() == sorted(hash_event(e, KEY.encode()) for e in ("a", "b", "fresh"))
    rows = h.outbox().values()
    assert {r.event_id: r.attempts for r in rows} == {
        "a": 3,
        "poison": 3,
        "b": 3,
        "killer": 9,
        "fresh": 2,
    }
    assert all(r.processed_at is not None for r in rows)


def test_held_events_wait_with_backoff_then_are_quarantined_when_the_hold_expires(harness):
    h = harness
    h.insert(event("early", resource=UNDETECTED))
    first = h.tick(None)
    assert all(r.success for r in launch(h, first))
    row = h.outbox()["early"]
    assert row.processed_at is None and row.attempts == 1
    assert row.next_attempt_at == NOW + timedelta(hours=1)
    quiet = h.tick(first.cursor)
    for _ in range(3):  # ticks every 30 s do not relaunch it
        assert not quiet.run_requests and "held events wait until" in quiet.skip_message
        quiet = h.tick(quiet.cursor)
    h.at(NOW + timedelta(hours=1))
    retry = h.tick(quiet.cursor)
    assert all(r.success for r in launch(h, retry)) and len(retry.run_requests) == 1
    row = h.outbox()["early"]
    assert row.attempts == 2 and row.next_attempt_at == h.now + timedelta(hours=2)
    h.at(NOW + timedelta(hours=73))
    expired = h.tick(retry.cursor)
    assert all(r.success for r in launch(h, expired)) and len(expired.run_requests) == 1
    assert "not detected within 72 h" in h.quarantined()["early"]
    assert h.outbox()["early"].processed_at is not None


def test_processed_at_is_set_for_stored_quarantined_dropped_and_previously_stored(harness):
    from cloudwaste_pipeline import api

    h = harness
    h.insert(event("stored-before"))
    assert h.run().success
    with h.engine.begin() as conn:  # as left by main before the outbox kept its state
        conn.execute(sa.update(OUTBOX).values(processed_at=None, attempts=0))
    h.insert(
        event("good"),
        event("bad", action="snoozed"),
        event("erased", user_id="user-gone"),
    )
    h.monkeypatch.setenv("CLOUDWASTE_ANONYMIZATION_KEY", KEY)
    api.erase(user_id="user-gone", database_url=h.url)
    assert h.run().success
    rows = h.outbox()
    assert "erased" not in rows  # dropped: the row of an erased subject is deleted
    assert {e: r.processed_at is not None for e, r in rows.items()} == {
        "stored-before": True,
        "good": True,
        "bad": True,
    }
    assert set(h.quarantined()) == {"bad"}
    assert h.stored() == sorted(hash_event(e, KEY.encode()) for e in ("stored-before", "good"))
    with h.engine.connect() as conn:
        due = conn.execute(
            sa.select(sa.func.count()).where(OUTBOX.c.processed_at.is_(None))
        ).scalar()
    assert due == 0


def test_two_rows_with_one_event_id_are_quarantined_by_row_not_hidden(harness):
    """A re-delivered event id with other content (the first row gone to retention) is a
    conflicting duplicate: quarantined under its own outbox row, never silently dropped."""
    h = harness
    h.insert(event("dup"))
    assert h.run().success
    with h.engine.begin() as conn:
        conn.execute(sa.delete(OUTBOX))
    h.insert(event("dup", action="kept"))
    assert h.run().success
    assert "another user, resource or action" in h.quarantined()["dup"]
    patterns = schema.user_action_patterns
    with h.engine.connect() as conn:
        actions = [r[0] for r in conn.execute(sa.select(patterns.c.action_taken))]
    assert actions == ["deleted"]  # the stored decision is untouched
    assert all(row.processed_at is not None for row in h.outbox().values())
