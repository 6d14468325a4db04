"""The privacy boundary: raw scans and raw user actions in, anonymized warehouse rows out.

Every row that reaches an ML table is built here, from the functions of ``anonymize``; nothing
else in the project turns a raw id into a stored value. The functions are pure (no I/O, no clock),
so a re-run of a partition produces the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd

from cloudwaste_pipeline.privacy.anonymize import (
    anonymize_tags,
    generalize_region,
    hash_event,
    hash_id,
    hash_user,
    hash_values,
    summarize_metric,
    summarize_metrics,
    whitelist_config,
)

# Re-exported: their home is privacy.events, where every path's event check lives.
from cloudwaste_pipeline.privacy.events import ACTIONS as ACTIONS
from cloudwaste_pipeline.privacy.events import validate_action_event as validate_action_event

BUSINESS_HOURS = range(9, 18)


def naive_utc(value: str | datetime | None) -> datetime | None:
    """Warehouse timestamps are naive UTC: one convention for SQLite and PostgreSQL."""
    if isinstance(value, str):
        if not value:
            return None
        parsed = datetime.fromisoformat(value)
    elif isinstance(value, datetime):
        parsed = value
    elif value is None or pd.isna(value):
        return None
    else:
        raise TypeError(f"not a timestamp: {type(value).__name__}")
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _naive_utc_each(values: list[Any]) -> list[datetime | None]:
    """``naive_utc`` of each value, parsed once per distinct value: the detections of a scan
    share their detection time."""
    known: dict[Any, datetime | None] = {}
    return [known[v] if v in known else known.setdefault(v, naive_utc(v)) for v in values]


def temporal_features(created_at: datetime | None) -> dict[str, Any] | None:
    """When a resource was created (roadmap 2.5): weekend and night resources are often tests."""
    if created_at is None:
        return None
    return {
        "created_hour_of_day": created_at.hour,
        "created_day_of_week": created_at.weekday(),
        "created_day_of_month": created_at.day,
        "is_weekend": created_at.weekday() >= 5,
        "is_business_hours": created_at.weekday() < 5 and created_at.hour in BUSINESS_HOURS,
    }


def metrics_summaries(
    all_metrics: list[Mapping[str, Iterable[Iterable[Any]]] | None],
) -> list[dict[str, Any] | None]:
    """Per detection, aggregates only (avg, p50, p95, p99, trend) of each metric: the daily
    series stays in the history table. Every series of the batch is summarized in one pass."""
    keys: list[tuple[int, str]] = []
    series: list[list[Any]] = []
    for row, metrics in enumerate(all_metrics):
        for name, points in (metrics or {}).items():
            if points:
                keys.append((row, name))
                series.append([v for _, v in points])  # made floats by summarize_metrics
    summaries: list[dict[str, Any]] = [{} for _ in all_metrics]
    for (row, name), summary in zip(keys, summarize_metrics(series), strict=True):
        if summary is not None:
            summaries[row][name] = summary
    return [summary or None for summary in summaries]


def _field(detections: list[dict[str, Any]], name: str) -> list[Any]:
    return [d[name] for d in detections]


def _optional(detections: list[dict[str, Any]], name: str) -> list[Any]:
    """A field a stored scan may lack (older scans) or hold as NaN: None for both."""
    values = [d.get(name) for d in detections]
    return [None if isinstance(v, float) and v != v else v for v in values]


def training_columns(
    detections: list[dict[str, Any]],
    key: bytes,
    scan_date: date,
    collected_at: datetime,
) -> dict[str, list[Any]]:
    """One ``ml_training_data`` row per detection of one account's scan of one day, as columns.

    Built from plain lists, field by field, into plain lists (no frame of the raw detections,
    none of the result): ``load`` takes columns as they are, so the rows of a backfill are
    derived about as fast as PostgreSQL can index them.
    """
    if not detections:
        return {}
    count = len(detections)
    provider = detections[0]["provider"]
    created = _naive_utc_each(_optional(detections, "created_at"))
    detected = _naive_utc_each(_field(detections, "detected_at"))
    types = _field(detections, "resource_type")
    estimated = [round(float(v), 4) for v in _field(detections, "cost_monthly")]
    has_real = any("cost_real_monthly" in d for d in detections)
    return {
        "account_hash": hash_values("account", provider, _field(detections, "account_id"), key),
        "resource_hash": hash_values("resource", provider, _field(detections, "resource_id"), key),
        "resource_type": types,
        "provider": _field(detections, "provider"),
        "region_anonymized": [generalize_region(provider, r) for r in _field(detections, "region")],
        "resource_age_days": [
            max((d - c).days, 0) if c else 0 for c, d in zip(created, detected, strict=True)
        ],
        "detection_scenario": _field(detections, "detection_scenario"),
        "confidence_level": _field(detections, "confidence_level"),
        "metrics_summary": metrics_summaries(_optional(detections, "metrics")),
        "cost_monthly": estimated,
        "cost_source": _optional(detections, "cost_source"),
        **real_cost_columns(
            estimated,
            _optional(detections, "cost_real_monthly") if has_real else None,
            _optional(detections, "cost_real_reason"),
        ),
        "resource_config": [
            whitelist_config(t, c or {})
            for t, c in zip(types, _optional(detections, "config"), strict=True)
        ],
        "tags_anonymized": [anonymize_tags(t or {}) or None for t in _optional(detections, "tags")],
        "parent_resource_hash": hash_values(
            "resource", provider, _optional(detections, "parent_id"), key
        ),
        "parent_resource_type": _optional(detections, "parent_type"),
        "parent_resource_state": _optional(detections, "parent_state"),
        "temporal_features": [temporal_features(c) for c in created],
        "detected_at": detected,
        "created_at": [naive_utc(collected_at)] * count,
        "scan_date": [scan_date] * count,
    }


_NULLABLE_FLOATS = ("cost_real_monthly", "cost_variance_pct")
"""Kept as object columns in a frame, so a missing figure reads None, not NaN."""


def training_rows(
    detections: list[dict[str, Any]],
    key: bytes,
    scan_date: date,
    collected_at: datetime,
) -> pd.DataFrame:
    """``training_columns`` as a frame, for the steps that work on frames (lifecycle, metrics)."""
    columns = training_columns(detections, key, scan_date, collected_at)
    return pd.DataFrame(
        {
            name: pd.Series(values, dtype=object) if name in _NULLABLE_FLOATS else values
            for name, values in columns.items()
        }
    )


def training_row_chunks(
    detections: list[dict[str, Any]],
    key: bytes,
    scan_date: date,
    collected_at: datetime,
    size: int = 250,
) -> Iterator[dict[str, list[Any]]]:
    """``training_columns`` a few detections at a time, lazily.

    Fed to ``load.bulk_insert``, the rows of a large scan are derived while PostgreSQL indexes
    the previous few: client and server work side by side instead of in turn.
    """
    for start in range(0, len(detections), size):
        yield training_columns(detections[start : start + size], key, scan_date, collected_at)


def _number(value: Any) -> float | None:
    """A cost as stored in a scan (number, numeric text, None, NaN) as a float or None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def real_cost_columns(
    estimated: list[float], real: list[Any] | None, reasons: list[Any]
) -> dict[str, list[Any]]:
    """Cost Explorer's figure beside the estimate (roadmap 2.2), or why there is none."""
    if real is None:
        count = len(estimated)
        return {
            "cost_real_monthly": [None] * count,
            "cost_variance_pct": [None] * count,
            "cost_real_reason": ["not collected by this scan"] * count,
        }
    costs = [_number(v) for v in real]
    return {
        "cost_real_monthly": [None if r is None else round(r, 4) for r in costs],
        "cost_variance_pct": [
            round((e - r) / r * 100, 2) if r is not None and r > 0 else None
            for e, r in zip(estimated, costs, strict=True)
        ],
        "cost_real_reason": reasons,
    }


