"""Sensors: accounts from the accounts file become partitions; user actions become runs; failed
runs become alerts."""

import json

import dagster as dg
import sqlalchemy as sa
from botocore.exceptions import BotoCoreError, ClientError

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.defs.jobs import user_actions_job
from cloudwaste_pipeline.defs.partitions import cloud_accounts
from cloudwaste_pipeline.defs.resources import (
    ActionsInboxResource,
    CloudResource,
    WarehouseResource,
)
from cloudwaste_pipeline.inbox import ingest_folder, ingest_s3_prefix
from cloudwaste_pipeline.monitoring import WEBHOOK_ENV, failure_text, post_webhook, webhook_url
from cloudwaste_pipeline.privacy.anonymize import scrub_text
from cloudwaste_pipeline.warehouse import schema


def unregistered(instance: dg.DagsterInstance, aliases: list[str]) -> list[str]:
    """The aliases that are not cloud_accounts partitions yet."""
    known = set(instance.get_dynamic_partitions(cloud_accounts.name))
    return [a for a in aliases if a not in known]


def register_accounts(instance: dg.DagsterInstance, aliases: list[str]) -> list[str]:
    """Add the aliases that are not partitions yet; returns those added."""
    new = unregistered(instance, aliases)
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
    new = unregistered(context.instance, aliases)
    if not new:
        return dg.SkipReason(f"all {len(aliases)} account(s) already registered")
    return dg.SensorResult(
        dynamic_partitions_requests=[cloud_accounts.build_add_request(new)],
    )


RANGE_TAG = "cloudwaste/outbox_range"
MAX_ATTEMPTS = 5
FAILED = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def action_run(first: int, last: int, attempt: int) -> dg.RunRequest:
    """One outbox range; a retry gets a new run_key (a failed run_key is never relaunched)."""
    key = f"actions:{first}-{last}" + (f":retry{attempt}" if attempt else "")
    return dg.RunRequest(
        run_key=key,
        run_config={"ops": {"user_action_patterns": {"config": {"max_seq": last}}}},
        tags={RANGE_TAG: f"{first}-{last}", "cloudwaste/attempt": str(attempt)},
    )


@dg.sensor(
    job=user_actions_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Reads JSON-lines files dropped in the actions inbox (and under the S3 prefix, when "
        "CLOUDWASTE_ACTIONS_S3_URI or actions_inbox.s3_uri is set) into the outbox, launches a "
        "user_actions_job run when new events reach the outbox, and relaunches a range whose "
        "run failed (up to 5 attempts). The cursor holds the last outbox sequence handed to a "
        "run and the ranges still in flight."
    ),
)
def user_action_sensor(
    context: dg.SensorEvaluationContext,
    warehouse: WarehouseResource,
    actions_inbox: ActionsInboxResource,
):
    state = json.loads(context.cursor) if context.cursor else {}
    last_seq, in_flight = state.get("last_seq", 0), dict(state.get("in_flight", {}))
    requests, notes = [], []
    for span, attempt in sorted(in_flight.items()):
        runs = context.instance.get_runs(filters=dg.RunsFilter(tags={RANGE_TAG: span}), limit=1)
        if runs and runs[0].status == dg.DagsterRunStatus.SUCCESS:
            del in_flight[span]
        elif runs and runs[0].status in FAILED:
            if attempt + 1 >= MAX_ATTEMPTS:
                notes.append(f"range {span} failed {MAX_ATTEMPTS} times; left to later batches")
                del in_flight[span]
                continue
            first, last = (int(x) for x in span.split("-"))
            requests.append(action_run(first, last, attempt + 1))
            in_flight[span] = attempt + 1
    dropped = ingest_folder(warehouse.engine(), settings.paths().actions_inbox, settings.now())
    if dropped.files:
        notes.append(dropped.describe("dropped file"))
        context.log.info(notes[-1])
    location = actions_inbox.s3_location()  # None: no S3 inbox, no AWS call
    if location:
        try:
            uploaded = ingest_s3_prefix(
                warehouse.engine(), actions_inbox.s3_client(), *location, settings.now()
            )
        except (BotoCoreError, ClientError) as exc:
            # Not worth failing the tick for: events from the API and the folder must keep
            # launching runs while the bucket is unreachable.
            notes.append(f"S3 actions inbox not listed ({type(exc).__name__}); retried next tick")
            # SDK messages can name the caller's ARN (an account id): scrubbed like scan errors.
            context.log.warning(f"{notes[-1]}: {scrub_text(str(exc))}")
        else:
            if uploaded.files or uploaded.failed or uploaded.more:
                notes.append(uploaded.describe("S3 object"))
                (context.log.warning if uploaded.failed else context.log.info)(notes[-1])
    events = schema.resource_action_events
    with warehouse.engine().connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(events.c.seq))).scalar() or 0
    if newest > last_seq:
        requests.append(action_run(last_seq + 1, newest, 0))
        in_flight[f"{last_seq + 1}-{newest}"] = 0
        last_seq = newest
    cursor = json.dumps({"last_seq": last_seq, "in_flight": in_flight}, sort_keys=True)
    if not requests:
        waiting = f"; {len(in_flight)} range(s) in flight" if in_flight else ""
        reason = f"no new user action since outbox sequence {last_seq}{waiting}"
        return dg.SensorResult(skip_reason="; ".join([reason, *notes]), cursor=cursor)
    return dg.SensorResult(run_requests=requests, cursor=cursor)


@dg.run_failure_sensor(
    name="run_failure_alert_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Alerts on every failed run: an error line in the sensor's log and, when "
        f"{WEBHOOK_ENV} is set, a POST to that webhook (Slack-compatible). The text names the "
        "job, run and partition (account alias) and the first line of the error, ids scrubbed."
    ),
)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext) -> None:
    run = context.dagster_run
    step_failures = context.get_step_failure_events()
    error = step_failures[0].step_failure_data.error if step_failures else None
    while error is not None and error.cause is not None:  # the user's error, not Dagster's wrapper
        error = error.cause
    text = failure_text(
        run.job_name,
        run.run_id,
        run.tags.get("dagster/partition"),
        error.message if error else context.failure_event.message,
    )
    context.log.error(text)
    url = webhook_url()
    if url:
        try:
            post_webhook(url, text)
        except OSError as exc:  # the alert channel being down must not hide the alert
            context.log.warning(f"alert webhook unreachable: {type(exc).__name__}")
