"""Sensors: accounts from the accounts file become partitions; user actions become runs."""

import json

import dagster as dg
import sqlalchemy as sa

from cloudwaste_pipeline.defs.jobs import user_actions_job
from cloudwaste_pipeline.defs.partitions import cloud_accounts
from cloudwaste_pipeline.defs.resources import CloudResource, WarehouseResource
from cloudwaste_pipeline.warehouse import schema


def register_accounts(instance: dg.DagsterInstance, aliases: list[str]) -> list[str]:
    """Add the aliases that are not partitions yet; returns those added."""
    known = set(instance.get_dynamic_partitions(cloud_accounts.name))
    new = [a for a in aliases if a not in known]
    if new:
        instance.add_dynamic_partitions(cloud_accounts.name, new)
    return new


@dg.sensor(
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers the accounts of the accounts file as cloud_accounts partitions.",
)
def accounts_sensor(context: dg.SensorEvaluationContext, cloud: CloudResource):
    aliases = [a.name for a in cloud.accounts()]
    known = set(context.instance.get_dynamic_partitions(cloud_accounts.name))
    new = [a for a in aliases if a not in known]
    if not new:
        return dg.SkipReason(f"all {len(aliases)} account(s) already registered")
    return dg.SensorResult(
        dynamic_partitions_requests=[cloud_accounts.build_add_request(new)],
    )


@dg.sensor(
    job=user_actions_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Launches a user_actions_job run when new events reach the user-action outbox; the "
        "cursor is the last outbox sequence number handed to a run."
    ),
)
def user_action_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    state = json.loads(context.cursor) if context.cursor else {"last_seq": 0}
    events = schema.resource_action_events
    with warehouse.engine().connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(events.c.seq))).scalar() or 0
    if newest <= state["last_seq"]:
        return dg.SkipReason(f"no new user action since outbox sequence {state['last_seq']}")
    run = dg.RunRequest(
        run_key=f"actions:{state['last_seq'] + 1}-{newest}",
        run_config={"ops": {"user_action_patterns": {"config": {"max_seq": newest}}}},
        tags={"cloudwaste/outbox_range": f"{state['last_seq'] + 1}-{newest}"},
    )
    return dg.SensorResult(run_requests=[run], cursor=json.dumps({"last_seq": newest}))
