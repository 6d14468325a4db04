"""The AWS waste rules, as one table a FinOps engineer can review without reading the scanner.

Each ``Rule`` names the resource type and scenario it detects, says in words what it checks and
how its confidence is graded, and holds the two small functions that do exactly that. Every number
a rule uses is a named field of ``Thresholds`` with a default, so changing a threshold is a
reviewed one-line change (or a per-run override), never an edit inside a rule.

Confidence grades how long and how clearly the waste condition has held: the longer a volume has
sat unattached or an instance stopped, the less likely it is a pause someone will come back to.

The scanner fills ``Resource.state_since`` for an instance from its ``StateTransitionReason``;
when AWS gives no parseable stop time the instance (and its volumes) is not flagged, because we
cannot tell a stop of a minute ago from one of a year ago.

Rules still to come (they need metrics or resources the scanner does not read yet):
``ebs_volume/idle_volume`` and ``ec2_instance/idle_instance`` (CloudWatch series already attached
to resources), ``ebs_snapshot/orphaned_snapshot``, RDS, ``nat_gateway/unused_nat_gateway`` and
load balancers without targets. Add them as rows of ``RULES``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cloudwaste_pipeline.scanning.model import Detection, Resource

CRITICAL = "critical"
HIGH = "high"
MEDIUM = "medium"
LOW = "low"
CONFIDENCE_LEVELS = (CRITICAL, HIGH, MEDIUM, LOW)


@dataclass(frozen=True)
class Thresholds:
    """Every number the rules use, with its default; days are compared as exact durations."""

    # An instance counts as wasted only once stopped for strictly more than this.
    stopped_instance_min_days: float = 7
    # Confidence for a stopped instance (and volumes attached only to stopped instances).
    stopped_critical_days: float = 90
    stopped_high_days: float = 30
    stopped_medium_days: float = 14
    # Confidence for an unattached volume, by days since its creation (AWS records no detach time).
    unattached_critical_days: float = 90
    unattached_high_days: float = 30
    unattached_medium_days: float = 7


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Rule:
    """One row of the table: what it detects, the rule and confidence in words, and the checks.

    ``description`` and ``confidence_rule`` are ``str.format`` templates over ``Thresholds`` fields
    (``{t.stopped_instance_min_days}``), so the documentation always shows the thresholds in use.
    """

    resource_type: str
    scenario: str
    description: str
    confidence_rule: str
    matches: Callable[[Resource, datetime, Thresholds], bool]
    confidence: Callable[[Resource, datetime, Thresholds], str]
    reason: Callable[[Resource, datetime, Thresholds], str]


def _days(since: datetime | None, now: datetime) -> float | None:
    return None if since is None else (now - since) / timedelta(days=1)


def _graded(days: float | None, critical: float, high: float, medium: float) -> str:
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


def _stopped_longer_than_min(since: datetime | None, now: datetime, t: Thresholds) -> bool:
    return since is not None and now - since > timedelta(days=t.stopped_instance_min_days)


def _stopped_grade(since: datetime | None, now: datetime, t: Thresholds) -> str:
    return _graded(
        _days(since, now), t.stopped_critical_days, t.stopped_high_days, t.stopped_medium_days
    )


# ebs_volume/unattached_volume


def _unattached_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    return r.state == "available" and not r.attrs.get("attachments")


def _unattached_confidence(r: Resource, now: datetime, t: Thresholds) -> str:
    return _graded(
        _days(r.created_at, now),
        t.unattached_critical_days,
        t.unattached_high_days,
        t.unattached_medium_days,
    )


def _volume_phrase(r: Resource) -> str:
    size, volume_type = r.config.get("size_gb"), r.config.get("volume_type")
    return f"{size} GiB {volume_type} volume" if size and volume_type else "Volume"


def _unattached_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    days = _days(r.created_at, now)
    age = f", created {int(days)} days ago" if days is not None else ""
    return f"{_volume_phrase(r)} is not attached to any instance{age}."


# ebs_volume/attached_to_stopped_instance


def _parents_stopped_since(r: Resource) -> datetime | None:
    return r.attrs.get("attached_instances_stopped_since")


def _attached_to_stopped_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    states = r.attrs.get("attached_instance_states") or []
    return (
        bool(states)
        and all(state == "stopped" for state in states)
        and r.parent_state == "stopped"
        and _stopped_longer_than_min(_parents_stopped_since(r), now, t)
    )


def _attached_to_stopped_confidence(r: Resource, now: datetime, t: Thresholds) -> str:
    return _stopped_grade(_parents_stopped_since(r), now, t)


def _attached_to_stopped_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    days = int(_days(_parents_stopped_since(r), now) or 0)
    return f"{_volume_phrase(r)} is attached only to an instance stopped for {days} days."


# elastic_ip/unassociated_ip


def _unassociated_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    return not r.attrs.get("association_id")


def _unassociated_confidence(r: Resource, now: datetime, t: Thresholds) -> str:
    return HIGH


def _unassociated_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    return "Elastic IP is allocated but not associated with any instance or network interface."


# ec2_instance/stopped_instance


def _stopped_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    return r.state == "stopped" and _stopped_longer_than_min(r.state_since, now, t)


def _stopped_confidence(r: Resource, now: datetime, t: Thresholds) -> str:
    return _stopped_grade(r.state_since, now, t)


def _stopped_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    days = int(_days(r.state_since, now) or 0)
    instance_type = r.config.get("instance_type") or "Instance"
    return f"{instance_type} instance has been stopped for {days} days; its volumes still bill."


_STOPPED_SCALE = (
    "critical ≥ {t.stopped_critical_days:g} d, high ≥ {t.stopped_high_days:g} d, "
    "medium ≥ {t.stopped_medium_days:g} d, else low"
)

# First match in table order wins: a resource gets at most one scenario.
RULES: tuple[Rule, ...] = (
    Rule(
        resource_type="ebs_volume",
        scenario="unattached_volume",
        description="State `available` and no attachments.",
        confidence_rule=(
            "Days since creation: critical ≥ {t.unattached_critical_days:g}, "
            "high ≥ {t.unattached_high_days:g}, medium ≥ {t.unattached_medium_days:g}, else low "
            "(AWS records no detach time)."
        ),
        matches=_unattached_matches,
        confidence=_unattached_confidence,
        reason=_unattached_reason,
    ),
    Rule(
        resource_type="ebs_volume",
        scenario="attached_to_stopped_instance",
        description=(
            "Every attached instance is `stopped`, the most recent stop more than "
            "{t.stopped_instance_min_days:g} days ago."
        ),
        confidence_rule="Days since the most recent stop: " + _STOPPED_SCALE + ".",
        matches=_attached_to_stopped_matches,
        confidence=_attached_to_stopped_confidence,
        reason=_attached_to_stopped_reason,
    ),
    Rule(
        resource_type="elastic_ip",
        scenario="unassociated_ip",
        description="No `AssociationId`: allocated but not associated.",
        confidence_rule=(
            "Always high: unambiguous, and AWS exposes no allocation time to grade by."
        ),
        matches=_unassociated_matches,
        confidence=_unassociated_confidence,
        reason=_unassociated_reason,
    ),
    Rule(
        resource_type="ec2_instance",
        scenario="stopped_instance",
        description=(
            "State `stopped` for more than {t.stopped_instance_min_days:g} days (stop time parsed "
            "from `StateTransitionReason`; not flagged when it cannot be parsed)."
        ),
        confidence_rule="Days stopped: " + _STOPPED_SCALE + ".",
        matches=_stopped_matches,
        confidence=_stopped_confidence,
        reason=_stopped_reason,
    ),
)


def detect(
    resources: Sequence[Resource],
    now: datetime,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    rules: Sequence[Rule] = RULES,
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


def rules_markdown(
    thresholds: Thresholds = DEFAULT_THRESHOLDS, rules: Sequence[Rule] = RULES
) -> str:
    """The rule table as markdown, thresholds filled in, for the docs and the Dagster UI."""
    lines = [
        "| resource_type | scenario | rule | confidence |",
        "| --- | --- | --- | --- |",
    ]
    for rule in rules:
        description = rule.description.format(t=thresholds)
        confidence = rule.confidence_rule.format(t=thresholds)
        lines.append(f"| {rule.resource_type} | {rule.scenario} | {description} | {confidence} |")
    return "\n".join(lines)