def lifecycle_rows(
    training: pd.DataFrame, previously_detected: set[str], collected_at: datetime
) -> pd.DataFrame:
    """Scan events: ``detected`` on a resource's first appearance, ``metrics_updated`` per scan.

    ``previously_detected`` holds the resource hashes of the account's previous stored scan, so a
    re-run of a day gives the same events whatever order days are backfilled in.
    """
    if training.empty:
        return pd.DataFrame()
    common = training[
        [
            "resource_hash",
            "account_hash",
            "resource_type",
            "provider",
            "region_anonymized",
            "scan_date",
        ]
    ].assign(
        age_at_event_days=training["resource_age_days"],
        cost_at_event=training["cost_monthly"],
        event_timestamp=training["detected_at"],
        created_at=naive_utc(collected_at),
    )
    new = ~training["resource_hash"].isin(previously_detected)
    detected = common[new].assign(event_type="detected", metrics_snapshot=None)
    has_metrics = training["metrics_summary"].notna()
    updated = common[has_metrics].assign(
        event_type="metrics_updated", metrics_snapshot=training.loc[has_metrics, "metrics_summary"]
    )
    return pd.concat([detected, updated], ignore_index=True)


def metrics_history_rows(
    detections: list[dict[str, Any]], training: pd.DataFrame, collected_at: datetime
) -> pd.DataFrame:
    """The full daily series per resource and metric (roadmap 2.3), under hashed ids only."""
    rows = []
    for detection, (_, row) in zip(detections, training.iterrows(), strict=True):
        for name, series in (detection.get("metrics") or {}).items():
            if not series:
                continue
            stamps = [str(t) for t, _ in series]
            values = [float(v) for _, v in series]
            rows.append(
                {
                    "resource_hash": row["resource_hash"],
                    "account_hash": row["account_hash"],
                    "resource_type": row["resource_type"],
                    "provider": row["provider"],
                    "metric_name": name,
                    "metric_values": {
                        "timestamps": stamps,
                        "values": values,
                        **(summarize_metric(values) or {}),
                    },
                    "aggregation_period": "daily",
                    "start_date": naive_utc(stamps[0]),
                    "end_date": naive_utc(stamps[-1]),
                    "collected_at": naive_utc(collected_at),
                    "scan_date": row["scan_date"],
                }
            )
    return pd.DataFrame(rows)


