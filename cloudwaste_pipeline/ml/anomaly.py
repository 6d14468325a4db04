"""Resource anomalies: an Isolation Forest per resource type over its metric series.

What is scored: each resource's latest daily series per metric (``cloudwatch_metrics_history``),
reduced to four scale-aware features per metric:

- ``level``: log1p of the median, where a resource sits among its peers;
- ``spread``: the robust coefficient of variation (MAD over median), how erratic its usual
  days are, untouched by one burst (that is ``spike``'s to tell);
- ``spike``: log1p of (max - median) over the robust spread (MAD), a burst against its own days;
- ``shift``: log of the last week's mean over the earlier mean, a recent change of regime.

A forest per resource type, because the metrics differ by type (an EBS volume's read ops and an
instance's CPU are not one space). A type with fewer than ``MIN_RESOURCES`` scorable resources
gets no forest (an Isolation Forest on a handful of points calls everything odd), and a series
shorter than ``MIN_POINTS`` days has no meaningful spike or shift: both are returned as
``unscored`` with their reason, never dropped silently.

The score is the Isolation Forest's own, ``s = 2^(-E[h(x)] / c(n))`` (scikit-learn's
``-score_samples``), times 100: comparable across types and runs, about 50 or below for normal
points and towards 100 for isolated ones. ``is_anomaly`` is the model's verdict with
``contamination="auto"``, i.e. the paper's threshold ``s > 0.5``, so nothing is tuned to a
fleet. ``main_driver`` names the feature furthest from its type's median (in MADs), so a FinOps
user sees why ("VolumeReadOps spike").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

MIN_POINTS = 7
MIN_RESOURCES = 10
RECENT_DAYS = 7
TREES = 200
FEATURES = ("level", "spread", "spike", "shift")
KEYS = ("resource_hash", "account_hash", "resource_type", "provider")


@dataclass
class AnomalyResult:
    """Scores per resource, and the resources that could not be scored, with why."""

    scores: pd.DataFrame  # KEYS + anomaly_score, is_anomaly, main_driver, window_end, features
    unscored: pd.DataFrame  # KEYS + reason


def series_features(values: Iterable[Any]) -> dict[str, float] | str:
    """The four features of one daily series, or why it cannot be used."""
    try:
        array = np.asarray([float(v) for v in values], dtype=float)
    except (TypeError, ValueError):
        return "non-numeric metric values"
    if not np.isfinite(array).all():
        return "metric values that are not finite numbers"
    if len(array) < MIN_POINTS:
        return f"fewer than {MIN_POINTS} daily points"
    median = float(np.median(array))
    mean = float(array.mean())
    mad = float(np.median(np.abs(array - median))) * 1.4826
    # A flat series has no MAD; the floor keeps a burst on it large but finite.
    floor = max(mad, 0.01 * abs(median), 1e-9)
    recent, earlier = array[-RECENT_DAYS:], array[:-RECENT_DAYS]
    if len(earlier) == 0:
        shift = 0.0
    else:
        eps = max(1e-9, 0.01 * abs(mean))
        shift = math.log((abs(recent.mean()) + eps) / (abs(earlier.mean()) + eps))
    return {
        "level": math.copysign(math.log1p(abs(median)), median),
        "spread": mad / abs(median) if median else 0.0,
        "spike": math.log1p(max(0.0, float(array.max()) - median) / floor),
        "shift": shift,
    }


def latest_series(history: pd.DataFrame) -> pd.DataFrame:
    """One row per (resource, metric): the series that ends last (then collected last)."""
    order = [c for c in ("end_date", "collected_at") if c in history.columns]
    ordered = history.sort_values(order) if order else history
    return ordered.drop_duplicates(["resource_hash", "metric_name"], keep="last")


def _values(metric_values: Any) -> Any:
    if isinstance(metric_values, dict):
        return metric_values.get("values")
    return None


def resource_features(history: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Wide features per resource (columns ``<metric> <feature>``) and the unusable resources.

    A resource with any unusable series is unscored as a whole: scoring it on the metrics that
    are left would compare it with peers on a different footing.
    """
    rows: dict[str, dict[str, Any]] = {}
    unscored: dict[str, dict[str, Any]] = {}
    for record in latest_series(history).to_dict("records"):
        rid = record["resource_hash"]
        if rid in unscored:
            continue
        values = _values(record["metric_values"])
        found = series_features(values) if isinstance(values, list) else "no value list"
        if isinstance(found, str):
            unscored[rid] = {k: record[k] for k in KEYS} | {
                "reason": f"{record['metric_name']}: {found}"
            }
            rows.pop(rid, None)
            continue
        row = rows.setdefault(rid, {k: record[k] for k in KEYS} | {"window_end": None})
        end = record.get("end_date")
        if end is not None and (row["window_end"] is None or end > row["window_end"]):
            row["window_end"] = end
        for name, value in found.items():
            row[f"{record['metric_name']} {name}"] = value
    features = pd.DataFrame(list(rows.values()))
    return features, pd.DataFrame(list(unscored.values()), columns=[*KEYS, "reason"])


