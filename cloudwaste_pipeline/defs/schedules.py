"""Schedules: daily scans (01:00 UTC) and their freshness check (06:00 UTC), weekly export
(Monday 03:00 UTC), monthly cleanup (1st, 02:00 UTC)."""

import dagster as dg

from cloudwaste_pipeline.defs.errors import scrubbed
from cloudwaste_pipeline.defs.jobs import (
    ml_cleanup_job,
    scan_freshness_job,
    scan_job,
    weekly_export_job,
)
from cloudwaste_pipeline.defs.partitions import shard_key
from cloudwaste_pipeline.defs.resources import CloudResource
from cloudwaste_pipeline.sharding import shard_of


@dg.schedule(
    job=scan_job,
    cron_schedule="0 1 * * *",
    execution_timezone="UTC",
    description=(
        "Scan every account once a day: one run per account shard that holds an account (at "
        "most 16 runs, however many accounts), each scanning its accounts concurrently."
    ),
)
@scrubbed
def daily_scan_schedule(context: dg.ScheduleEvaluationContext, cloud: CloudResource):
    day = context.scheduled_execution_time.date()
    accounts = cloud.accounts()  # read once per tick; each run reads its shard's again
    if not accounts:
        return dg.SkipReason("the accounts sources list no account")
    shards: dict[str, int] = {}
    for account in accounts:
        shard = shard_of(account.name)
        shards[shard] = shards.get(shard, 0) + 1
    return [
        dg.RunRequest(
            run_key=f"scan:{day}:{shard}",
            partition_key=shard_key(day, shard),
            tags={"cloudwaste/shard_accounts": str(count)},
        )
        for shard, count in sorted(shards.items())
    ]


weekly_ml_export_schedule = dg.build_schedule_from_partitioned_job(
    weekly_export_job,
    name="weekly_ml_export_schedule",
    hour_of_day=3,
    minute_of_hour=0,
    description="Monday 03:00 UTC: export the week that just ended and retrain the model.",
)

monthly_ml_cleanup_schedule = dg.ScheduleDefinition(
    name="monthly_ml_cleanup_schedule",
    job=ml_cleanup_job,
    cron_schedule="0 2 1 * *",
    execution_timezone="UTC",
    description="1st of the month, 02:00 UTC: delete data past retention.",
)

scan_freshness_schedule = dg.ScheduleDefinition(
    name="scan_freshness_schedule",
    job=scan_freshness_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    description="06:00 UTC, after the day's scans: flag accounts whose scans stopped arriving.",
)
