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
from cloudwaste_pipeline.privacy.anonymize import hash_event, hash_id, load_key
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


def test_one_action_one_tick_updates_all_four_tables(demo):
    key = load_key()
    ml, trends = schema.ml_training_data, schema.cost_trend_data
    with api.engine().connect() as conn:
        payload = conn.execute(
            sa.select(schema.raw_scans.c.payload).where(
                schema.raw_scans.c.account_id == ACCOUNT.account_id,
                schema.raw_scans.c.scan_date == TEST_SPEC.demo_date,
            )
        ).scalar()
        unlabelled = {
            r.resource_hash
            for r in conn.execute(
                sa.select(ml.c.resource_hash).where(
                    ml.c.scan_date == TEST_SPEC.demo_date, ml.c.user_action.is_(None)
                )
            )
        }
        newest = conn.execute(sa.select(sa.func.max(schema.resource_action_events.c.seq))).scalar()
        account_hash = hash_id("account", "aws", ACCOUNT.account_id, key)
        month = TEST_SPEC.demo_date.strftime("%Y-%m")
        before = conn.execute(
            sa.select(trends.c.waste_eliminated).where(
                trends.c.account_hash == account_hash, trends.c.month == month
            )
        ).scalar()
    detection = next(
        d
        for d in payload["detections"]
        if hash_id("resource", "aws", d["resource_id"], key) in unlabelled and d["cost_monthly"] > 0
    )
    resource_hash = hash_id("resource", "aws", detection["resource_id"], key)
    event = api.record_user_action(
        user_id=ACCOUNT.owner_user_id,
        account_id=ACCOUNT.account_id,
        provider="aws",
        resource_id=detection["resource_id"],
        action="deleted",
    )
    instance = dg.DagsterInstance.get()
    tick = defs.resolve_sensor_def("user_action_sensor").evaluate_tick(
        dg.build_sensor_context(
            instance=instance, cursor=json.dumps({"last_seq": newest}), resources=defs.resources
        )
    )
    (request,) = tick.run_requests
    assert (
        defs.resolve_job_def("user_actions_job")
        .execute_in_process(instance=instance, run_config=request.run_config, tags=request.tags)
        .success
    )
    with api.engine().connect() as conn:
        pattern = conn.execute(
            sa.select(schema.user_action_patterns).where(
                schema.user_action_patterns.c.event_hash == hash_event(event, key)
            )
        ).one()
        labels = {
            r.user_action
            for r in conn.execute(
                sa.select(ml.c.user_action).where(ml.c.resource_hash == resource_hash)
            )
        }
        events = {
            r.event_type
            for r in conn.execute(
                sa.select(schema.resource_lifecycle_events.c.event_type).where(
                    schema.resource_lifecycle_events.c.source_event_hash == hash_event(event, key)
                )
            )
        }
        after = conn.execute(
            sa.select(trends.c.waste_eliminated).where(
                trends.c.account_hash == account_hash, trends.c.month == month
            )
        ).scalar()
    assert pattern.cost_saved_monthly == detection["cost_monthly"]
    assert labels == {"deleted"}
    assert events == {"status_changed", "deleted"}
    assert round(after - before, 2) == round(detection["cost_monthly"], 2)


def test_monitoring_checks_report_the_targets(demo):
    result = defs.resolve_job_def("user_actions_job").execute_in_process(
        instance=dg.DagsterInstance.get(), raise_on_error=False
    )
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    quarantined = evaluations["no_quarantined_actions"]
    assert quarantined.metadata["quarantined"].value == len([r for r in quarantine_reasons()])
    assert quarantined.passed == (quarantined.metadata["quarantined"].value == 0)


def test_collection_target_checks_compare_the_stats_with_their_targets(demo):
    from cloudwaste_pipeline.defs.checks import RECORDS_PER_SCAN_TARGET, USER_ACTION_RATE_TARGET_PCT

    stats = api.stats()
    day = TEST_SPEC.demo_date - timedelta(days=1)
    result = defs.resolve_job_def("scan_job").execute_in_process(
        instance=dg.DagsterInstance.get(),
        partition_key=dg.MultiPartitionKey({"date": str(day), "account": ACCOUNT.alias}),
    )
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    rate = evaluations["user_action_rate"]
    assert rate.metadata["user_action_rate_pct"].value == stats["user_action_rate_pct"]
    assert rate.passed == (stats["user_action_rate_pct"] >= USER_ACTION_RATE_TARGET_PCT)
    per_scan = evaluations["records_per_scan"]
    assert per_scan.passed == (stats["records_per_scan"] >= RECORDS_PER_SCAN_TARGET)
