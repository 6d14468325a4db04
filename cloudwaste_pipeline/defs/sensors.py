"""Sensors: failed accounts are retried; user actions become runs; failed runs become alerts."""

import json
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, timedelta

import dagster as dg

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.defs.errors import scrubbed
from cloudwaste_pipeline.defs.jobs import scan_job, user_actions_job
from cloudwaste_pipeline.defs.partitions import account_tags, shard_key
from cloudwaste_pipeline.defs.resources import (
    ActionsInboxResource,
    CloudResource,
    WarehouseResource,
)
from cloudwaste_pipeline.inbox import ingest_folder, ingest_s3_prefix
from cloudwaste_pipeline.monitoring import WEBHOOK_ENV, failure_text, post_webhook, webhook_url
from cloudwaste_pipeline.privacy.anonymize import scrub_text
from cloudwaste_pipeline.sharding import MAX_NAMED, shard_of
from cloudwaste_pipeline.warehouse import failures, outbox

SCAN_ASSETS = (
    "raw_cloud_scans",
    "ml_training_data",
    "resource_lifecycle_events",
    "cloudwatch_metrics_history",
)


def retry_requests(
    due: list[failures.Failure], known: set[str], now: datetime
) -> tuple[list[dg.RunRequest], list[failures.Failure], list[failures.Failure]]:
    """(one run request per day and shard with due failures, the failures it retries, those of
    accounts no longer in the accounts sources). Pure: the sensor gathers the facts."""
    retried = [f for f in due if f.asset in SCAN_ASSETS and f.account_alias in known]
    gone = [f for f in due if f.account_alias not in known]
    partitions: dict[tuple[date, str], set[str]] = {}
    for f in retried:
        partitions.setdefault((f.scan_date, shard_of(f.account_alias)), set()).add(f.account_alias)
    stamp = now.strftime("%Y%m%dT%H%M%S")
    requests = [
        dg.RunRequest(
            run_key=f"retry:{day}:{shard}:{stamp}",
            partition_key=shard_key(day, shard),
            # Named in the tag (the same for every step of the run, and shown in the UI); past
            # MAX_NAMED the whole shard is re-run, which is idempotent too.
            tags={"cloudwaste/retry": "true"}
            | (account_tags(sorted(aliases)) if len(aliases) <= MAX_NAMED else {}),
        )
        for (day, shard), aliases in sorted(partitions.items())
    ]
    return requests, retried, gone


@dg.sensor(
    job=scan_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Re-runs the accounts whose scan or derivation failed (raw.account_failures), once "
        "their back-off is over (5 minutes doubling to 4 hours, 12 attempts): one scan_job run "
        "per day and shard, limited to the failing accounts (named in the run tag "
        "cloudwaste/accounts). A live scan is retried only on its own day."
    ),
)
@scrubbed
def failed_accounts_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource, cloud: CloudResource
):
    now = settings.now()
    since = settings.today() - timedelta(days=settings.raw_retention_days())
    with warehouse.engine().begin() as conn:
        due = failures.due(conn, now, since)
        if not due:  # the usual tick: no account source is read
            return dg.SkipReason("no failed account due for a retry")
        known = {a.name for a in cloud.accounts()}
        requests, retried, gone = retry_requests(due, known, now)
        failures.postpone(conn, retried, now)
        failures.postpone(conn, gone, None)
    if not requests:
        return dg.SkipReason("no failed account due for a retry")
    context.log.info(
        f"retrying {len({f.account_alias for f in retried})} account(s) in {len(requests)} run(s)"
    )
    return requests


ACTIONS_KEY_PREFIX = "actions:"
RETRY_FIRST = timedelta(minutes=1)
RETRY_MAX = timedelta(hours=1)
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
    dg.DagsterRunStatus.MANAGED,
]
FAILED = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def retry_backoff(failures: int) -> timedelta:
    """The wait before relaunching after ``failures`` failed runs in a row: 1 min, doubling,
    at most an hour. Never given up: events must not wait for a later one to arrive."""
    return min(RETRY_FIRST * 2 ** min(max(failures - 1, 0), 10), RETRY_MAX)


@dataclass(frozen=True)
class ActionCursor:
    """The sensor's durable state: how many runs it asked for (run keys are ``actions:<n>``,
    unique), the one whose outcome it has not seen yet, and the failure streak."""

    count: int = 0
    last: str | None = None
    failures: int = 0
    retry_at: str | None = None  # ISO timestamp, the pipeline's clock

    @classmethod
    def parse(cls, text: str | None) -> "ActionCursor | None":
        """None for no cursor or one from before this format (outbox sequence ranges)."""
        state = json.loads(text) if text else {}
        if "count" not in state:
            return None
        return cls(**{k: state.get(k) for k in ("count", "last", "failures", "retry_at")})

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def plan_action_tick(
    state: ActionCursor,
    last_status: dg.DagsterRunStatus | None,
    other_in_flight: bool,
    due: int,
    now: datetime,
) -> tuple[ActionCursor, str | None, str]:
    """(new state, run key to request or None, why not). Pure: the sensor gathers the facts.

    ``last_status`` is that of the run keyed ``state.last`` (None: none was created, e.g. the
    daemon stopped before launching it; asked for again under a new key).
    """
    if state.last is not None:
        if last_status in IN_FLIGHT:
            return state, None, f"run {state.last} in flight"
        if last_status in FAILED:
            failures = state.failures + 1
            retry_at = now.replace(tzinfo=None) + retry_backoff(failures)
            state = replace(state, failures=failures, retry_at=retry_at.isoformat())
        elif last_status == dg.DagsterRunStatus.SUCCESS:
            state = replace(state, failures=0, retry_at=None)
        state = replace(state, last=None)
    if other_in_flight:
        return state, None, "a user_actions_job run is in flight"
    if due == 0:
        return state, None, "no user action due"
    if state.retry_at and now.replace(tzinfo=None) < datetime.fromisoformat(state.retry_at):
        return (
            state,
            None,
            (
                f"{due} user action(s) due, but the last {state.failures} run(s) failed: "
                f"retrying at {state.retry_at} (back-off {retry_backoff(state.failures)}, "
                f"doubling up to {RETRY_MAX}, until a run succeeds; each failure is alerted)"
            ),
        )
    key = f"{ACTIONS_KEY_PREFIX}{state.count + 1}"
    return replace(state, count=state.count + 1, last=key), key, ""


