"""Asset checks: the predecessor's monitoring queries (usage guide), visible in the UI.

Targets, not invariants: each warns (it does not block) when collection falls short, with the
figure as metadata so the UI plots it. NOT NULL on critical fields is enforced by the schema.
"""

import dagster as dg
import sqlalchemy as sa

from cloudwaste_pipeline.defs.assets.outputs import collection_stats
from cloudwaste_pipeline.defs.metadata import counts_table
from cloudwaste_pipeline.defs.resources import WarehouseResource
from cloudwaste_pipeline.warehouse import schema

USER_ACTION_RATE_TARGET_PCT = 30.0
RECORDS_PER_SCAN_TARGET = 10.0


@dg.asset_check(
    asset="ml_training_data",
    description=f"At least {USER_ACTION_RATE_TARGET_PCT:g}% of detections carry a user action.",
)
def user_action_rate(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    rate = collection_stats(warehouse)["user_action_rate_pct"]
    return dg.AssetCheckResult(
        passed=rate >= USER_ACTION_RATE_TARGET_PCT,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"user_action_rate_pct": rate, "target_pct": USER_ACTION_RATE_TARGET_PCT},
    )


@dg.asset_check(
    asset="ml_training_data",
    description=f"Scans yield at least {RECORDS_PER_SCAN_TARGET:g} training rows on average.",
)
def records_per_scan(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    per_scan = collection_stats(warehouse)["records_per_scan"]
    return dg.AssetCheckResult(
        passed=per_scan >= RECORDS_PER_SCAN_TARGET,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"records_per_scan": per_scan, "target": RECORDS_PER_SCAN_TARGET},
    )


@dg.asset_check(
    asset="user_action_patterns",
    description="No user-action event is in quarantine (bad payloads, never-detected resources).",
)
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
