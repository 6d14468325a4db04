"""Monthly cost trends per account: spend, waste detected, waste eliminated.

Figures are monthly rates (USD per month), averaged over the month's scan days, so a month with
ten scans and a month with thirty compare fairly. Pure functions over already-anonymized frames.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pandas as pd

TOP_CATEGORIES = 5


def month_bounds(month_start: date) -> tuple[date, date]:
    """[first day, first day of the next month)."""
    following = date(month_start.year + month_start.month // 12, month_start.month % 12 + 1, 1)
    return month_start, following


def monthly_trend(
    account_hash: str,
    provider: str,
    month: str,
    detections: pd.DataFrame,
    spend_by_day: pd.DataFrame,
    actions: pd.DataFrame,
    previous_total_spend: float | None = None,
) -> dict[str, Any]:
    """One ``cost_trend_data`` row.

    - ``detections``: the month's ``ml_training_data`` rows of the account (scan_date,
      detection_scenario, resource_type, region_anonymized, cost_monthly).
    - ``spend_by_day``: the estimated inventory cost per scan day (scan_date, total_cost_monthly)
      from the raw scans still retained; when none is left, ``previous_total_spend`` (the stored
      value) is kept, because raw scans expire long before ML rows do.
    - ``actions``: the month's ``user_action_patterns`` rows of the account (cost_saved_monthly).
    """
    detections = without_double_counted_storage(detections)
    days = detections["scan_date"].nunique() if not detections.empty else 0
    waste_detected = float(detections["cost_monthly"].sum() / days) if days else 0.0
    if not spend_by_day.empty:
        total_spend = float(spend_by_day["total_cost_monthly"].mean())
    else:
        total_spend = float(previous_total_spend or 0.0)
    waste_eliminated = float(actions["cost_saved_monthly"].sum()) if not actions.empty else 0.0
    return {
        "account_hash": account_hash,
        "month": month,
        "provider": provider,
        "total_spend": round(total_spend, 2),
        "waste_detected": round(waste_detected, 2),
        "waste_eliminated": round(waste_eliminated, 2),
        "waste_percentage": round(100.0 * waste_detected / total_spend, 2) if total_spend else 0.0,
        "top_waste_categories": _top_categories(detections, days),
        "regional_breakdown": _by_region(detections, days),
    }


def without_double_counted_storage(detections: pd.DataFrame) -> pd.DataFrame:
    """Drop volumes flagged for their stopped instance when that instance is flagged too.

    A stopped instance's waste is the storage of its volumes; counting the volumes again would
    double the figure. The rows stay in ``ml_training_data``; only the sum skips them.
    """
    if detections.empty or "parent_resource_hash" not in detections:
        return detections
    stopped = detections.loc[
        detections["detection_scenario"] == "stopped_instance", ["scan_date", "resource_hash"]
    ]
    flagged = set(zip(stopped["scan_date"], stopped["resource_hash"], strict=True))
    duplicate = [
        scenario == "attached_to_stopped_instance" and (day, parent) in flagged
        for scenario, day, parent in zip(
            detections["detection_scenario"],
            detections["scan_date"],
            detections["parent_resource_hash"],
            strict=True,
        )
    ]
    return detections[[not d for d in duplicate]]


def _top_categories(detections: pd.DataFrame, days: int) -> list[dict[str, Any]]:
    if detections.empty:
        return []
    grouped = (
        detections.groupby(["resource_type", "detection_scenario"])
        .agg(cost=("cost_monthly", "sum"), count=("cost_monthly", "size"))
        .sort_values("cost", ascending=False)
        .head(TOP_CATEGORIES)
    )
    return [
        {
            "resource_type": resource_type,
            "detection_scenario": scenario,
            "cost_monthly": round(float(row["cost"]) / days, 2),
            "avg_daily_count": round(float(row["count"]) / days, 2),
        }
        for (resource_type, scenario), row in grouped.iterrows()
    ]


def _by_region(detections: pd.DataFrame, days: int) -> dict[str, float] | None:
    if detections.empty:
        return None
    totals = detections.groupby("region_anonymized")["cost_monthly"].sum() / days
    return {str(k): round(float(v), 2) for k, v in totals.sort_index().items()}
