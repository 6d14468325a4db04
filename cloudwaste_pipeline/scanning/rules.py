"""What every provider's rule table shares: the rule record, the confidence scales, the daily
metric helpers and the engine that applies a table.

A rule table (``rules_aws``, ``rules_azure``) is a tuple of ``Rule`` rows over that provider's
resource types, with a frozen ``Thresholds`` dataclass of its own holding every number. The
helpers here read the threshold fields the scales need by name (``quiet_*_days``,
``age_*_days``), so each provider's thresholds define them.

Metric series are daily (``[(ISO date, value), ...]``); a "day" is a complete UTC calendar day
before ``now``'s date, so "the last N days" are ``now.date() - N`` .. ``now.date() - 1``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cloudwaste_pipeline.scanning.model import Detection, Resource

CRITICAL = "critical"
HIGH = "high"
MEDIUM = "medium"
LOW = "low"
CONFIDENCE_LEVELS = (CRITICAL, HIGH, MEDIUM, LOW)

METRIC_WINDOW_DAYS = 30  # the scanners' window; quiet streaks never count further back

QUIET_SCALE = (
    "critical ≥ {t.quiet_critical_days:g}, high ≥ {t.quiet_high_days:g}, "
    "medium ≥ {t.quiet_medium_days:g}, else low"
)
AGE_SCALE = (
    "Days since creation: critical ≥ {t.age_critical_days:g}, high ≥ {t.age_high_days:g}, "
    "medium ≥ {t.age_medium_days:g}, else low"
)


@dataclass(frozen=True)
class Rule:
    """One row of a table: what it detects, the rule and confidence in words, and the checks.

    ``description`` and ``confidence_rule`` are ``str.format`` templates over the thresholds'
    fields (``{t.stopped_instance_min_days}``), so the documentation always shows the thresholds
    in use. The callables take ``(resource, now, thresholds)``.
    """

    resource_type: str
    scenario: str
    description: str
    confidence_rule: str
    matches: Callable[[Resource, datetime, Any], bool]
    confidence: Callable[[Resource, datetime, Any], str]
    reason: Callable[[Resource, datetime, Any], str]


def days_since(since: datetime | None, now: datetime) -> float | None:
    return None if since is None else (now - since) / timedelta(days=1)


def graded(days: float | None, critical: float, high: float, medium: float) -> str:
    """The shared scale: critical, high or medium from each threshold on, low below (or unknown)."""
    if days is None:
        return LOW
    if days >= critical:
        return CRITICAL
    if days >= high:
        return HIGH
    if days >= medium:
        return MEDIUM
    return LOW


def series(r: Resource, metric: str) -> dict[str, float]:
    """One metric of a resource as ``{ISO date: value}``."""
    return dict(r.metrics.get(metric) or [])


def last_days(now: datetime, n: int) -> list[str]:
    """ISO dates of the ``n`` complete UTC days before ``now``'s date, most recent first."""
    today = now.date()
    return [(today - timedelta(days=k)).isoformat() for k in range(1, int(n) + 1)]


def quiet_streak(now: datetime, quiet_day: Callable[[str], bool]) -> int:
    """Consecutive days back from yesterday on which ``quiet_day`` holds (which needs data)."""
    streak = 0
    for day in last_days(now, METRIC_WINDOW_DAYS):
        if not quiet_day(day):
            break
        streak += 1
    return streak


def quiet_grade(streak: int, t: Any) -> str:
    return graded(streak, t.quiet_critical_days, t.quiet_high_days, t.quiet_medium_days)


def age_grade(r: Resource, now: datetime, t: Any) -> str:
    return graded(
        days_since(r.created_at, now), t.age_critical_days, t.age_high_days, t.age_medium_days
    )


def detect(
    resources: Sequence[Resource], now: datetime, thresholds: Any, rules: Sequence[Rule]
) -> list[Detection]:
    """Flag each resource with the first rule of its type that matches, if any."""
    by_type: dict[str, list[Rule]] = {}
    for rule in rules:
        by_type.setdefault(rule.resource_type, []).append(rule)
    detections = []
    for resource in resources:
        for rule in by_type.get(resource.resource_type, ()):
            if rule.matches(resource, now, thresholds):
                detections.append(
                    Detection(
                        resource=resource,
                        detection_scenario=rule.scenario,
                        confidence_level=rule.confidence(resource, now, thresholds),
                        reason=rule.reason(resource, now, thresholds),
                        detected_at=now,
                    )
                )
                break
    return detections


def rules_markdown(thresholds: Any, rules: Sequence[Rule]) -> str:
    """A rule table as markdown, thresholds filled in, for the docs and the Dagster UI."""
    lines = [
        "| resource_type | scenario | rule | confidence |",
        "| --- | --- | --- | --- |",
    ]
    for rule in rules:
        description = rule.description.format(t=thresholds)
        confidence = rule.confidence_rule.format(t=thresholds)
        lines.append(f"| {rule.resource_type} | {rule.scenario} | {description} | {confidence} |")
    return "\n".join(lines)