def newest_action_key_number(instance: dg.DagsterInstance) -> int:
    """The highest ``actions:<n>`` among recent runs: a lost or reset cursor starts above it
    (the daemon never launches a run key twice)."""
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=user_actions_job.name), limit=100)
    numbers = [
        int(key[len(ACTIONS_KEY_PREFIX) :])
        for key in (r.tags.get("dagster/run_key", "") for r in runs)
        if key.startswith(ACTIONS_KEY_PREFIX) and key[len(ACTIONS_KEY_PREFIX) :].isdigit()
    ]
    return max(numbers, default=0)


def run_status(instance: dg.DagsterInstance, run_key: str | None) -> dg.DagsterRunStatus | None:
    if run_key is None:
        return None
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": run_key}), limit=1)
    return runs[0].status if runs else None


def ingest_inboxes(
    context: dg.SensorEvaluationContext,
    warehouse: WarehouseResource,
    actions_inbox: ActionsInboxResource,
) -> list[str]:
    """Drop folder and S3 prefix into the outbox; returns what to say about them."""
    notes = []
    dropped = ingest_folder(warehouse.engine(), settings.paths().actions_inbox, settings.now())
    if dropped.files or dropped.failed or dropped.skipped or dropped.waiting:
        notes.append(dropped.describe("dropped file"))
        (context.log.warning if dropped.failed or dropped.skipped else context.log.info)(notes[-1])
    location = actions_inbox.s3_location()  # None: no S3 inbox, no AWS call
    if location:
        from botocore.exceptions import BotoCoreError, ClientError  # not at load: S3 only

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
            if uploaded.files or uploaded.failed or uploaded.skipped or uploaded.more:
                notes.append(uploaded.describe("S3 object"))
                (context.log.warning if uploaded.failed else context.log.info)(notes[-1])
    return notes


@dg.sensor(
    job=user_actions_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Reads JSON-lines files dropped in the actions inbox (and under the S3 prefix, when "
        "CLOUDWASTE_ACTIONS_S3_URI or actions_inbox.s3_uri is set) into the outbox, and launches "
        "a user_actions_job run whenever due unprocessed outbox events exist and no such run is "
        "in flight. A failed run is retried with back-off (1 min doubling to 1 h), until one "
        "succeeds. The cursor counts the runs asked for and holds the failure streak."
    ),
)
@scrubbed
def user_action_sensor(
    context: dg.SensorEvaluationContext,
    warehouse: WarehouseResource,
    actions_inbox: ActionsInboxResource,
):
    instance = context.instance
    state = ActionCursor.parse(context.cursor) or ActionCursor(
        count=newest_action_key_number(instance)
    )
    notes = ingest_inboxes(context, warehouse, actions_inbox)
    now = settings.now()
    with warehouse.engine().connect() as conn:
        due = outbox.due_count(conn, now)
        held_until = outbox.next_hold_end(conn) if not due else None
    in_flight = instance.get_runs(
        filters=dg.RunsFilter(job_name=user_actions_job.name, statuses=IN_FLIGHT), limit=1
    )
    state, key, reason = plan_action_tick(
        state,
        run_status(instance, state.last),
        bool(in_flight),  # its own run in flight is answered first, by state.last
        due,
        now,
    )
    if key is None:
        if held_until is not None:
            reason += f"; held events wait until {held_until.isoformat()}"
        return dg.SensorResult(skip_reason="; ".join([reason, *notes]), cursor=state.dumps())
    request = dg.RunRequest(run_key=key, tags={"cloudwaste/due_events": str(due)})
    return dg.SensorResult(run_requests=[request], cursor=state.dumps())


@dg.run_failure_sensor(
    name="run_failure_alert_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Alerts on every failed run: an error line in the sensor's log and, when "
        f"{WEBHOOK_ENV} is set, a POST to that webhook (Slack-compatible). The text names the "
        "job, run and partition (account alias) and the first line of the error, ids scrubbed."
    ),
)
@scrubbed
def run_failure_alert_sensor(context: dg.RunFailureSensorContext) -> None:
    run = context.dagster_run
    step_failures = context.get_step_failure_events()
    failure = step_failures[0].step_failure_data if step_failures else None
    error = failure.error if failure else None
    while error is not None and error.cause is not None:  # the user's error, not Dagster's wrapper
        error = error.cause
    # A dg.Failure (every scrubbed error is one) says it best in its description.
    described = (
        failure.user_failure_data.description if failure and failure.user_failure_data else None
    )
    text = failure_text(
        run.job_name,
        run.run_id,
        run.tags.get("dagster/partition"),
        described or (error.message if error else context.failure_event.message),
    )
    context.log.error(text)
    url = webhook_url()
    if url:
        try:
            post_webhook(url, text)
        except OSError as exc:  # the alert channel being down must not hide the alert
            context.log.warning(f"alert webhook unreachable: {type(exc).__name__}")
