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


def target_check(name: str, stat: str, target: float, description: str) -> dg.AssetChecksDefinition:
    """A warning check that one collection figure reaches its target."""

    @dg.asset_check(asset="ml_training_data", name=name, description=description)
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
