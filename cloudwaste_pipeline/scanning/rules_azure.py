"""The Azure waste rules, as one table a FinOps engineer can review without reading the scanner.

Same shape as ``rules_aws``: one ``Rule`` per (resource type, scenario), every number a named field
of ``Thresholds`` with a default, first match within a type wins. The scanner fills what the rules
read (``scanning.azure``):

- ``Resource.state``: a VM's power state without the ``PowerState/`` prefix (``running``,
  ``stopped``, ``deallocated``...); a disk's ``diskState``; ``associated`` / ``unassociated`` for a
  public IP; ``active`` for the rest.
- ``Resource.state_since``: when a VM stopped or was deallocated (Activity Log, else the instance
  view's last operation time; ``None`` when neither says, and then the VM is not flagged); when
  a disk last changed owner (``LastOwnershipUpdateTime``: the detach time of an unattached disk).
- ``attrs["cpu_p95_percent"]``: the 95th percentile of the VM's hourly average CPU over the last
  ``idle_vm_days`` complete UTC days, with ``attrs["cpu_hours"]`` the hours it is computed from.
- Daily metric series: ``Percentage CPU P95`` (per day, of hourly averages) and ``Network In
  Total`` / ``Network Out Total`` (bytes per day).

Azure reports no creation time for public IPs, load balancers, NAT gateways and plans; the rules
for those grade by age when a time is known and are otherwise ``high``: each condition is
unambiguous (nothing can use the resource as it stands).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cloudwaste_pipeline.scanning import rules as engine
from cloudwaste_pipeline.scanning.model import Detection, Resource
from cloudwaste_pipeline.scanning.pricing_azure import FREE_APP_SERVICE_TIERS
from cloudwaste_pipeline.scanning.rules import (
    AGE_SCALE,
    CRITICAL,
    HIGH,
    MEDIUM,
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

CPU_P95 = "Percentage CPU P95"
NETWORK_IN = "Network In Total"
NETWORK_OUT = "Network Out Total"


@dataclass(frozen=True)
class Thresholds:
    """Every number the Azure rules use, with its default; days are exact durations."""

    # virtual_machine/deallocated_vm (and disks of such VMs): deallocated for more than this.
    deallocated_vm_min_days: float = 7
    # virtual_machine/stopped_vm: stopped but still allocated (compute keeps billing) for more
    # than this; short because every hour of it is paid for nothing.
    stopped_vm_min_days: float = 1
    # Confidence by days stopped or deallocated (VMs and their disks).
    stopped_critical_days: float = 90
    stopped_high_days: float = 30
    stopped_medium_days: float = 14
    # managed_disk/unattached_disk: confidence by days since the detach (or creation).
    unattached_critical_days: float = 90
    unattached_high_days: float = 30
    unattached_medium_days: float = 7
    # disk_snapshot/old_snapshot: older than this.
    old_snapshot_days: float = 90
    old_snapshot_critical_days: float = 365
    old_snapshot_high_days: float = 180
    # virtual_machine/idle_vm: running; P95 of hourly CPU over the last N days below the limit,
    # and Network In+Out below the byte limit on each of those days.
    idle_vm_days: int = 14
    idle_vm_max_cpu_p95_percent: float = 5
    idle_vm_max_network_bytes: float = 5 * 1024 * 1024
    # idle_vm: the share of the window's hours that must have a CPU data point.
    idle_vm_min_coverage: float = 0.9
    # Confidence of metric rules, by quiet streak in days.
    quiet_critical_days: float = 30
    quiet_high_days: float = 21
    quiet_medium_days: float = 14
    # Confidence by age, where Azure reports a creation time.
    age_critical_days: float = 90
    age_high_days: float = 30
    age_medium_days: float = 7


DEFAULT_THRESHOLDS = Thresholds()

_STOPPED_SCALE = (
    "critical ≥ {t.stopped_critical_days:g} d, high ≥ {t.stopped_high_days:g} d, "
    "medium ≥ {t.stopped_medium_days:g} d, else low"
)
_AGE_OR_HIGH = AGE_SCALE + "; high when Azure reports no creation time."


def _stopped_grade(since: datetime | None, now: datetime, t: Thresholds) -> str:
    return graded(
        days_since(since, now), t.stopped_critical_days, t.stopped_high_days, t.stopped_medium_days
    )


def _longer_than(since: datetime | None, now: datetime, days: float) -> bool:
    return since is not None and now - since > timedelta(days=days)


def _age_or_high(r: Resource, now: datetime, t: Thresholds) -> str:
    return HIGH if r.created_at is None else age_grade(r, now, t)


def _disk_phrase(r: Resource) -> str:
    size, sku = r.config.get("size_gb"), r.config.get("sku")
    return f"{size} GiB {sku} disk" if size and sku else "Managed disk"


def _vm_phrase(r: Resource) -> str:
    return f"{r.config.get('vm_size') or 'Virtual machine'} VM"


# managed_disk/unattached_disk


def _unattached_since(r: Resource) -> datetime | None:
    return r.state_since or r.created_at


def _unattached_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    return r.state == "Unattached" and not r.parent_id


def _unattached_confidence(r: Resource, now: datetime, t: Thresholds) -> str:
    return graded(
        days_since(_unattached_since(r), now),
        t.unattached_critical_days,
        t.unattached_high_days,
        t.unattached_medium_days,
    )


def _unattached_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    days = days_since(_unattached_since(r), now)
    since = f" for {int(days)} days" if days is not None else ""
    return f"{_disk_phrase(r)} has been attached to no VM{since}."


# managed_disk/attached_to_stopped_vm


def _owner_stopped_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    return r.parent_state in ("stopped", "deallocated") and _longer_than(
        r.attrs.get("parent_stopped_since"), now, t.deallocated_vm_min_days
    )


def _owner_stopped_confidence(r: Resource, now: datetime, t: Thresholds) -> str:
    return _stopped_grade(r.attrs.get("parent_stopped_since"), now, t)


def _owner_stopped_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    days = int(days_since(r.attrs.get("parent_stopped_since"), now) or 0)
    return f"{_disk_phrase(r)} belongs to a VM {r.parent_state} for {days} days; it still bills."


# disk_snapshot/old_snapshot


def _old_snapshot_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    return _longer_than(r.created_at, now, t.old_snapshot_days)


def _old_snapshot_confidence(r: Resource, now: datetime, t: Thresholds) -> str:
    days = days_since(r.created_at, now) or 0
    if days >= t.old_snapshot_critical_days:
        return CRITICAL
    return HIGH if days >= t.old_snapshot_high_days else MEDIUM


def _old_snapshot_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    size = r.config.get("size_gb")
    phrase = f"{size} GiB snapshot" if size else "Snapshot"
    return f"{phrase} was taken {int(days_since(r.created_at, now) or 0)} days ago."


# public_ip/unassociated_ip


def _unassociated_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    return r.state == "unassociated"


def _unassociated_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    sku = r.config.get("sku") or "Public"
    return f"{sku} public IP is associated with no network interface, load balancer or NAT gateway."


# virtual_machine/deallocated_vm and stopped_vm


def _deallocated_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    return r.state == "deallocated" and _longer_than(r.state_since, now, t.deallocated_vm_min_days)


def _stopped_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    return r.state == "stopped" and _longer_than(r.state_since, now, t.stopped_vm_min_days)


def _state_confidence(r: Resource, now: datetime, t: Thresholds) -> str:
    return _stopped_grade(r.state_since, now, t)


def _deallocated_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    days = int(days_since(r.state_since, now) or 0)
    return f"{_vm_phrase(r)} has been deallocated for {days} days; its disks still bill."


def _stopped_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    days = int(days_since(r.state_since, now) or 0)
    return (
        f"{_vm_phrase(r)} has been stopped for {days} days without being deallocated: "
        "its compute still bills in full."
    )


# virtual_machine/idle_vm


def _quiet_day(r: Resource, day: str, t: Thresholds) -> bool:
    """That day's CPU P95 and network under the limits; both need a data point."""
    cpu = series(r, CPU_P95).get(day)
    net_in, net_out = series(r, NETWORK_IN).get(day), series(r, NETWORK_OUT).get(day)
    if cpu is None or (net_in is None and net_out is None):
        return False
    network = (net_in or 0.0) + (net_out or 0.0)
    return cpu < t.idle_vm_max_cpu_p95_percent and network < t.idle_vm_max_network_bytes


