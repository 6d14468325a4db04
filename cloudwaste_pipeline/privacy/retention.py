"""Retention: raw scans (raw ids) go after days, ML rows after years.

Raw data is what can identify a customer, so it is kept only as long as a day may need to be
re-derived (``CLOUDWASTE_RAW_RETENTION_DAYS``, default 30). Anonymized ML rows are kept for
``CLOUDWASTE_ML_RETENTION_YEARS`` (default 3), the predecessor's GDPR rule.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloudwaste_pipeline.warehouse import schema


def ml_cutoff(today: date, years: int) -> date:
    """The same calendar day ``years`` earlier (28 Feb for 29 Feb)."""
    try:
        return today.replace(year=today.year - years)
    except ValueError:
        return today.replace(year=today.year - years, day=28)


def retention_rules(
    today: date, raw_days: int, ml_years: int
) -> list[tuple[sa.Table, sa.ColumnElement[bool]]]:
    raw_cut = today - timedelta(days=raw_days)
    ml_cut = ml_cutoff(today, ml_years)
    ml_cut_ts = datetime.combine(ml_cut, datetime.min.time())
    return [
        (schema.raw_scans, schema.raw_scans.c.scan_date < raw_cut),
        (schema.scan_errors, schema.scan_errors.c.scan_date < raw_cut),
        (schema.ml_training_data, schema.ml_training_data.c.detected_at < ml_cut_ts),
        (
            schema.resource_lifecycle_events,
            schema.resource_lifecycle_events.c.event_timestamp < ml_cut_ts,
        ),
        (
            schema.cloudwatch_metrics_history,
            schema.cloudwatch_metrics_history.c.end_date < ml_cut_ts,
        ),
        (schema.user_action_patterns, schema.user_action_patterns.c.action_at < ml_cut_ts),
        (schema.cost_trend_data, schema.cost_trend_data.c.month < ml_cut.strftime("%Y-%m")),
    ]


def cleanup(engine: Engine, today: date, raw_days: int, ml_years: int) -> dict[str, int]:
    """Delete what is past retention; returns rows removed per table."""
    removed: dict[str, int] = {}
    with engine.begin() as conn:
        for table, expired in retention_rules(today, raw_days, ml_years):
            removed[table.fullname] = conn.execute(sa.delete(table).where(expired)).rowcount or 0
    return removed
