"""Asset checks: the predecessor's monitoring queries (usage guide), visible in the UI.

Targets, not invariants: each warns (it does not block) when collection falls short, with the
figure as metadata so the UI plots it. NOT NULL on critical fields is enforced by the schema.
"""

from datetime import timedelta

import dagster as dg
import sqlalchemy as sa

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.defs.assets.outputs import collection_stats
from cloudwaste_pipeline.defs.errors import scrubbed
from cloudwaste_pipeline.defs.metadata import PREVIEW_ROWS, counts_table
from cloudwaste_pipeline.defs.resources import CloudResource, WarehouseResource
from cloudwaste_pipeline.monitoring import SCAN_MAX_AGE_DAYS, stale_accounts
from cloudwaste_pipeline.warehouse import failures, queries, schema

USER_ACTION_RATE_TARGET_PCT = 30.0
RECORDS_PER_SCAN_TARGET = 10.0


def target_check(name: str, stat: str, target: float, description: str) -> dg.AssetChecksDefinition:
    """A warning check that one collection figure reaches its target."""

    @dg.asset_check(asset="ml_training_data", name=name, description=description)
    @scrubbed
    def _check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        value = collection_stats(warehouse)[stat]
        return dg.AssetCheckResult(
            passed=value >= target,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={stat: value, "target": target},
        )

    return _check


user_action_rate = target_check(
    "user_action_rate",
    "user_action_rate_pct",
    USER_ACTION_RATE_TARGET_PCT,
    f"At least {USER_ACTION_RATE_TARGET_PCT:g}% of detections carry a user action.",
)
records_per_scan = target_check(
    "records_per_scan",
    "records_per_scan",
    RECORDS_PER_SCAN_TARGET,
    f"Scans yield at least {RECORDS_PER_SCAN_TARGET:g} training rows on average.",
)


@dg.asset_check(
    asset="user_action_patterns",
    description="No user-action event is in quarantine (bad payloads, never-detected resources).",
)
@scrubbed
def no_quarantined_actions(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    quarantine = schema.quarantine
    with warehouse.engine().connect() as conn:
        reasons = {
            r.reason[:80]: r.n
            for r in conn.execute(
                sa.select(quarantine.c.reason, sa.func.count().label("n"))
                .where(quarantine.c.source.like("user_action%"))
                .group_by(quarantine.c.reason)
            )
        }
    total = sum(reasons.values())
    return dg.AssetCheckResult(
        passed=total == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"quarantined": total, "reasons": counts_table(reasons, "reason", "events")},
    )


@dg.asset_check(
    asset="raw_cloud_scans",
    description=(
        f"Every account of the accounts file has a stored scan from the last "
        f"{SCAN_MAX_AGE_DAYS} days: an account whose scans stopped arriving (revoked role, "
        "deleted subscription) is listed by alias. Run daily by scan_freshness_schedule."
    ),
)
@scrubbed
def every_account_scanned_recently(
    warehouse: WarehouseResource, cloud: CloudResource
) -> dg.AssetCheckResult:
    if not cloud.configured():
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                f"no account source (no accounts file at {cloud.accounts_path()}, no query, "
                "no Organizations): nothing is scanned"
            ),
        )
    with warehouse.engine().connect() as conn:
        newest = queries.last_scan_days(conn)
    last_scans = {a.name: newest.get((a.provider, a.cloud_id)) for a in cloud.accounts()}
    stale = stale_accounts(last_scans, settings.today())
    table = "\n".join(
        ["| account | last scan | days since |", "| --- | --- | --- |"]
        + [f"| {s.alias} | {s.last_scan or 'never'} | {s.days_since or 'never'} |" for s in stale]
    )
    return dg.AssetCheckResult(
        passed=not stale,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{len(stale)} of {len(last_scans)} account(s) without a scan in the last "
            f"{SCAN_MAX_AGE_DAYS} days"
            if stale
            else None
        ),
        metadata={
            "accounts": len(last_scans),
            "stale_accounts": len(stale),
            "stale": dg.MetadataValue.md(table),
        },
    )


@dg.asset_check(
    asset="raw_cloud_scans",
    description=(
        "No account has an open failure in the scan or cost assets (within raw retention): "
        "each failing account is listed by alias with the asset, day, attempts, next automatic "
        "retry and the error. A shard run records one account's failure here and goes on."
    ),
)
@scrubbed
def no_failed_accounts(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    return failing_accounts_result(warehouse)


def failing_accounts_result(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    """The check's result: open failures within raw retention, by alias."""
    since = settings.today() - timedelta(days=settings.raw_retention_days())
    with warehouse.engine().connect() as conn:
        open_ = failures.open_failures(conn, since)
    rows = [
        f"| {f.account_alias} | {f.asset} | {f.scan_date} | {f.attempts} | "
        f"{f.retry_at or 'none (listed only)'} | {f.error_type}: {f.message[:120]} |"
        for f in open_[: PREVIEW_ROWS * 5]
    ]
    table = "\n".join(
        ["| account | asset | day | attempts | next retry | error |", "| --- " * 6 + "|", *rows]
    )
    aliases = sorted({f.account_alias for f in open_})
    return dg.AssetCheckResult(
        passed=not open_,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{len(aliases)} account(s) failing: {', '.join(aliases[:20])}"
            + (" ..." if len(aliases) > 20 else "")
            if open_
            else None
        ),
        metadata={
            "failing_accounts": len(aliases),
            "open_failures": len(open_),
            "failures": dg.MetadataValue.md(table),
        },
    )
