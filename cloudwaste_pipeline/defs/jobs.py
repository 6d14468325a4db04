"""Jobs: what schedules and sensors launch (and what a user picks in the Launchpad)."""

from datetime import datetime, timedelta

import dagster as dg

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.defs.errors import scrubbed
from cloudwaste_pipeline.defs.resources import AnonymizerResource, CloudResource, WarehouseResource
from cloudwaste_pipeline.privacy.retention import (
    BATCH_SIZE,
    account_owners,
    cleanup,
    positive_batch_size,
)

scan_job = dg.define_asset_job(
    "scan_job",
    selection=dg.AssetSelection.assets(
        "raw_cloud_scans",
        "ml_training_data",
        "resource_lifecycle_events",
        "cloudwatch_metrics_history",
    ),
    description=(
        "Scan one shard of accounts for one day (or the accounts named by the run tag "
        "cloudwaste/accounts) and derive their anonymized rows."
    ),
    # One process: the four steps share the loaded code location (a process per step would load
    # it seven times per run for steps that mostly wait on the cloud and the database).
    executor_def=dg.in_process_executor,
)

user_actions_job = dg.define_asset_job(
    "user_actions_job",
    selection=dg.AssetSelection.assets("user_action_patterns"),
    description="Process pending user actions from the outbox (launched by user_action_sensor).",
    executor_def=dg.in_process_executor,
)

cost_trends_job = dg.define_asset_job(
    "cost_trends_job",
    selection=dg.AssetSelection.assets("cost_trend_data"),
    description="Rebuild monthly cost trends for chosen months and account shards.",
    executor_def=dg.in_process_executor,
)

# One export at a time: the production dagster.yaml limits runs tagged so to one.
EXPORT_TAGS = {"cloudwaste/export": "true"}

scan_freshness_job = dg.define_asset_job(
    "scan_freshness_job",
    selection=dg.AssetSelection.checks(
        dg.AssetCheckKey(dg.AssetKey("raw_cloud_scans"), "every_account_scanned_recently")
    ),
    description="Flag accounts whose scans stopped arriving (run by scan_freshness_schedule).",
    executor_def=dg.in_process_executor,
)

weekly_export_job = dg.define_asset_job(
    "weekly_export_job",
    tags=EXPORT_TAGS,
    selection=dg.AssetSelection.assets(
        "ml_dataset_exports",
        "waste_prediction_model",
        "active_waste_model",
        "resource_anomaly_model",
        "cost_forecast",
        "ml_collection_stats",
    ),
    description=(
        "Export the week's datasets, retrain the waste model (promoted only if it beats the "
        "baseline), re-score resource anomalies, re-forecast costs and refresh the stats."
    ),
    # Heavy, independent steps (training, scoring, forecasting) on every core; once a week.
    executor_def=dg.multiprocess_executor,
)


class CleanupConfig(dg.Config):
    """Overrides of the retention settings for one run; None (not 0) means "use the setting",
    and a given value obeys the setting's range, so no run config can go below the minimum."""

    raw_retention_days: int | None = None
    ml_retention_years: int | None = None
    batch_size: int = BATCH_SIZE


@dg.op(
    description=(
        "Delete the raw store past raw retention and ML rows past ML retention, or past their "
        "owner's shorter data_retention_years, in batches."
    )
)
@scrubbed
def cleanup_expired_data(
    context: dg.OpExecutionContext,
    config: CleanupConfig,
    warehouse: WarehouseResource,
    anonymizer: AnonymizerResource,
    cloud: CloudResource,
) -> dict[str, int]:
    raw_days = settings.given_or_setting(
        "CLOUDWASTE_RAW_RETENTION_DAYS", config.raw_retention_days, "run config raw_retention_days"
    )
    ml_years = settings.given_or_setting(
        "CLOUDWASTE_ML_RETENTION_YEARS", config.ml_retention_years, "run config ml_retention_years"
    )
    positive_batch_size(config.batch_size)
    # Account ownership (for per-user retention of account-level rows) is in the accounts file.
    if cloud.configured():
        owners = account_owners(cloud.accounts(), anonymizer.key_bytes(warehouse))
    else:
        owners = {}
        context.log.warning("no account source: per-user retention covers user-keyed rows only")
    removed = cleanup(
        warehouse.engine(),
        settings.today(),
        raw_days,
        ml_years,
        owners=owners,
        batch_size=config.batch_size,
    )
    context.add_output_metadata(
        {**{f"removed_{k}": v for k, v in removed.items()}, "removed_total": sum(removed.values())}
    )
    context.log.info(f"retention: raw {raw_days} days, ML {ml_years} years; removed {removed}")
    return removed


FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


def prune_runs(instance: dg.DagsterInstance, created_before: datetime, batch_size: int) -> int:
    """Delete finished runs created before ``created_before``, with their event logs, in
    batches; queued and running runs stay. Returns how many were deleted."""
    deleted = 0
    while True:
        records = instance.get_run_records(
            filters=dg.RunsFilter(statuses=FINISHED, created_before=created_before),
            limit=batch_size,
        )
        for record in records:
            instance.delete_run(record.dagster_run.run_id)
        deleted += len(records)
        if len(records) < batch_size:
            return deleted


class RunPruneConfig(dg.Config):
    """``run_retention_days``: None uses ``CLOUDWASTE_RUN_RETENTION_DAYS``; checked either way."""

    run_retention_days: int | None = None
    batch_size: int = 500


@dg.op(
    description=(
        "Delete Dagster's finished runs (and their event logs) older than the run retention "
        "(CLOUDWASTE_RUN_RETENTION_DAYS, default 90)."
    )
)
@scrubbed
def prune_dagster_runs(context: dg.OpExecutionContext, config: RunPruneConfig) -> int:
    settings.validate_all()  # it uses no warehouse, but a run with a bad setting stops whole
    days = settings.given_or_setting(
        "CLOUDWASTE_RUN_RETENTION_DAYS", config.run_retention_days, "run config run_retention_days"
    )
    positive_batch_size(config.batch_size)
    deleted = prune_runs(context.instance, settings.now() - timedelta(days=days), config.batch_size)
    context.add_output_metadata({"runs_deleted": deleted, "run_retention_days": days})
    context.log.info(f"run retention {days} days: deleted {deleted} finished run(s)")
    return deleted


@dg.job(description="Monthly retention cleanup: raw scans, old ML rows, old Dagster runs.")
def ml_cleanup_job() -> None:
    cleanup_expired_data()
    prune_dagster_runs()
