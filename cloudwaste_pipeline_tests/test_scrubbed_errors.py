"""Error text Dagster stores (step failures in the event log, failed sensor ticks) holds no raw
cloud id: not in the message, not in a chained cause, not in the stack."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.scheduler.instigation import TickStatus
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.sensor import execute_sensor_iteration
from dagster._serdes import serialize_value

from cloudwaste_pipeline.definitions import defs
from cloudwaste_pipeline.defs.assets.actions import user_action_patterns
from cloudwaste_pipeline.defs.errors import error_text, scrubbed
from cloudwaste_pipeline.defs.jobs import user_actions_job
from cloudwaste_pipeline.defs.resources import (
    ActionsInboxResource,
    AnonymizerResource,
    WarehouseResource,
)
from cloudwaste_pipeline.defs.sensors import user_action_sensor

ACCOUNT = "123456789012"
SUBSCRIPTION = "0b1f6471-1bf0-4dda-aec3-111122223333"
ARN = f"arn:aws:iam::{ACCOUNT}:role/CloudWasteScanner"
AZURE_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-prod/providers/Microsoft.Compute/disks/d1"
)
RAW = (ACCOUNT, SUBSCRIPTION, ARN, AZURE_ID, "rg-prod")


class BrokenWarehouse(WarehouseResource):
    """A warehouse whose driver error quotes raw ids, with a cause that quotes one more."""

    def engine(self) -> Any:
        try:
            raise KeyError(f"no credentials for account {ACCOUNT}")
        except KeyError as exc:
            raise PermissionError(f"{ARN} may not read {AZURE_ID}") from exc


BROKEN = {
    "warehouse": BrokenWarehouse(),
    "anonymizer": AnonymizerResource(key="k" * 40),
    "actions_inbox": ActionsInboxResource(),
}
broken_defs = dg.Definitions(
    assets=[user_action_patterns],
    jobs=[user_actions_job],
    sensors=[user_action_sensor],
    resources=BROKEN,
)


def assert_no_raw_id(stored: str) -> None:
    leaked = [raw for raw in RAW if raw in stored]
    assert not leaked, f"raw ids stored by Dagster: {leaked}"


def test_a_failed_run_stores_the_error_type_and_scrubbed_text_only():
    with dg.instance_for_test() as instance:
        result = broken_defs.resolve_job_def("user_actions_job").execute_in_process(
            instance=instance, raise_on_error=False
        )
        assert not result.success
        stored = serialize_value(list(instance.all_logs(result.run_id)))
    assert_no_raw_id(stored)
    assert "PermissionError" in stored and "<arn>" in stored  # still says what went wrong


def test_a_failed_sensor_tick_stores_no_raw_id():
    origin = LoadableTargetOrigin(module_name=__name__, attribute="broken_defs")
    target = InProcessWorkspaceLoadTarget(InProcessCodeLocationOrigin(origin))
    with dg.instance_for_test() as instance:
        with create_test_daemon_workspace_context(target, instance) as workspace:
            list(execute_sensor_iteration(workspace, logging.getLogger("test"), None, None))
        [state] = [
            s for s in instance.all_instigator_state() if s.instigator_name == "user_action_sensor"
        ]
        [tick] = instance.get_ticks(state.instigator_origin_id, state.selector_id)
        assert tick.status == TickStatus.FAILURE
        stored = serialize_value(tick.tick_data)
    assert_no_raw_id(stored)
    assert "PermissionError" in stored


def test_database_errors_lose_their_parameters_and_detail_lines():
    error = sa.exc.IntegrityError(
        "INSERT INTO raw.resource_action_events (resource_id) VALUES (?)",
        {"resource_id": "vm-of-alice"},
        sqlite3.IntegrityError(
            'duplicate key value violates unique constraint "uq"\n'
            "DETAIL:  Key (event_id)=(alice-event) already exists."
        ),
    )
    assert "vm-of-alice" in str(error)
    text = error_text(error)
    assert text == 'IntegrityError: duplicate key value violates unique constraint "uq"'


def test_a_generator_body_and_a_failure_of_our_own_are_scrubbed_too():
    @scrubbed
    def body() -> Any:
        yield 1
        raise dg.Failure(description=f"cannot scan {ARN}", metadata={"where": AZURE_ID, "n": 2})

    with pytest.raises(dg.Failure) as caught:
        list(body())
    failure = caught.value
    assert failure.__cause__ is None and failure.__suppress_context__
    assert_no_raw_id(failure.description + serialize_value(failure.metadata))
    assert failure.metadata["n"].value == 2


def test_every_sensor_schedule_and_raw_id_handling_body_is_scrubbed():
    bodies = {s.name: getattr(s, "_run_status_sensor_fn", s._raw_fn) for s in defs.sensors}
    bodies["daily_scan_schedule"] = defs.resolve_schedule_def(
        "daily_scan_schedule"
    )._execution_fn.decorated_fn  # the one schedule with a body (it reads the accounts file)
    for name in (
        "raw_cloud_scans",
        "ml_training_data",
        "resource_lifecycle_events",
        "cloudwatch_metrics_history",
        "user_action_patterns",
        "cost_trend_data",
        "ml_dataset_exports",
    ):
        bodies[name] = defs.resolve_assets_def(name).op.compute_fn.decorated_fn
    for op in defs.resolve_job_def("ml_cleanup_job").all_node_defs:
        bodies[op.name] = op.compute_fn.decorated_fn
    unscrubbed = [name for name, fn in bodies.items() if getattr(fn, "__wrapped__", None) is None]
    assert not unscrubbed