def _low_network_day(r: Resource, day: str, t: Thresholds) -> bool:
    net_in, net_out = series(r, NETWORK_IN).get(day), series(r, NETWORK_OUT).get(day)
    if net_in is None and net_out is None:
        return False
    return (net_in or 0.0) + (net_out or 0.0) < t.idle_vm_max_network_bytes


def _idle_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    p95 = r.attrs.get("cpu_p95_percent")
    hours = r.attrs.get("cpu_hours") or 0
    return (
        r.state == "running"
        and p95 is not None
        and hours >= t.idle_vm_min_coverage * 24 * t.idle_vm_days
        and p95 < t.idle_vm_max_cpu_p95_percent
        and all(_low_network_day(r, day, t) for day in last_days(now, t.idle_vm_days))
    )


def _idle_confidence(r: Resource, now: datetime, t: Thresholds) -> str:
    return quiet_grade(quiet_streak(now, lambda day: _quiet_day(r, day, t)), t)


def _idle_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    return (
        f"{_vm_phrase(r)} has been running idle for {t.idle_vm_days} days: P95 CPU "
        f"{r.attrs.get('cpu_p95_percent', 0):.1f}% and under "
        f"{t.idle_vm_max_network_bytes / 1024 / 1024:g} MB of network a day."
    )