def action_rows(
    events: pd.DataFrame,
    detections: pd.DataFrame,
    preferences: pd.DataFrame,
    key: bytes,
    created_at: datetime,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``user_action_patterns`` rows for the events whose resource has been detected.

    ``detections`` holds, per resource hash, the first detection time and the latest scenario,
    confidence and cost (from ``ml_training_data``). Returns (rows, held events): an event for a
    resource not yet detected is held, not dropped, because its scan may not be processed yet.
    """
    if events.empty:
        return pd.DataFrame(), events
    frame = events.copy()
    frame["event_hash"] = [hash_event(str(e), key) for e in frame["event_id"]]
    frame["user_hash"] = [hash_user(str(u), key) for u in frame["user_id"]]
    frame["account_hash"] = [
        hash_id("account", p, a, key)
        for a, p in zip(frame["account_id"], frame["provider"], strict=True)
    ]
    frame["resource_hash"] = [
        hash_id("resource", p, r, key)
        for r, p in zip(frame["resource_id"], frame["provider"], strict=True)
    ]
    joined = frame.merge(detections, on="resource_hash", how="left")
    found = joined["detected_at"].notna()
    held = events[~found.to_numpy()]
    rows = joined[found].copy()
    if rows.empty:
        return pd.DataFrame(), held
    rows["action_at"] = [naive_utc(v) for v in rows["action_at"]]
    if not preferences.empty:
        rows = rows.merge(preferences, on="user_hash", how="left")
    else:
        rows["industry_anonymized"] = None
        rows["company_size_bucket"] = None
    hours = (
        pd.to_datetime(rows["action_at"]) - pd.to_datetime(rows["detected_at"])
    ).dt.total_seconds()
    out = pd.DataFrame(
        {
            "event_hash": rows["event_hash"],
            "user_hash": rows["user_hash"],
            "account_hash": rows["account_hash"],
            "resource_hash": rows["resource_hash"],
            "resource_type": rows["resource_type"],
            "provider": rows["provider"],
            "region_anonymized": rows["region_anonymized"],
            "detection_scenario": rows["detection_scenario"],
            "confidence_level": rows["confidence_level"],
            "action_taken": rows["action"],
            "time_to_action_hours": (hours.clip(lower=0) / 3600).round().astype(int),
            "cost_monthly": rows["cost_monthly"].astype(float),
            "cost_saved_monthly": rows["cost_monthly"]
            .astype(float)
            .where(rows["action"] == "deleted", 0.0),
            "industry_anonymized": rows["industry_anonymized"],
            "company_size_bucket": rows["company_size_bucket"],
            "detected_at": pd.to_datetime(rows["detected_at"]).dt.to_pydatetime(),
            "action_at": rows["action_at"],
            "created_at": naive_utc(created_at),
        }
    )
    return out.reset_index(drop=True), held


def action_lifecycle_rows(actions: pd.DataFrame) -> pd.DataFrame:
    """``status_changed`` for every action, ``deleted`` for deletions, keyed by the event hash."""
    if actions.empty:
        return pd.DataFrame()
    base = pd.DataFrame(
        {
            "resource_hash": actions["resource_hash"],
            "account_hash": actions["account_hash"],
            "resource_type": actions["resource_type"],
            "provider": actions["provider"],
            "region_anonymized": actions["region_anonymized"],
            "age_at_event_days": None,
            "cost_at_event": actions["cost_monthly"],
            "metrics_snapshot": [{"action": a} for a in actions["action_taken"]],
            "event_timestamp": actions["action_at"],
            "created_at": actions["created_at"],
            "scan_date": None,
            "source_event_hash": actions["event_hash"],
        }
    )
    changed = base.assign(event_type="status_changed")
    deleted = base[(actions["action_taken"] == "deleted").to_numpy()].assign(event_type="deleted")
    return pd.concat([changed, deleted], ignore_index=True)
