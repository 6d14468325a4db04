"""The AWS waste rules, as one table a FinOps engineer can review without reading the scanner.

Each ``Rule`` names the resource type and scenario it detects, says in words what it checks and
how its confidence is graded, and holds the two small functions that do exactly that. Every number
a rule uses is a named field of ``Thresholds`` with a default, so changing a threshold is a
reviewed one-line change (or a per-run override), never an edit inside a rule.

Confidence grades how long and how clearly the waste condition has held: the longer a volume has
sat unattached or an instance stopped, the less likely it is a pause someone will come back to.
Metric rules grade by their *quiet streak*: the number of consecutive complete UTC days, counted
back from yesterday within the scanner's 30-day metric window, on which the day's data point
exists and satisfies the rule's per-day condition (a day without data ends the streak).

The scanner fills ``Resource.state_since`` for an instance from its ``StateTransitionReason``;
when AWS gives no parseable stop time the instance (and its volumes) is not flagged, because we
cannot tell a stop of a minute ago from one of a year ago.

Metric series are daily (``[(ISO date, value), ...]``); a "day" is a complete UTC calendar day
before ``now``'s date, so "the last N days" are ``now.date() - N`` .. ``now.date() - 1``. A rule
that needs data and has none does not flag: silence in CloudWatch is not evidence of idleness.

Rule order within a type matters (first match wins): a stopped instance is ``stopped_instance``,
never ``idle_instance``; an unattached volume is never ``idle_volume``; a snapshot whose volume is
gone is ``orphaned_snapshot`` even when it is also old (the stronger, more specific finding); a
load balancer without healthy targets is ``no_targets`` even when it also has no requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cloudwaste_pipeline.scanning import rules as engine
from cloudwaste_pipeline.scanning.model import Detection, Resource
from cloudwaste_pipeline.scanning.rules import (
    AGE_SCALE,
    CRITICAL,
    HIGH,
    MEDIUM,
    METRIC_WINDOW_DAYS,
    QUIET_SCALE,
    Rule,
    age_grade,
    days_since,
    graded,
    last_days,
    quiet_grade,
    quiet_streak,
    series,
)


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
    # ebs_volume/idle_volume: attached to a running instance, average daily read+write ops at most
    # this over the metric window, with at least ``idle_volume_min_days`` days of data.
    idle_volume_max_daily_ops: float = 100
    idle_volume_min_days: int = 7
    # ec2_instance/idle_instance: on each of the last ``idle_instance_days`` days, average CPU
    # below ``idle_instance_max_cpu_percent`` and NetworkIn+NetworkOut below the byte limit.
    idle_instance_days: int = 14
    idle_instance_max_cpu_percent: float = 10
    idle_instance_max_network_bytes: float = 5 * 1024 * 1024
    # ebs_snapshot/old_snapshot: older than this (and not backing an AMI).
    old_snapshot_days: float = 90
    old_snapshot_critical_days: float = 365
    old_snapshot_high_days: float = 180
    # rds_instance/idle_database: no connection on each of the last N days.
    idle_database_days: int = 7
    # nat_gateway/no_traffic: zero bytes out to destinations on each of the last N days.
    nat_no_traffic_days: int = 7
    # load_balancer/no_requests: fewer than this many requests (ALB/CLB) or new flows (NLB) over
    # the last N days, with a data point on each of them.
    lb_no_requests_days: int = 7
    lb_max_requests: float = 100
    # Confidence of metric rules, by quiet streak in days (see the module docstring).
    quiet_critical_days: float = 30
    quiet_high_days: float = 21
    quiet_medium_days: float = 14
    # Confidence by age for findings AWS gives no start time for (orphaned snapshots, load
    # balancers without targets): days since creation.
    age_critical_days: float = 90
    age_high_days: float = 30
    age_medium_days: float = 7


DEFAULT_THRESHOLDS = Thresholds()


def _stopped_longer_than_min(since: datetime | None, now: datetime, t: Thresholds) -> bool:
    return since is not None and now - since > timedelta(days=t.stopped_instance_min_days)


def _stopped_grade(since: datetime | None, now: datetime, t: Thresholds) -> str:
    return graded(
        days_since(since, now), t.stopped_critical_days, t.stopped_high_days, t.stopped_medium_days
    )


# ebs_volume/unattached_volume


def _unattached_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    return r.state == "available" and not r.attrs.get("attachments")


def _unattached_confidence(r: Resource, now: datetime, t: Thresholds) -> str:
    return graded(
        days_since(r.created_at, now),
        t.unattached_critical_days,
        t.unattached_high_days,
        t.unattached_medium_days,
    )


def _volume_phrase(r: Resource) -> str:
    size, volume_type = r.config.get("size_gb"), r.config.get("volume_type")
    return f"{size} GiB {volume_type} volume" if size and volume_type else "Volume"


def _unattached_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    days = days_since(r.created_at, now)
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
    days = int(days_since(_parents_stopped_since(r), now) or 0)
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
    days = int(days_since(r.state_since, now) or 0)
    instance_type = r.config.get("instance_type") or "Instance"
    return f"{instance_type} instance has been stopped for {days} days; its volumes still bill."


# ebs_volume/idle_volume


def _volume_daily_ops(r: Resource) -> dict[str, float]:
    """Read plus write ops per day; a day with only one of the two counts the other as 0."""
    reads, writes = series(r, "VolumeReadOps"), series(r, "VolumeWriteOps")
    return {day: reads.get(day, 0.0) + writes.get(day, 0.0) for day in reads.keys() | writes}


def _window_ops(r: Resource, now: datetime) -> dict[str, float]:
    window = set(last_days(now, METRIC_WINDOW_DAYS))
    return {d: v for d, v in _volume_daily_ops(r).items() if d in window}


def _idle_volume_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    states = r.attrs.get("attached_instance_states") or []
    if not r.attrs.get("attachments") or "running" not in states:
        return False
    ops = _window_ops(r, now)
    return (
        len(ops) >= t.idle_volume_min_days
        and sum(ops.values()) / len(ops) <= t.idle_volume_max_daily_ops
    )


def _idle_volume_confidence(r: Resource, now: datetime, t: Thresholds) -> str:
    ops = _volume_daily_ops(r)
    streak = quiet_streak(now, lambda day: day in ops and ops[day] <= t.idle_volume_max_daily_ops)
    return quiet_grade(streak, t)


def _idle_volume_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    ops = _window_ops(r, now)
    average = sum(ops.values()) / max(len(ops), 1)
    return (
        f"{_volume_phrase(r)} is attached to a running instance but averaged {average:.0f} "
        f"read+write operations a day over {len(ops)} days."
    )


# ec2_instance/idle_instance


def _instance_idle_day(r: Resource, day: str, t: Thresholds) -> bool:
    """CPU below the limit and network below the limit that day; both need a data point."""
    cpu = series(r, "CPUUtilization").get(day)
    net_in = series(r, "NetworkIn").get(day)
    net_out = series(r, "NetworkOut").get(day)
    if cpu is None or (net_in is None and net_out is None):
        return False
    network = (net_in or 0.0) + (net_out or 0.0)
    return cpu < t.idle_instance_max_cpu_percent and network < t.idle_instance_max_network_bytes


def _idle_instance_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    return r.state == "running" and all(
        _instance_idle_day(r, day, t) for day in last_days(now, t.idle_instance_days)
    )


def _idle_instance_confidence(r: Resource, now: datetime, t: Thresholds) -> str:
    return quiet_grade(quiet_streak(now, lambda day: _instance_idle_day(r, day, t)), t)


def _idle_instance_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    days = last_days(now, t.idle_instance_days)
    cpu = series(r, "CPUUtilization")
    peak = max((cpu[d] for d in days if d in cpu), default=0.0)
    instance_type = r.config.get("instance_type") or "Instance"
    return (
        f"{instance_type} instance has been running idle for {len(days)} days: daily average "
        f"CPU at most {peak:.1f}% and under "
        f"{t.idle_instance_max_network_bytes / 1024 / 1024:g} MB of network a day."
    )


# ebs_snapshot/orphaned_snapshot and ebs_snapshot/old_snapshot


def _snapshot_phrase(r: Resource) -> str:
    size = r.config.get("size_gb")
    return f"{size} GiB snapshot" if size else "Snapshot"


def _orphaned_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    # Both facts must be known: a failed DescribeVolumes/DescribeImages leaves them None.
    return r.attrs.get("source_volume_exists") is False and r.attrs.get("backs_ami") is False


def _orphaned_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    days = days_since(r.created_at, now)
    age = f", taken {int(days)} days ago" if days is not None else ""
    return f"{_snapshot_phrase(r)} of a volume that no longer exists backs no AMI{age}."


def _old_snapshot_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    days = days_since(r.created_at, now)
    return r.attrs.get("backs_ami") is False and days is not None and days > t.old_snapshot_days


def _old_snapshot_confidence(r: Resource, now: datetime, t: Thresholds) -> str:
    days = days_since(r.created_at, now) or 0
    if days >= t.old_snapshot_critical_days:
        return CRITICAL
    return HIGH if days >= t.old_snapshot_high_days else MEDIUM


def _old_snapshot_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    days = int(days_since(r.created_at, now) or 0)
    return f"{_snapshot_phrase(r)} is {days} days old and backs no AMI."


# rds_instance/idle_database


def _no_connection_day(r: Resource, day: str) -> bool:
    value = series(r, "DatabaseConnections").get(day)
    return value is not None and value == 0


def _idle_database_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    return r.state == "available" and all(
        _no_connection_day(r, day) for day in last_days(now, t.idle_database_days)
    )


def _idle_database_confidence(r: Resource, now: datetime, t: Thresholds) -> str:
    return quiet_grade(quiet_streak(now, lambda day: _no_connection_day(r, day)), t)


def _idle_database_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    streak = quiet_streak(now, lambda day: _no_connection_day(r, day))
    db_class = r.config.get("db_instance_class") or "DB"
    return f"{db_class} database has had no connection for {streak} days."


# nat_gateway/no_traffic


def _no_traffic_day(r: Resource, day: str) -> bool:
    value = series(r, "BytesOutToDestination").get(day)
    return value is not None and value == 0


def _no_traffic_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    return r.state == "available" and all(
        _no_traffic_day(r, day) for day in last_days(now, t.nat_no_traffic_days)
    )


def _no_traffic_confidence(r: Resource, now: datetime, t: Thresholds) -> str:
    return quiet_grade(quiet_streak(now, lambda day: _no_traffic_day(r, day)), t)


def _no_traffic_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    streak = quiet_streak(now, lambda day: _no_traffic_day(r, day))
    return f"NAT gateway has sent no bytes to destinations for {streak} days."


# load_balancer/no_targets and load_balancer/no_requests

LB_REQUEST_METRICS = ("RequestCount", "NewFlowCount")  # ALB and CLB, NLB


def _lb_requests(r: Resource) -> dict[str, float]:
    for metric in LB_REQUEST_METRICS:
        if metric in r.metrics:
            return series(r, metric)
    return {}


def _lb_phrase(r: Resource) -> str:
    lb_type = r.config.get("lb_type")
    return {"application": "ALB", "network": "NLB", "classic": "CLB"}.get(lb_type, "Load balancer")


def _no_targets_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    return r.attrs.get("healthy_targets") == 0  # None: the targets could not be read


def _no_targets_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    registered = r.attrs.get("registered_targets") or 0
    which = "no registered target" if not registered else f"none of {registered} targets healthy"
    return f"{_lb_phrase(r)} has {which}."


def _requests_over(r: Resource, now: datetime, days: int) -> tuple[int, float]:
    requests = _lb_requests(r)
    window = [d for d in last_days(now, days) if d in requests]
    return len(window), sum(requests[d] for d in window)


def _no_requests_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    points, total = _requests_over(r, now, t.lb_no_requests_days)
    return points >= t.lb_no_requests_days and total < t.lb_max_requests


def _no_requests_confidence(r: Resource, now: datetime, t: Thresholds) -> str:
    requests = _lb_requests(r)
    running_total = [0.0]

    def quiet(day: str) -> bool:
        if day not in requests:
            return False
        running_total[0] += requests[day]
        return running_total[0] < t.lb_max_requests

    return quiet_grade(quiet_streak(now, quiet), t)


def _no_requests_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    points, total = _requests_over(r, now, t.lb_no_requests_days)
    unit = "new flows" if "NewFlowCount" in r.metrics else "requests"
    return f"{_lb_phrase(r)} served {total:.0f} {unit} over the last {points} days."


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
    Rule(
        resource_type="ebs_volume",
        scenario="idle_volume",
        description=(
            "Attached to a running instance; daily VolumeReadOps+VolumeWriteOps averages at most "
            "{t.idle_volume_max_daily_ops:g} over the 30-day window, with at least "
            "{t.idle_volume_min_days} days of data (no data: not flagged)."
        ),
        confidence_rule=(
            "Quiet streak (days with at most {t.idle_volume_max_daily_ops:g} ops): "
            + QUIET_SCALE
            + "."
        ),
        matches=_idle_volume_matches,
        confidence=_idle_volume_confidence,
        reason=_idle_volume_reason,
    ),
    Rule(
        resource_type="ec2_instance",
        scenario="idle_instance",
        description=(
            "Running, and on each of the last {t.idle_instance_days} complete UTC days a daily "
            "average CPUUtilization below {t.idle_instance_max_cpu_percent:g}% and a daily "
            "NetworkIn+NetworkOut below {t.idle_instance_max_network_bytes:,.0f} bytes (one of the "
            "two missing counts as 0; a day without CPU or without any network point: not "
            "flagged)."
        ),
        confidence_rule="Quiet streak (idle days): " + QUIET_SCALE + ".",
        matches=_idle_instance_matches,
        confidence=_idle_instance_confidence,
        reason=_idle_instance_reason,
    ),
    Rule(
        resource_type="ebs_snapshot",
        scenario="orphaned_snapshot",
        description=(
            "Own snapshot whose source volume no longer exists, backing no own AMI (checked "
            "before old_snapshot)."
        ),
        confidence_rule=AGE_SCALE + ".",
        matches=_orphaned_matches,
        confidence=age_grade,
        reason=_orphaned_reason,
    ),
    Rule(
        resource_type="ebs_snapshot",
        scenario="old_snapshot",
        description="Own snapshot older than {t.old_snapshot_days:g} days, backing no own AMI.",
        confidence_rule=(
            "Days since the snapshot: critical ≥ {t.old_snapshot_critical_days:g}, "
            "high ≥ {t.old_snapshot_high_days:g}, else medium."
        ),
        matches=_old_snapshot_matches,
        confidence=_old_snapshot_confidence,
        reason=_old_snapshot_reason,
    ),
    Rule(
        resource_type="rds_instance",
        scenario="idle_database",
        description=(
            "Status `available` and a daily maximum DatabaseConnections of 0 on each of the last "
            "{t.idle_database_days} days (a day without data: not flagged)."
        ),
        confidence_rule="Quiet streak (days without connections): " + QUIET_SCALE + ".",
        matches=_idle_database_matches,
        confidence=_idle_database_confidence,
        reason=_idle_database_reason,
    ),
    Rule(
        resource_type="nat_gateway",
        scenario="no_traffic",
        description=(
            "State `available` and a daily BytesOutToDestination sum of 0 on each of the last "
            "{t.nat_no_traffic_days} days (a day without data: not flagged)."
        ),
        confidence_rule="Quiet streak (days without traffic): " + QUIET_SCALE + ".",
        matches=_no_traffic_matches,
        confidence=_no_traffic_confidence,
        reason=_no_traffic_reason,
    ),
    Rule(
        resource_type="load_balancer",
        scenario="no_targets",
        description=(
            "ALB/NLB: no healthy target in any of its target groups; CLB: no `InService` "
            "instance (checked before no_requests)."
        ),
        confidence_rule=AGE_SCALE + " (AWS records no time the targets went away).",
        matches=_no_targets_matches,
        confidence=age_grade,
        reason=_no_targets_reason,
    ),
    Rule(
        resource_type="load_balancer",
        scenario="no_requests",
        description=(
            "RequestCount (ALB, CLB) or NewFlowCount (NLB) summed over the last "
            "{t.lb_no_requests_days} days below {t.lb_max_requests:g}, with a data point on each "
            "of those days."
        ),
        confidence_rule=(
            "Days back from yesterday, each with data, before the running total reaches "
            "{t.lb_max_requests:g}: " + QUIET_SCALE + "."
        ),
        matches=_no_requests_matches,
        confidence=_no_requests_confidence,
        reason=_no_requests_reason,
    ),
)


def detect(
    resources: Sequence[Resource],
    now: datetime,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    rules: Sequence[Rule] = RULES,
) -> list[Detection]:
    """Flag each resource with the first AWS rule of its type that matches, if any."""
    return engine.detect(resources, now, thresholds, rules)


def rules_markdown(
    thresholds: Thresholds = DEFAULT_THRESHOLDS, rules: Sequence[Rule] = RULES
) -> str:
    """The AWS rule table as markdown, thresholds filled in, for the docs and the Dagster UI."""
    return engine.rules_markdown(thresholds, rules)
