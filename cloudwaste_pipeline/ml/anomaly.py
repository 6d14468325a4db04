"""Resource anomalies: an Isolation Forest per resource type and metric over the series.

What is scored: each resource's latest daily series per metric (``cloudwatch_metrics_history``),
reduced to two features that compare the resource with its own days, so they mean the same
for a small volume and a big one, a quiet one and a noisy one:

- ``spike``: log1p of (max - median) over the robust spread (MAD), a burst against its own days;
- ``shift``: log of the last week's mean over the earlier mean, a recent change of regime.

A forest per resource type and metric, over those two features; a resource's score is the
highest of its metrics'. Not one forest over every metric of a type: an Isolation Forest splits
on a random feature, so a burst in one metric out of three is diluted by the dimensions where it
is ordinary. Nor features of what a resource steadily *is* (its level, how noisy it is): idle and
busy machines form legitimate clusters, and a forest calls the smaller cluster odd (on the
simulated fleet, idle instances outscored planted bursts until those features were dropped). An
anomaly here is a resource unlike its own past. A (type, metric) with fewer than
``MIN_RESOURCES`` series gets no forest (a forest on a handful of points calls everything odd),
and a series shorter than ``MIN_POINTS`` days has no meaningful spike or shift: such resources
are returned as ``unscored`` with their reason, never dropped silently.

The score is the Isolation Forest's own, ``s = 2^(-E[h(x)] / c(n))`` (scikit-learn's
``-score_samples``), times 100: comparable across types and runs, about 50 or below for normal
points and towards 100 for isolated ones (the score is normalized by the sample size, so one
threshold holds for any fleet). ``is_anomaly`` is ``score >= FLAG_SCORE`` (70). Not the
forest's own ``s > 0.5``: on tens of ordinary resources that flags about half of them (the
simulated demo fleet: 17 of 26 instances, none planted), the more so as a resource's score is
the highest of its metrics'. Adaptive cut-offs (median + 3 MAD, Tukey's fence) failed the other
way: where idle and busy machines spread the scores, they flagged no planted anomaly. On the
simulated fleets, ordinary resources score up to about 71 and planted ones from about 72: the
flag is a prompt to look, the score is the ranking. ``main_driver`` names, in the metric that
scores highest, the feature furthest from its peers' median (in MADs), so a FinOps user sees
why ("VolumeReadOps spike").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MIN_POINTS = 7
MIN_RESOURCES = 10
RECENT_DAYS = 7
TREES = 200
FLAG_SCORE = 70.0
FEATURES = ("spike", "shift")
KEYS = ("resource_hash", "account_hash", "resource_type", "provider")


@dataclass
class AnomalyResult:
    """Scores per resource, and the resources that could not be scored, with why."""

    scores: pd.DataFrame  # KEYS + anomaly_score, is_anomaly, main_driver, window_end, features
    unscored: pd.DataFrame  # KEYS + reason


def series_features(values: Iterable[Any]) -> dict[str, float] | str:
    """The features of one daily series, or why it cannot be used."""
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
    # A flat series has no MAD; the floor keeps a burst on it large but finite. It is relative
    # to the median and tiny, so a steady busy series and a noisy idle one compare alike.
    floor = max(mad, 1e-6 * abs(median), 1e-9)
    recent, earlier = array[-RECENT_DAYS:], array[:-RECENT_DAYS]
    if len(earlier) == 0:
        shift = 0.0
    else:
        eps = max(1e-9, 0.01 * abs(mean))
        shift = math.log((abs(recent.mean()) + eps) / (abs(earlier.mean()) + eps))
    return {
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


def _furthest(matrix: pd.DataFrame) -> pd.Series:
    """Per row, the column furthest from its median in robust units (MAD, else std)."""
    median = matrix.median()
    mad = (matrix - median).abs().median() * 1.4826
    spread = mad.where(mad > 1e-9, matrix.std(ddof=0)).replace(0.0, 1.0).fillna(1.0)
    return ((matrix - median) / spread).abs().idxmax(axis=1)


def score_resources(history: pd.DataFrame, seed: int = 0) -> AnomalyResult:
    """A forest per resource type and metric; a resource's score is its highest, 0-100."""
    from sklearn.ensemble import IsolationForest

    features, unscored = resource_features(history)
    if features.empty:
        return AnomalyResult(_empty_scores(), unscored)
    scores = pd.DataFrame(index=features.index, dtype=float)
    drivers = pd.DataFrame(index=features.index, dtype=object)
    small: dict[Any, list[str]] = {}  # row -> the (metric, count) groups too small
    for _, group in features.groupby("resource_type", sort=True):
        metrics = sorted({c.rsplit(" ", 1)[0] for c in group.columns if c.endswith(" spike")})
        for metric in metrics:
            columns = [f"{metric} {name}" for name in FEATURES]
            matrix = group[columns].dropna()
            if len(matrix) < MIN_RESOURCES:
                for index in matrix.index:
                    small.setdefault(index, []).append(f"{metric} ({len(matrix)})")
                continue
            forest = IsolationForest(n_estimators=TREES, random_state=seed)
            forest.fit(matrix.to_numpy())
            scores.loc[matrix.index, metric] = -forest.score_samples(matrix.to_numpy()) * 100.0
            drivers.loc[matrix.index, metric] = _furthest(matrix)
    scored = scores.notna().any(axis=1) if not scores.empty else pd.Series(False, features.index)
    if (~scored).any():
        left = features.loc[~scored, list(KEYS)].copy()
        left["reason"] = [
            "too few peers to learn what is normal (resources of its type per metric: "
            + ", ".join(small.get(i, []))
            + f"; at least {MIN_RESOURCES} are needed)"
            for i in left.index
        ]
        unscored = pd.concat([unscored, left], ignore_index=True) if len(unscored) else left
    if not scored.any():
        return AnomalyResult(_empty_scores(), unscored.reset_index(drop=True))
    kept = features[scored]
    best = scores[scored].idxmax(axis=1)
    best_score = scores[scored].max(axis=1).round(2)
    result = kept[[*KEYS, "window_end"]].assign(
        anomaly_score=best_score,
        is_anomaly=best_score >= FLAG_SCORE,
        main_driver=[drivers.at[i, m] for i, m in best.items()],
        features=[
            {k: round(float(v), 4) for k, v in row.items() if pd.notna(v)}
            for row in kept.drop(columns=[*KEYS, "window_end"]).to_dict("records")
        ],
    )
    return AnomalyResult(
        result.sort_values("anomaly_score", ascending=False, ignore_index=True),
        unscored.reset_index(drop=True),
    )


def _empty_scores() -> pd.DataFrame:
    columns = [*KEYS, "window_end", "anomaly_score", "is_anomaly", "main_driver", "features"]
    return pd.DataFrame(columns=columns)
