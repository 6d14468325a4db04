"""Jobs: what schedules and sensors launch (and what a user picks in the Launchpad)."""

import dagster as dg

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.defs.resources import AnonymizerResource, CloudResource, WarehouseResource
from cloudwaste_pipeline.privacy.retention import BATCH_SIZE, account_owners, cleanup

scan_job = dg.define_asset_job(
    "scan_job",
    selection=dg.AssetSelection.assets(
        "raw_cloud_scans",
        "ml_training_data",
        "resource_lifecycle_events",
        "cloudwatch_metrics_history",
    ),
    description="Scan one account for one day and derive its anonymized rows.",
)

user_actions_job = dg.define_asset_job(
    "user_actions_job",
    selection=dg.AssetSelection.assets("user_action_patterns"),
    description="Process pending user actions from the outbox (launched by user_action_sensor).",
)

cost_trends_job = dg.define_asset_job(
    "cost_trends_job",
    selection=dg.AssetSelection.assets("cost_trend_data"),
    description="Rebuild monthly cost trends for chosen months and accounts.",
)

# One export at a time: the production dagster.yaml limits runs tagged so to one.
EXPORT_TAGS = {"cloudwaste/export": "true"}

scan_freshness_job = dg.define_asset_job(
    "scan_freshness_job",
    selection=dg.AssetSelection.checks(
        dg.AssetCheckKey(dg.AssetKey("raw_cloud_scans"), "every_account_scanned_recently")
    ),
    description="Flag accounts whose scans stopped arriving (run by scan_freshness_schedule).",
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
)


class CleanupConfig(dg.Config):
    raw_retention_days: int | None = None
    ml_retention_years: int | None = None
    batch_size: int = BATCH_SIZE


@dg.op(
    description=(
        "Delete the raw store past raw retention and ML rows past ML retention, or past their "
        "owner's shorter data_retention_years, in batches."
    )
)
def cleanup_expired_data(
    context: dg.OpExecutionContext,
    config: CleanupConfig,
    warehouse: WarehouseResource,
    anonymizer: AnonymizerResource,
    cloud: CloudResource,
) -> dict[str, int]:
    raw_days = config.raw_retention_days or settings.raw_retention_days()
    ml_years = config.ml_retention_years or settings.ml_retention_years()
    # Account ownership (for per-user retention of account-level rows) is in the accounts file.
    if cloud.accounts_path().exists():
        owners = account_owners(cloud.accounts(), anonymizer.key_bytes())
    else:
        owners = {}
        context.log.warning("no accounts file: per-user retention covers user-keyed rows only")
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


@dg.job(description="Monthly retention cleanup (raw scans and old ML rows).")
def ml_cleanup_job() -> None:
    cleanup_expired_data()
