"""Monthly cost trends per account, a shard of accounts per run, kept current by automation as
scans and actions arrive."""

from datetime import date, datetime
from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.accounts import Account
from cloudwaste_pipeline.costs import month_bounds, monthly_trend
from cloudwaste_pipeline.defs.errors import scrubbed
from cloudwaste_pipeline.defs.partitions import cost_partitions, scan_to_month
from cloudwaste_pipeline.defs.resources import AnonymizerResource, CloudResource, WarehouseResource
from cloudwaste_pipeline.defs.shards import Skip, each_account, shard_run
from cloudwaste_pipeline.privacy import erasure
from cloudwaste_pipeline.privacy.anonymize import hash_id
from cloudwaste_pipeline.warehouse import locks, queries, schema


def spend_by_day(
    conn: sa.Connection, provider: str, account_id: str, start: date, end: date
) -> pd.DataFrame:
    """Estimated inventory cost per scan day, from the raw scans still retained."""
    raw = schema.raw_scans
    rows = conn.execute(
        sa.select(raw.c.scan_date, raw.c.payload).where(
            raw.c.provider == provider,
            raw.c.account_id == account_id,
            raw.c.scan_date >= start,
            raw.c.scan_date < end,
        )
    ).all()
    return pd.DataFrame(
        [
            {"scan_date": r.scan_date, "total_cost_monthly": r.payload["total_cost_monthly"]}
            for r in rows
        ]
    )


@dg.asset(
    partitions_def=cost_partitions,
    group_name="costs",
    kinds={"pandas", "postgres", "sqlite"},
    owners=["team:finops"],
    deps=[
        dg.AssetDep("ml_training_data", partition_mapping=scan_to_month),
        dg.AssetDep("raw_cloud_scans", partition_mapping=scan_to_month),
        "user_action_patterns",
    ],
    automation_condition=dg.AutomationCondition.eager(),
    description=(
        "Monthly cost trend per account (every account of the shard, one row each): estimated "
        "spend, waste detected (a monthly rate averaged over the month's scans), waste "
        "eliminated by deletions, top waste categories and the waste by region group."
    ),
)
@scrubbed
def cost_trend_data(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    anonymizer: AnonymizerResource,
    cloud: CloudResource,
) -> dg.MaterializeResult:
    run = shard_run(context, cloud, warehouse, dimension="month")
    start, end = month_bounds(run.day)
    key = anonymizer.key_bytes(warehouse)
    month = run.day.strftime("%Y-%m")

    def one(account: Account) -> dict[str, Any]:
        acct = hash_id("account", account.provider, account.cloud_id, key)
        where = f"the {month} cost trend of {account.name!r}"
        with locks.writing(warehouse.engine(), where) as conn:
            queries.lock_trend_month(conn, acct, month)  # its previous values feed the new row
            if erasure.is_erased(conn, "account", acct):
                # An erased account's month would otherwise come back as a row of zeros.
                raise Skip("erased")
            row = trend_row(conn, account, acct, month, start, end)
            if row is None:
                raise Skip("no data that month")
            scan_days = row.pop("_scan_days")
            queries.replace_trend_month(conn, acct, month, pd.DataFrame([row]))
        return {
            "spend_usd": row["total_spend"],
            "waste_usd": row["waste_detected"],
            "eliminated_usd": row["waste_eliminated"],
            "scan_days": scan_days,
        }

    # Not re-requested by the failure sensor: automation rebuilds the month after the next scan.
    outcomes = each_account(
        context, run, "cost_trend_data", warehouse, one, retry=lambda account: False
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(outcomes.of("done")),
            "total_spend_usd": round(outcomes.total("spend_usd"), 2),
            "waste_detected_usd": round(outcomes.total("waste_usd"), 2),
            "waste_eliminated_usd": round(outcomes.total("eliminated_usd"), 2),
            "scan_days": int(outcomes.total("scan_days")),
            **outcomes.metadata(),
        }
    )


def trend_row(
    conn: sa.Connection, account: Account, acct: str, month: str, start: date, end: date
) -> dict[str, Any] | None:
    """The account's row for the month, or None when it has nothing that month (no scan, no
    ML row, no action, no earlier row): a backfill over months before an account was added
    writes no rows of zeros."""
    ml, actions, trends = (
        schema.ml_training_data,
        schema.user_action_patterns,
        schema.cost_trend_data,
    )
    detections = queries.frame(
        conn,
        sa.select(
            ml.c.scan_date,
            ml.c.resource_hash,
            ml.c.parent_resource_hash,
            ml.c.resource_type,
            ml.c.detection_scenario,
            ml.c.region_anonymized,
            ml.c.cost_monthly,
        ).where(ml.c.account_hash == acct, ml.c.scan_date >= start, ml.c.scan_date < end),
    )
    done = queries.frame(
        conn,
        sa.select(actions.c.cost_saved_monthly).where(
            actions.c.account_hash == acct,
            actions.c.action_at >= datetime.combine(start, datetime.min.time()),
            actions.c.action_at < datetime.combine(end, datetime.min.time()),
        ),
    )
    previous = conn.execute(
        sa.select(trends.c.total_spend, trends.c.created_at).where(queries.trend_month(acct, month))
    ).first()
    spend = spend_by_day(conn, account.provider, account.cloud_id, start, end)
    if detections.empty and done.empty and spend.empty and previous is None:
        return None
    row = monthly_trend(
        acct,
        account.provider,
        month,
        detections,
        spend,
        done,
        previous_total_spend=previous.total_spend if previous else None,
    )
    now = settings.now().replace(tzinfo=None)
    row["created_at"] = previous.created_at if previous else now
    row["updated_at"] = now
    row["_scan_days"] = int(detections["scan_date"].nunique()) if not detections.empty else 0
    return row
