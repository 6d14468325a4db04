"""User actions on the shared demo instance: bad events are quarantined with their reason and
never stop good ones, events for undetected resources are held then quarantined, and the sensor
launches while due events exist (see test_action_sensor.py for late rows, retries, holds)."""

from datetime import timedelta
from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from cloudwaste_pipeline import api, settings
from cloudwaste_pipeline.definitions import defs
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
    """Reasons by event id: outbox events are quarantined under their row, ``outbox:<seq>``."""
    q = schema.quarantine
    with api.engine().connect() as conn:
        rows = conn.execute(sa.select(q.c.source_ref, q.c.payload, q.c.reason))
        return {
            r.payload["event_id"] if r.source_ref.startswith("outbox:") else r.source_ref: r.reason
            for r in rows
        }


def demo_day_scan(conn: sa.Connection) -> dict[str, Any]:
    """The first account's raw scan of the demo day: its detections carry raw resource ids."""
    return conn.execute(
        sa.select(schema.raw_scans.c.payload).where(
            schema.raw_scans.c.account_id == ACCOUNT.account_id,
            schema.raw_scans.c.scan_date == TEST_SPEC.demo_date,
        )
    ).scalar()


def a_detected_resource() -> str:
    """A resource of ACCOUNT's (scans of a shard's accounts are stored in any order)."""
    raw = schema.raw_scans
    with api.engine().connect() as conn:
        payload = (
            conn.execute(sa.select(raw.c.payload).where(raw.c.account_id == ACCOUNT.account_id))
            .first()
            .payload
        )
    return payload["detections"][-1]["resource_id"]


def _tick(cursor: str | None) -> Any:
    """One sensor evaluation from nothing but the durable cursor, as after a daemon restart."""
    return defs.resolve_sensor_def("user_action_sensor").evaluate_tick(
        dg.build_sensor_context(
            instance=dg.DagsterInstance.get(), cursor=cursor, resources=defs.resources
        )
    )


def _launch(tick: Any) -> list[str]:
    """Run what the tick asked for, tagged with its run_key as the daemon tags a launched run."""
    for request in tick.run_requests:
        result = defs.resolve_job_def("user_actions_job").execute_in_process(
            instance=dg.DagsterInstance.get(),
            run_config=request.run_config,
            tags={**request.tags, "dagster/run_key": request.run_key},
        )
        assert result.success
    return [r.run_key for r in tick.run_requests]


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


def test_one_action_one_tick_updates_all_four_tables(demo):
    key = load_key()
    ml, trends = schema.ml_training_data, schema.cost_trend_data
    with api.engine().connect() as conn:
        payload = demo_day_scan(conn)
        unlabelled = {
            r.resource_hash
            for r in conn.execute(
                sa.select(ml.c.resource_hash).where(
                    ml.c.scan_date == TEST_SPEC.demo_date, ml.c.user_action.is_(None)
                )
            )
        }
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
    assert len(_launch(_tick(None))) == 1  # each run succeeds
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
    from cloudwaste_pipeline.defs.partitions import scan_key

    stats = api.stats()
    day = TEST_SPEC.demo_date - timedelta(days=1)
    result = defs.resolve_job_def("scan_job").execute_in_process(
        instance=dg.DagsterInstance.get(),
        partition_key=scan_key(day, ACCOUNT.alias),
    )
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    rate = evaluations["user_action_rate"]
    assert rate.metadata["user_action_rate_pct"].value == stats["user_action_rate_pct"]
    assert rate.passed == (stats["user_action_rate_pct"] >= USER_ACTION_RATE_TARGET_PCT)
    per_scan = evaluations["records_per_scan"]
    assert per_scan.passed == (stats["records_per_scan"] >= RECORDS_PER_SCAN_TARGET)


