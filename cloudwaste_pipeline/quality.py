"""Data quality of an export window (``validate_data_quality`` of the architecture seed 002).

Four checks, computed in SQL over the window (aggregates only, so they cost the same on a
million rows and never load the window into memory):

- ``no_null_critical_fields`` (error): a NOT NULL column of the schema holds a NULL (the usage
  guide's resource_type, detection_scenario, cost_monthly and the other critical fields);
- ``values_in_domain`` (error): an unknown provider, confidence, action or region group, a hash
  that is not 64 characters, a negative cost, age or delay, a waste percentage outside 0-100;
- ``no_duplicates`` (error): a resource detected twice on one scan day, a decision recorded twice
  under two event ids, two rows for one account and month;
- ``label_balance`` (warn): no labelled detection in the window, or the minority class (deleted
  vs kept/ignored, the model's target) under 10 % of the labels.

Errors block the export (the files would teach a model wrong things); a skewed label balance is a
fact about users, worth a warning in the UI but no reason to withhold the data.

The schema already enforces NOT NULL and the unique keys; the checks are the second line, for rows
that reach the warehouse another way (a manual load, an older migration, a new code path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloudwaste_pipeline.errors import CloudWasteError
from cloudwaste_pipeline.exports import (
    Dataset,
    Destination,
    ExportResult,
    datasets,
    export_window,
    window_filter,
)
from cloudwaste_pipeline.privacy.anonymize import PROVIDERS, REGION_GROUPS
from cloudwaste_pipeline.privacy.derive import ACTIONS

ERROR = "error"
WARN = "warn"
CONFIDENCE_LEVELS = ("critical", "high", "medium", "low")
MIN_MINORITY_LABEL_SHARE = 0.10
HASH_LENGTH = 64

CHECKS = {
    "no_null_critical_fields": (ERROR, "No NULL in a NOT NULL (critical) column of the window."),
    "values_in_domain": (ERROR, "Categories, hashes and amounts are within their domains."),
    "no_duplicates": (ERROR, "No detection, decision or monthly row is recorded twice."),
    "label_balance": (
        WARN,
        f"Labels exist and the minority class is at least {MIN_MINORITY_LABEL_SHARE:.0%}.",
    ),
}


@dataclass(frozen=True)
class QualityCheck:
    name: str
    severity: str  # ERROR blocks the export, WARN does not
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)  # counts only: never a row's values

    @property
    def blocks(self) -> bool:
        return not self.passed and self.severity == ERROR


@dataclass(frozen=True)
class QualityReport:
    start: date
    end: date
    checks: list[QualityCheck]

    @property
    def blocking(self) -> list[QualityCheck]:
        return [c for c in self.checks if c.blocks]

    @property
    def ok(self) -> bool:
        return not self.blocking

    def summary(self) -> str:
        failed = [
            f"{c.name} ({c.severity}: {_nonzero(c.details)})" for c in self.checks if not c.passed
        ]
        return "; ".join(failed) if failed else "all quality checks passed"

    def to_dict(self) -> dict[str, Any]:
        return {
            c.name: {"severity": c.severity, "passed": c.passed, "details": c.details}
            for c in self.checks
        }


def _nonzero(details: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in details.items() if v} or details


def _count_where(
    conn: sa.Connection, dataset: Dataset, start: date, end: date, conditions: dict[str, Any]
) -> dict[str, int]:
    """One query: for each named condition, how many rows of the window meet it."""
    columns = [
        sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0).label(name)
        for name, condition in conditions.items()
    ]
    row = conn.execute(
        sa.select(*columns).select_from(dataset.table).where(window_filter(dataset, start, end))
    ).one()
    return {f"{dataset.name}.{name}": int(value) for name, value in row._mapping.items()}


def _nulls(conn: sa.Connection, dataset: Dataset, start: date, end: date) -> dict[str, int]:
    critical = [c for c in dataset.table.columns if not c.nullable and not c.primary_key]
    return _count_where(conn, dataset, start, end, {c.name: c.is_(None) for c in critical})


def _not_in(column: sa.ColumnElement[Any], values: tuple[str, ...]) -> sa.ColumnElement[bool]:
    return sa.and_(column.is_not(None), column.not_in(values))


def _bad_hash(column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    return sa.and_(column.is_not(None), sa.func.length(column) != HASH_LENGTH)


def _negative(column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    return column < 0


def _domains(conn: sa.Connection, dataset: Dataset, start: date, end: date) -> dict[str, int]:
    c = dataset.table.c
    conditions: dict[str, Any] = {
        "provider": _not_in(c.provider, PROVIDERS),
        "account_hash": _bad_hash(c.account_hash),
    }
    if dataset.name == "ml_training_data":
        conditions |= {
            "resource_hash": _bad_hash(c.resource_hash),
            "confidence_level": _not_in(c.confidence_level, CONFIDENCE_LEVELS),
            "user_action": _not_in(c.user_action, ACTIONS),
            "region_anonymized": _not_in(c.region_anonymized, REGION_GROUPS),
            "cost_monthly": _negative(c.cost_monthly),
            "resource_age_days": _negative(c.resource_age_days),
        }
    elif dataset.name == "user_action_patterns":
        conditions |= {
            "user_hash": _bad_hash(c.user_hash),
            "resource_hash": _bad_hash(c.resource_hash),
            "confidence_level": _not_in(c.confidence_level, CONFIDENCE_LEVELS),
            "action_taken": _not_in(c.action_taken, ACTIONS),
            "region_anonymized": _not_in(c.region_anonymized, REGION_GROUPS),
            "time_to_action_hours": _negative(c.time_to_action_hours),
            "cost_monthly": _negative(c.cost_monthly),
            "cost_saved_monthly": _negative(c.cost_saved_monthly),
        }
    else:
        conditions |= {
            "total_spend": _negative(c.total_spend),
            "waste_detected": _negative(c.waste_detected),
            "waste_eliminated": _negative(c.waste_eliminated),
            "waste_percentage": sa.or_(c.waste_percentage < 0, c.waste_percentage > 100),
        }
    return _count_where(conn, dataset, start, end, conditions)


DUPLICATE_KEYS = {
    # One row per resource per scan day (a scan partition is replaced, never appended to).
    "ml_training_data": ("resource_hash", "scan_date"),
    # The same decision by the same user on the same resource at the same instant, under two ids.
    "user_action_patterns": ("user_hash", "resource_hash", "action_taken", "action_at"),
    # The monthly aggregate is replaced per account and month.
    "cost_trends": ("account_hash", "month"),
}


def _duplicates(conn: sa.Connection, dataset: Dataset, start: date, end: date) -> dict[str, int]:
    """Rows beyond the first of each key (0 when every key is unique)."""
    keys = [dataset.table.c[k] for k in DUPLICATE_KEYS[dataset.name]]
    groups = (
        sa.select((sa.func.count() - 1).label("extra"))
        .select_from(dataset.table)
        .where(window_filter(dataset, start, end))
        .group_by(*keys)
        .having(sa.func.count() > 1)
        .subquery()
    )
    extra = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(groups.c.extra), 0))).scalar_one()
    return {f"{dataset.name}.duplicate_rows": int(extra)}


def _label_balance(conn: sa.Connection, start: date, end: date) -> QualityCheck:
    """The model's target is deleted vs not deleted: balance is measured on that split."""
    dataset = datasets()[0]
    action = dataset.table.c.user_action
    counts = {
        str(row.user_action): int(row.n)
        for row in conn.execute(
            sa.select(action, sa.func.count().label("n"))
            .where(window_filter(dataset, start, end), action.is_not(None))
            .group_by(action)
        )
    }
    labelled = sum(counts.values())
    deleted = counts.get("deleted", 0)
    share = min(deleted, labelled - deleted) / labelled if labelled else 0.0
    details: dict[str, Any] = {
        "labelled": labelled,
        **{f"label_{a}": counts.get(a, 0) for a in ACTIONS},
        "minority_share": round(share, 4),
        "minimum_share": MIN_MINORITY_LABEL_SHARE,
    }
    return QualityCheck(
        "label_balance", WARN, labelled > 0 and share >= MIN_MINORITY_LABEL_SHARE, details
    )


