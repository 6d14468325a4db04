"""Features for the waste-prediction model, from anonymized ``ml_training_data`` rows.

One example per resource: a resource detected on twenty days is one decision by its user, so
counting it twenty times would flatter any score. The example is the resource's *first*
detection, what the user was shown before deciding: taking the latest instead would leak the
label (deleted resources stop being detected, kept ones are detected until today, so "latest
detection time" alone would separate them and wreck a time split).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

CATEGORICAL = [
    "resource_type",
    "provider",
    "region_anonymized",
    "detection_scenario",
    "parent_resource_state",
    "env_tag",
]
CONFIDENCE_ORDER = {"low": 0, "medium": 1, "high": 2, "critical": 3}
METRICS = ["CPUUtilization", "NetworkOut", "VolumeReadOps", "VolumeWriteOps"]
NUMERIC = [
    "resource_age_days",
    "log_cost_monthly",
    "confidence",
    "created_hour_of_day",
    "created_day_of_week",
    "is_weekend",
    *[f"{m}_avg" for m in METRICS],
    *[f"{m}_p95" for m in METRICS],
]
POSITIVE_ACTION = "deleted"


def one_per_resource(rows: pd.DataFrame) -> pd.DataFrame:
    """The first detection of each resource (by detected_at)."""
    ordered = rows.sort_values(["resource_hash", "detected_at"])
    return ordered.groupby("resource_hash", sort=False).head(1).reset_index(drop=True)


def _metric(summary: Any, metric: str, stat: str) -> float:
    if isinstance(summary, dict) and isinstance(summary.get(metric), dict):
        value = summary[metric].get(stat)
        return float(value) if value is not None else np.nan
    return np.nan


def _get(mapping: Any, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, dict) else None


def build_features(rows: pd.DataFrame) -> pd.DataFrame:
    """The model's input columns (CATEGORICAL + NUMERIC), NaN where unknown."""
    tags = rows.get("tags_anonymized", pd.Series([None] * len(rows), index=rows.index))
    temporal = rows.get("temporal_features", pd.Series([None] * len(rows), index=rows.index))
    env = [(_get(t, "env") or _get(t, "environment") or _get(t, "stage") or "none") for t in tags]
    features = pd.DataFrame(
        {
            "resource_type": rows["resource_type"].astype(str),
            "provider": rows["provider"].astype(str),
            "region_anonymized": rows["region_anonymized"].astype(str),
            "detection_scenario": rows["detection_scenario"].astype(str),
            "parent_resource_state": rows.get("parent_resource_state", pd.Series(index=rows.index))
            .fillna("none")
            .astype(str),
            "env_tag": pd.Series(env, index=rows.index).astype(str),
            "resource_age_days": rows["resource_age_days"].astype(float),
            "log_cost_monthly": np.log1p(rows["cost_monthly"].astype(float).clip(lower=0)),
            "confidence": rows["confidence_level"].map(CONFIDENCE_ORDER).astype(float),
            "created_hour_of_day": [_get(t, "created_hour_of_day") for t in temporal],
            "created_day_of_week": [_get(t, "created_day_of_week") for t in temporal],
            "is_weekend": [_get(t, "is_weekend") for t in temporal],
        },
        index=rows.index,
    )
    for metric in METRICS:
        for stat in ("avg", "p95"):
            features[f"{metric}_{stat}"] = [
                _metric(s, metric, stat) for s in rows["metrics_summary"]
            ]
    for column in ("created_hour_of_day", "created_day_of_week", "is_weekend"):
        features[column] = pd.to_numeric(features[column], errors="coerce").astype(float)
    return features[CATEGORICAL + NUMERIC]


def labels(rows: pd.DataFrame) -> pd.Series:
    """1 when the user deleted the resource (it was waste), 0 when kept or ignored."""
    return (rows["user_action"] == POSITIVE_ACTION).astype(int)