def test_batches_of_events_through_ticks_exactly_once_and_replayed_ticks_launch_nothing(demo):
    key = load_key()
    with api.engine().connect() as conn:
        payload = demo_day_scan(conn)
        acted_on = {
            r.resource_hash
            for r in conn.execute(sa.select(schema.user_action_patterns.c.resource_hash))
        }
        in_outbox = {
            r.resource_id
            for r in conn.execute(sa.select(schema.resource_action_events.c.resource_id))
        }
    # Resources nobody has acted on yet, whatever other tests of the shared demo did before.
    resources = [
        d["resource_id"]
        for d in payload["detections"]
        if hash_id("resource", "aws", d["resource_id"], key) not in acted_on
        and d["resource_id"] not in in_outbox
    ][:4]
    assert len(resources) == 4
    now = settings.now().replace(tzinfo=None)
    base = {"user_id": ACCOUNT.owner_user_id, "account_id": ACCOUNT.account_id, "provider": "aws"}

    def record(event_id: str, resource: str, action: str, hours_ago: float) -> None:
        api.record_user_action(
            **base, resource_id=resource, action=action, event_id=event_id,
            action_at=now - timedelta(hours=hours_ago),
        )  # fmt: skip

    # Every action is dated after the demo day's scan (the clock is 2 h past it): the shared demo
    # instance's other tests rebuild that day's estate from the deletions recorded before it.
    # Batch 1: three decisions, a duplicate delivery, and one malformed event.
    record("batch-a", resources[0], "kept", 0.5)
    record("batch-b", resources[1], "ignored", 0.5)
    record("batch-c", resources[2], "deleted", 0.5)
    record("batch-a", resources[0], "kept", 0.5)  # the same event delivered twice
    with api.engine().begin() as conn:  # a writer that bypassed record_user_action's checks
        insert_new(
            conn, schema.resource_action_events,
            pd.DataFrame([{**base, "event_id": "batch-bad", "resource_id": resources[3],
                           "action": "snoozed", "action_at": now}]),
            ["event_id"],
        )  # fmt: skip
    first = _tick(None)
    first_keys = _launch(first)
    assert len(first_keys) == 1

    # Batch 2, arriving after the first runs: a change of mind, and an event that arrives late
    # but happened before the decision already stored (out of order: it must not win).
    record("batch-d", resources[0], "deleted", 0.1)
    record("batch-e", resources[1], "kept", 1)
    second = _tick(first.cursor)
    second_keys = _launch(second)
    assert len(second_keys) == 1 and second_keys != first_keys

    valid = ["batch-a", "batch-b", "batch-c", "batch-d", "batch-e"]
    patterns = schema.user_action_patterns
    with api.engine().connect() as conn:
        stored = [
            r.event_hash
            for r in conn.execute(
                sa.select(patterns.c.event_hash).where(
                    patterns.c.event_hash.in_([hash_event(e, key) for e in valid])
                )
            )
        ]
        labels = {
            r.resource_hash: r.user_action
            for r in conn.execute(
                sa.select(schema.ml_training_data.c.resource_hash,
                          schema.ml_training_data.c.user_action)
                .where(schema.ml_training_data.c.scan_date == TEST_SPEC.demo_date)
            )
        }  # fmt: skip
    assert sorted(stored) == sorted(hash_event(e, key) for e in valid)  # each exactly once
    label_of = {r: labels[hash_id("resource", "aws", r, key)] for r in resources[:3]}
    assert label_of == {resources[0]: "deleted", resources[1]: "ignored", resources[2]: "deleted"}
    assert "unknown action 'snoozed'" in quarantine_reasons()["batch-bad"]

    # Nothing is due any more: replaying either tick launches nothing, and re-running the job
    # (as a replayed run would) stores nothing twice.
    for cursor in (first.cursor, second.cursor):
        replayed = _tick(cursor)
        assert not replayed.run_requests and "no user action due" in replayed.skip_message
    assert run_actions().success
    with api.engine().connect() as conn:
        again = conn.execute(
            sa.select(sa.func.count()).where(
                patterns.c.event_hash.in_([hash_event(e, key) for e in valid])
            )
        ).scalar()
    assert again == len(valid)