# load_balancer/no_backends, nat_gateway/no_subnets, app_service_plan/empty_plan


def _no_backends_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    return r.attrs.get("backend_members") == 0


def _no_backends_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    sku = r.config.get("lb_type") or "Load"
    return f"{sku} load balancer has no member in any backend pool."


def _no_subnets_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    return r.attrs.get("subnets") == 0


def _no_subnets_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    return "NAT gateway is attached to no subnet: it bills by the hour and carries no traffic."


def _empty_plan_matches(r: Resource, now: datetime, t: Thresholds) -> bool:
    tier = str(r.config.get("tier") or "").lower()
    return r.attrs.get("sites") == 0 and tier not in FREE_APP_SERVICE_TIERS


def _empty_plan_reason(r: Resource, now: datetime, t: Thresholds) -> str:
    sku = r.config.get("sku") or "App Service"
    return f"{sku} App Service plan hosts no app but bills for its instances."


# First match in table order wins: a resource gets at most one scenario.
RULES: tuple[Rule, ...] = (
    Rule(
        resource_type="managed_disk",
        scenario="unattached_disk",
        description="`diskState` is `Unattached` and no `managedBy`.",
        confidence_rule=(
            "Days since the detach (`LastOwnershipUpdateTime`, else creation): critical ≥ "
            "{t.unattached_critical_days:g}, high ≥ {t.unattached_high_days:g}, medium ≥ "
            "{t.unattached_medium_days:g}, else low."
        ),
        matches=_unattached_matches,
        confidence=_unattached_confidence,
        reason=_unattached_reason,
    ),
    Rule(
        resource_type="managed_disk",
        scenario="attached_to_stopped_vm",
        description=(
            "Its VM (`managedBy`) is stopped or deallocated, for more than "
            "{t.deallocated_vm_min_days:g} days (not flagged when the stop time is unknown)."
        ),
        confidence_rule="Days since the VM stopped: " + _STOPPED_SCALE + ".",
        matches=_owner_stopped_matches,
        confidence=_owner_stopped_confidence,
        reason=_owner_stopped_reason,
    ),
    Rule(
        resource_type="disk_snapshot",
        scenario="old_snapshot",
        description="Taken more than {t.old_snapshot_days:g} days ago (`timeCreated`).",
        confidence_rule=(
            "Days since the snapshot: critical ≥ {t.old_snapshot_critical_days:g}, "
            "high ≥ {t.old_snapshot_high_days:g}, else medium."
        ),
        matches=_old_snapshot_matches,
        confidence=_old_snapshot_confidence,
        reason=_old_snapshot_reason,
    ),
    Rule(
        resource_type="public_ip",
        scenario="unassociated_ip",
        description="No `ipConfiguration` and no `natGateway`.",
        confidence_rule=_AGE_OR_HIGH,
        matches=_unassociated_matches,
        confidence=_age_or_high,
        reason=_unassociated_reason,
    ),
    Rule(
        resource_type="virtual_machine",
        scenario="deallocated_vm",
        description=(
            "Power state `deallocated` for more than {t.deallocated_vm_min_days:g} days (stop "
            "time from the Activity Log, else the instance view; not flagged when unknown)."
        ),
        confidence_rule="Days deallocated: " + _STOPPED_SCALE + ".",
        matches=_deallocated_matches,
        confidence=_state_confidence,
        reason=_deallocated_reason,
    ),
    Rule(
        resource_type="virtual_machine",
        scenario="stopped_vm",
        description=(
            "Power state `stopped` (not deallocated: compute still bills) for more than "
            "{t.stopped_vm_min_days:g} day(s)."
        ),
        confidence_rule="Days stopped: " + _STOPPED_SCALE + ".",
        matches=_stopped_matches,
        confidence=_state_confidence,
        reason=_stopped_reason,
    ),
    Rule(
        resource_type="virtual_machine",
        scenario="idle_vm",
        description=(
            "Running; the P95 of hourly average `Percentage CPU` over the last "
            "{t.idle_vm_days} complete UTC days below {t.idle_vm_max_cpu_p95_percent:g}% (with "
            "data for at least {t.idle_vm_min_coverage:.0%} of the hours), and `Network In "
            "Total`+`Network Out Total` below {t.idle_vm_max_network_bytes:,.0f} bytes on each "
            "of those days."
        ),
        confidence_rule=(
            "Quiet streak (days whose CPU P95 and network are under the limits): "
            + QUIET_SCALE
            + "."
        ),
        matches=_idle_matches,
        confidence=_idle_confidence,
        reason=_idle_reason,
    ),
    Rule(
        resource_type="load_balancer",
        scenario="no_backends",
        description="No member (IP configuration or address) in any backend pool.",
        confidence_rule=_AGE_OR_HIGH,
        matches=_no_backends_matches,
        confidence=_age_or_high,
        reason=_no_backends_reason,
    ),
    Rule(
        resource_type="nat_gateway",
        scenario="no_subnets",
        description="Attached to no subnet.",
        confidence_rule=_AGE_OR_HIGH,
        matches=_no_subnets_matches,
        confidence=_age_or_high,
        reason=_no_subnets_reason,
    ),
    Rule(
        resource_type="app_service_plan",
        scenario="empty_plan",
        description="No app (`numberOfSites` 0) on a billed tier (not Free, Shared, consumption).",
        confidence_rule=_AGE_OR_HIGH,
        matches=_empty_plan_matches,
        confidence=_age_or_high,
        reason=_empty_plan_reason,
    ),
)


def detect(
    resources: Sequence[Resource],
    now: datetime,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    rules: Sequence[Rule] = RULES,
) -> list[Detection]:
    """Flag each resource with the first Azure rule of its type that matches, if any."""
    return engine.detect(resources, now, thresholds, rules)


def rules_markdown(
    thresholds: Thresholds = DEFAULT_THRESHOLDS, rules: Sequence[Rule] = RULES
) -> str:
    """The Azure rule table as markdown, thresholds filled in, for the docs and the Dagster UI."""
    return engine.rules_markdown(thresholds, rules)
