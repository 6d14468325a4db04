"""User actions on the shared demo instance: bad events are quarantined with their reason and
never stop good ones, events for undetected resources are held then quarantined, and the sensor
relaunches a failed range under a new run_key."""

import json
from datetime import timedelta

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from cloudwaste_pipeline import api, settings
from cloudwaste_pipeline.definitions import defs
from cloudwaste_pipeline.defs.sensors import RANGE_TAG
from cloudwaste_pipeline.privacy.anonymize import hash_event, load_key
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline.warehouse.load import insert_new
from cloudwaste_pipeline_tests.demo_instance import TEST_SPEC

ACCOUNT = TEST_SPEC.accounts[0]


def run_actions(**config) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("user_actions_job").execute_in_process(
        instance=dg.DagsterInstance.get(),
        run_config={"ops": {"user_action_patterns": {"config": config}}} if config else None,
        raise_on_error=False,
    )


def quarantine_reasons() -> dict[str, str]:
    with api.engine().connect() as conn:
        rows = conn.execute(sa.select(schema.quarantine.c.source_ref, schema.quarantine.c.reason))
        return {r.source_ref: r.reason for r in rows}


def a_detected_resource() -> str:
    with api.engine().connect() as conn:
        payload = conn.execute(sa.select(schema.raw_scans.c.payload)).first().payload
    return payload["detections"][-1]["resource_id"]


def test_bad_events_are_quarantined_and_good_ones_still_land(demo):
    now = settings.now().replace(tzinfo=None)
    base = {
        "user_id": ACCOUNT.owner_user_id,
        "account_id": ACCOUNT.account_id,
        "provider": "aws",
        "resource_id": a_detected_resource(),
        "action_at": now,
    }
    with api.engine().begin() as conn:  # written around record_user_action's validation
        insert_new(
            conn,
            schema.resource_action_events,
            pd.DataFrame(
                [
                    {**base, "event_id": "bad-action", "action": "archived"},
                    {**base, "event_id": "good-action", "action": "ignored"},
                ]
            ),
            ["event_id"],
        )
    assert run_actions().success
    reasons = quarantine_reasons()
    assert "unknown action 'archived'" in reasons["bad-action"]
    assert "good-action" not in reasons
    good = hash_event("good-action", load_key())
    with api.engine().connect() as conn:
        stored = conn.execute(
            sa.select(schema.user_action_patterns.c.action_taken).where(
                schema.user_action_patterns.c.event_hash == good
            )
        ).scalar()
    assert stored == "ignored"
    assert run_actions().success  # a replay quarantines nothing twice
    assert len(quarantine_reasons()) == len(reasons)


def test_an_undetected_resource_is_held_then_quarantined(demo, monkeypatch):
    unknown = f"arn:aws:ec2:us-east-1:{ACCOUNT.account_id}:volume/vol-00000000000000000"
    api.record_user_action(
        user_id=ACCOUNT.owner_user_id,
        account_id=ACCOUNT.account_id,
        provider="aws",
        resource_id=unknown,
        action="deleted",
        event_id="early-event",
    )
    result = run_actions(hold_hours=72)
    assert result.success
    assert "early-event" not in quarantine_reasons()
    held = result.asset_materializations_for_node("user_action_patterns")[0]
    assert held.metadata["events_held"].value >= 1
    later = settings.now() + timedelta(hours=73)
    monkeypatch.setenv("CLOUDWASTE_NOW", later.isoformat())
    assert run_actions(hold_hours=72).success
    assert "not detected within 72 h" in quarantine_reasons()["early-event"]


def test_the_sensor_relaunches_a_failed_range_under_a_new_key(demo, monkeypatch):
    instance = dg.DagsterInstance.get()
    monkeypatch.delenv("CLOUDWASTE_ANONYMIZATION_KEY")
    failed = defs.resolve_job_def("user_actions_job").execute_in_process(
        instance=instance, tags={RANGE_TAG: "1-2"}, raise_on_error=False
    )
    assert not failed.success
    monkeypatch.undo()
    with api.engine().connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(schema.resource_action_events.c.seq))).scalar()
    cursor = json.dumps({"last_seq": newest, "in_flight": {"1-2": 0}})
    sensor = defs.resolve_sensor_def("user_action_sensor")
    tick = sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources)
    )
    assert [r.run_key for r in tick.run_requests] == ["actions:1-2:retry1"]
    assert json.loads(tick.cursor)["in_flight"] == {"1-2": 1}
    retried = defs.resolve_job_def("user_actions_job").execute_in_process(
        instance=instance, tags={RANGE_TAG: "1-2"}, raise_on_error=False
    )
    assert retried.success
    done = sensor.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=tick.cursor, resources=defs.resources)
    )
    assert not done.run_requests and json.loads(done.cursor)["in_flight"] == {}