def validate_data_quality(conn: sa.Connection, start: date, end: date) -> QualityReport:
    """The quality report of the export window [start, end] (the rows ``export_window`` writes)."""
    nulls: dict[str, int] = {}
    domains: dict[str, int] = {}
    duplicates: dict[str, int] = {}
    for dataset in datasets():
        nulls |= _nulls(conn, dataset, start, end)
        domains |= _domains(conn, dataset, start, end)
        duplicates |= _duplicates(conn, dataset, start, end)
    checks = [
        QualityCheck("no_null_critical_fields", ERROR, not any(nulls.values()), nulls),
        QualityCheck("values_in_domain", ERROR, not any(domains.values()), domains),
        QualityCheck("no_duplicates", ERROR, not any(duplicates.values()), duplicates),
        _label_balance(conn, start, end),
    ]
    return QualityReport(start, end, checks)


class DataQualityError(CloudWasteError):
    """An export window failed an ERROR-severity quality check: nothing was written."""

    def __init__(self, report: QualityReport) -> None:
        super().__init__(
            f"export of {report.start}..{report.end} blocked by data quality: {report.summary()}"
        )
        self.report = report


def export_if_valid(
    engine: Engine, destination: Destination, start: date, end: date, **options: Any
) -> tuple[ExportResult, QualityReport]:
    """Validate the window, then export it (options of ``export_window``) with the report in
    the manifest; raise ``DataQualityError`` and write nothing when an ERROR check fails."""
    with engine.connect() as conn:
        report = validate_data_quality(conn, start, end)
    if not report.ok:
        raise DataQualityError(report)
    extra = {**(options.pop("extra_manifest", None) or {}), "quality": report.to_dict()}
    result = export_window(engine, destination, start, end, extra_manifest=extra, **options)
    return result, report