def _drivers(matrix: pd.DataFrame) -> list[str]:
    """Per row, the feature furthest from the column's median in robust units."""
    median = matrix.median()
    mad = (matrix - median).abs().median() * 1.4826
    spread = mad.where(mad > 1e-9, matrix.std(ddof=0)).replace(0.0, 1.0).fillna(1.0)
    distance = ((matrix - median) / spread).abs()
    return list(distance.idxmax(axis=1))


def score_resources(history: pd.DataFrame, seed: int = 0) -> AnomalyResult:
    """Fit a forest per resource type on its resources' features and score them 0-100."""
    features, unscored = resource_features(history)
    scored: list[pd.DataFrame] = []
    skipped = [unscored]
    if features.empty:
        return AnomalyResult(_empty_scores(), unscored)
    for resource_type, group in features.groupby("resource_type", sort=True):
        columns = sorted(c for c in group.columns if c.rsplit(" ", 1)[-1] in FEATURES)
        matrix = group[columns]
        # Resources of a type may report different metric sets (a metric missing for some):
        # fill with the type's median, which isolates nothing.
        matrix = matrix.fillna(matrix.median()).fillna(0.0)
        if len(group) < MIN_RESOURCES:
            reason = (
                f"only {len(group)} {resource_type} resource(s) with metrics; at least "
                f"{MIN_RESOURCES} are needed to learn what is normal"
            )
            skipped.append(group[list(KEYS)].assign(reason=reason))
            continue
        forest = IsolationForest(n_estimators=TREES, contamination="auto", random_state=seed)
        forest.fit(matrix.to_numpy())
        score = -forest.score_samples(matrix.to_numpy()) * 100.0
        scored.append(
            group[[*KEYS, "window_end"]].assign(
                anomaly_score=np.round(score, 2),
                is_anomaly=forest.predict(matrix.to_numpy()) == -1,
                main_driver=_drivers(matrix),
                features=[
                    {k: round(float(v), 4) for k, v in row.items()}
                    for row in matrix.to_dict("records")
                ],
            )
        )
    scores = pd.concat(scored, ignore_index=True) if scored else _empty_scores()
    skipped = [s for s in skipped if not s.empty]
    unscored = (
        pd.concat(skipped, ignore_index=True)
        if skipped
        else pd.DataFrame(columns=[*KEYS, "reason"])
    )
    return AnomalyResult(
        scores.sort_values("anomaly_score", ascending=False, ignore_index=True), unscored
    )


def _empty_scores() -> pd.DataFrame:
    columns = [*KEYS, "window_end", "anomaly_score", "is_anomaly", "main_driver", "features"]
    return pd.DataFrame(columns=columns)
