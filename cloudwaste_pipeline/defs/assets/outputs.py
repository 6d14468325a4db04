"""What the collected data is for: weekly dataset exports and the collection stats."""

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import dagster as dg
import sqlalchemy as sa

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.defs.errors import scrubbed
from cloudwaste_pipeline.defs.metadata import counts_table
from cloudwaste_pipeline.defs.partitions import export_weeks
from cloudwaste_pipeline.defs.resources import FilesResource, WarehouseResource
from cloudwaste_pipeline.exports import (
    ExportError,
    ExportResult,
    export_subfolder,
    export_window,
)
from cloudwaste_pipeline.quality import CHECKS, ERROR, QualityReport, validate_data_quality
from cloudwaste_pipeline.warehouse import queries, schema

ALL = dg.AllPartitionMapping()


EXPORT_CHECKS = [
    dg.AssetCheckSpec(
        name,
        asset="ml_dataset_exports",
        blocking=True,
        description=f"{description} ({'blocks the export' if severity == ERROR else 'warns'})",
    )
    for name, (severity, description) in CHECKS.items()
]


def quality_check_results(report: QualityReport) -> list[dg.AssetCheckResult]:
    """One result per quality check; ERROR failures are the ones that stop the export."""
    return [
        dg.AssetCheckResult(
            check_name=check.name,
            passed=check.passed,
            severity=(
                dg.AssetCheckSeverity.ERROR
                if check.severity == ERROR
                else dg.AssetCheckSeverity.WARN
            ),
            metadata={k: v for k, v in check.details.items() if isinstance(v, int | float)},
        )
        for check in report.checks
    ]


def export_metadata(result: ExportResult, start: date, end: date) -> dict[str, Any]:
    return {
        "window": f"{start} .. {end}",
        "dagster/uri": result.location,
        "manifest": dg.MetadataValue.path(result.manifest),
        **{f"rows_{name}": count for name, count in result.row_counts.items()},
        "dagster/row_count": sum(result.row_counts.values()),
        "files": counts_table(
            {v["name"]: f"{v['bytes']} bytes" for v in result.files.values()}, "file", "size"
        ),
    }


@dg.asset(
    partitions_def=export_weeks,
    # The Monday 03:00 UTC export is done by 06:00.
    freshness_policy=dg.FreshnessPolicy.cron(
        deadline_cron="0 6 * * 1", lower_bound_delta=timedelta(hours=3)
    ),
    group_name="exports",
    kinds={"parquet", "csv", "json"},
    owners=["team:ml"],
    deps=[
        dg.AssetDep("ml_training_data", partition_mapping=ALL),
        dg.AssetDep("user_action_patterns"),
        dg.AssetDep("cost_trend_data", partition_mapping=ALL),
    ],
    check_specs=EXPORT_CHECKS,
    description=(
        "The week's (Monday to Sunday) ml_training_data, user_action_patterns and cost_trends "
        "datasets in JSON, CSV and Parquet with a manifest (row counts, schema, sha256), under "
        "weekly/<monday>/ of the exports folder or S3 prefix. Data quality is checked first: an "
        "ERROR check that fails stops the run before any file is written. Re-running a week "
        "replaces its files atomically."
    ),
)
@scrubbed
def ml_dataset_exports(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, files: FilesResource
) -> Iterator[dg.AssetCheckResult | dg.MaterializeResult]:
    # The checks run inside the asset, before writing: a blocking check evaluated after the
    # materialization would stop downstream steps but not this one's files.
    window = context.partition_time_window
    start = window.start.date()
    end = window.end.date() - timedelta(days=1)
    engine = warehouse.engine()
    with engine.connect() as conn:
        report = validate_data_quality(conn, start, end)
    yield from quality_check_results(report)
    if not report.ok:
        raise dg.Failure(
            description=f"nothing exported: {report.summary()}",
            metadata={"window": f"{start} .. {end}"},
        )
    try:
        result = export_window(
            engine,
            files.export_destination(export_subfolder("weekly", start, end)),
            start,
            end,
            kind="weekly",
            extra_manifest={"quality": report.to_dict()},
        )
    except ExportError as exc:  # disk full, no permission: the sentence, not a traceback
        raise dg.Failure(description=str(exc)) from exc
    context.log.info(f"exported {start}..{end}: {result.row_counts} to {result.location}")
    yield dg.MaterializeResult(metadata=export_metadata(result, start, end))


@dg.asset(
    group_name="monitoring",
    kinds={"python"},
    owners=["team:data-platform"],
    deps=[
        dg.AssetDep("ml_training_data", partition_mapping=ALL),
        "user_action_patterns",
        dg.AssetDep("cost_trend_data", partition_mapping=ALL),
        dg.AssetDep("resource_lifecycle_events", partition_mapping=ALL),
        dg.AssetDep("cloudwatch_metrics_history", partition_mapping=ALL),
    ],
    automation_condition=dg.AutomationCondition.eager(),
    description=(
        "The collection dashboard as numbers the UI plots over time: totals, last 7 and 30 days, "
        "last collection, rows per table and the user-action rate (target 30%+)."
    ),
)
@scrubbed
def ml_collection_stats(warehouse: WarehouseResource) -> dg.MaterializeResult:
    stats = collection_stats(warehouse)
    return dg.MaterializeResult(
        metadata={
            **{k: v for k, v in stats.items() if k != "tables"},
            "tables": counts_table(stats["tables"], "table", "rows"),
            **{f"rows_{k}": v for k, v in stats["tables"].items()},
        }
    )


def collection_stats(warehouse: WarehouseResource) -> dict:
    """The admin widget's figures (usage guide): shared by the asset, the CLI and the API."""
    ml = schema.ml_training_data
    today = settings.today()

    def count(conn: sa.Connection, *where: sa.ColumnElement[bool]) -> int:
        return int(conn.execute(sa.select(sa.func.count()).select_from(ml).where(*where)).scalar())

    with warehouse.engine().connect() as conn:
        counts = queries.table_counts(conn)
        last_7 = count(conn, ml.c.scan_date > today - timedelta(days=7))
        last_30 = count(conn, ml.c.scan_date > today - timedelta(days=30))
        labelled = count(conn, ml.c.user_action.is_not(None))
        last = conn.execute(sa.select(sa.func.max(ml.c.created_at))).scalar()
        scans = conn.execute(
            sa.select(sa.func.count()).select_from(
                sa.select(ml.c.scan_date, ml.c.account_hash).distinct().subquery()
            )
        ).scalar()
    total = counts["ml_training_data"]
    return {
        "total_records": total,
        "records_last_7_days": last_7,
        "records_last_30_days": last_30,
        "last_collection": str(last) if last else "never",
        "user_action_rate_pct": round(100.0 * labelled / total, 2) if total else 0.0,
        "records_per_scan": round(total / scans, 2) if scans else 0.0,
        "tables": counts,
    }
