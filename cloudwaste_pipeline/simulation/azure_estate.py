"""The simulated Azure tenant: a seeded plan of subscriptions, resources and their metrics.

Pure data, no HTTP: each planned resource carries the row Resource Graph would return for it,
the scenario it was planted as (``None`` for the healthy twins beside every kind of waste, some
of them just on the safe side of a threshold), and for VMs the stop time and the usage profile
its hourly metrics are drawn from. ``simulation.azure_fake`` serves the plan to the real SDK
clients. PII is planted in names and tags so tests can prove it never reaches an ML table.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np

from cloudwaste_pipeline.simulation.fleet import _tags, stable_rng

NAMESPACE = uuid.UUID("3f0c9a51-7d2e-4b8a-9c61-5e4f3a2b1c0d")
VM_SIZES = (
    "Standard_B2s",
    "Standard_D2s_v5",
    "Standard_D4s_v5",
    "Standard_E4s_v5",
    "Standard_F4s_v2",
)
DISK_SKUS = ("Premium_LRS", "StandardSSD_LRS", "Standard_LRS", "Premium_LRS")
DISK_SIZES = (32, 64, 128, 256, 512, 1024)
PLAN_SKUS = (("B1", "Basic"), ("S1", "Standard"), ("P1v3", "PremiumV3"))


@dataclass(frozen=True)
class AzureSubscription:
    alias: str
    subscription_id: str
    tenant_id: str
    owner_user_id: str
    regions: tuple[str, ...]
    workspace_id: str | None = None  # a Log Analytics workspace collecting its Activity Log

    def accounts_entry(self) -> dict[str, str]:
        """Its entry in the accounts file."""
        entry = {
            "name": self.alias,
            "provider": "azure",
            "owner_user_id": self.owner_user_id,
            "tenant_id": self.tenant_id,
            "subscription_id": self.subscription_id,
        }
        if self.workspace_id:
            entry["workspace_id"] = self.workspace_id
        return entry


DEMO_TENANT_ID = "5d3c2b1a-0f9e-4d8c-b7a6-112233445566"
DEMO_SUBSCRIPTIONS = (
    AzureSubscription(
        "contoso-prod",
        "6a1f4c2e-8b3d-4e5f-9a0b-1c2d3e4f5a6b",
        DEMO_TENANT_ID,
        "user-2001",
        ("westeurope", "eastus"),
        workspace_id="0e9d8c7b-6a5f-4e3d-8c2b-1a0f9e8d7c6b",
    ),
    AzureSubscription(
        "contoso-dev",
        "7b2e5d3f-9c4e-4f60-8b1c-2d3e4f5a6b7c",
        DEMO_TENANT_ID,
        "user-2002",
        ("northeurope",),
    ),
)


@dataclass
class AzureResource:
    """One planned resource: its Resource Graph row and what the scanner should make of it."""

    key: str
    subscription: AzureSubscription
    resource_type: str
    row: dict[str, Any]
    expected: str | None = None  # the planted scenario; None: healthy
    stopped_at: datetime | None = None  # VMs: when they stopped / were deallocated
    usage: str | None = None  # VMs: busy | idle | light (metrics profile)
    idle_since: datetime | None = None
    appears_at: datetime | None = None  # before this, the resource does not exist yet
    owner: AzureResource | None = None  # disks: the VM that manages them
    deleted_at: datetime | None = None  # set by the simulation when a user deletes it
    pii: list[str] = field(default_factory=list)

    def exists_at(self, now: datetime) -> bool:
        return (self.appears_at is None or self.appears_at <= now) and (
            self.deleted_at is None or self.deleted_at > now
        )

    def row_at(self, now: datetime) -> dict[str, Any]:
        """The Resource Graph row as of ``now``: a VM that stops later still runs (and its
        disks are still attached to a running VM)."""
        vm = self.owner if self.owner is not None else self
        if vm.stopped_at is None or vm.stopped_at <= now:
            return self.row
        if self is vm:
            extended = {"instanceView": {"powerState": {"code": "PowerState/running"}}}
            return {**self.row, "properties": {**self.row["properties"], "extended": extended}}
        return {**self.row, "properties": {**self.row["properties"], "diskState": "Attached"}}

    def stopped_by(self, now: datetime) -> bool:
        return self.stopped_at is not None and self.stopped_at <= now

    @property
    def resource_id(self) -> str:
        return self.row["id"]


@dataclass(frozen=True)
class TenantSpec:
    seed: int = 11
    now: datetime = datetime(2026, 11, 16, 1, tzinfo=UTC)
    units_per_region: int = 2  # one unit is every template once (~40 resources)
    subscriptions: tuple[AzureSubscription, ...] = DEMO_SUBSCRIPTIONS


def plan_tenant(spec: TenantSpec) -> list[AzureResource]:
    """Every subscription's resources as of ``spec.now``: waste and healthy twins, mixed."""
    planned: list[AzureResource] = []
    for subscription in spec.subscriptions:
        for region in subscription.regions:
            builder = _Builder(spec, subscription, region)
            for unit in range(spec.units_per_region):
                for template in TEMPLATES:
                    template(builder, unit)
            planned.extend(builder.out)
    return planned


def expected_detections(
    planned: list[AzureResource], now: datetime | None = None
) -> dict[str, str]:
    """Lower-case resource id -> planted scenario, for every planted waste (existing at ``now``,
    when given: the plan's waste is as of ``TenantSpec.now``, so only that day's scan finds all)."""
    return {
        r.resource_id.lower(): r.expected
        for r in planned
        if r.expected and (now is None or r.exists_at(now))
    }


# --------------------------------------------------------------------------------------------
# Metrics: hourly values per VM, the same whoever asks and whenever
# --------------------------------------------------------------------------------------------


def hourly_metric(
    seed: int, resource: AzureResource, metric: str, start: datetime, hours: int
) -> list[tuple[datetime, float]]:
    """``hours`` hourly points from ``start`` of one VM metric (CPU average %, network bytes)."""
    points: list[tuple[datetime, float]] = []
    first_day = start.date()
    days = (hours + start.hour + 23) // 24
    for d in range(days):
        day = first_day + timedelta(days=d)
        values = _day_values(seed, resource, metric, day)
        for h in range(24):
            moment = datetime.combine(day, time(h), tzinfo=UTC)
            if start <= moment < start + timedelta(hours=hours):
                points.append((moment, values[h]))
    return points


def _day_values(seed: int, resource: AzureResource, metric: str, day: date) -> tuple[float, ...]:
    return _usage_day(seed, resource.key, resource.usage, resource.idle_since, metric, day)


@functools.lru_cache(maxsize=200_000)
def _usage_day(
    seed: int, key: str, usage: str | None, idle_since: datetime | None, metric: str, day: date
) -> tuple[float, ...]:
    """24 hourly values of one day; cached, since every scan of the window asks again."""
    rng = stable_rng(seed, key, metric, day.isoformat())
    idle = usage == "idle" and (idle_since is None or day >= idle_since.date())
    cpu = metric == "Percentage CPU"
    if idle:
        values = rng.uniform(0.2, 3.5, 24) if cpu else rng.uniform(2_000, 120_000, 24)
    elif usage == "light":
        # Mostly quiet, but a few busy hours a day: P95 well above 5%, not idle.
        values = rng.uniform(0.5, 3.0, 24) if cpu else rng.uniform(50_000, 900_000, 24)
        busy = rng.choice(24, size=3, replace=False)
        values[busy] = rng.uniform(15, 40, 3) if cpu else rng.uniform(5e6, 2e7, 3)
    else:
        daily = 0.5 + 0.5 * np.sin(np.linspace(0, 2 * np.pi, 24))
        values = (15 + 45 * daily + rng.normal(0, 3, 24)) if cpu else rng.uniform(1e7, 4e8, 24)
    return tuple(round(float(max(v, 0.0)), 3) for v in values)


# --------------------------------------------------------------------------------------------
# Templates: each adds one kind of waste or its healthy twin
# --------------------------------------------------------------------------------------------


class _Builder:
    def __init__(self, spec: TenantSpec, subscription: AzureSubscription, region: str) -> None:
        self.spec = spec
        self.subscription = subscription
        self.region = region
        self.rng = stable_rng(spec.seed, subscription.subscription_id, region)
        self.out: list[AzureResource] = []
        self.group = f"rg-{region}-apps"

    def ago(self, low_days: float, high_days: float) -> datetime:
        return self.spec.now - timedelta(hours=float(self.rng.uniform(low_days, high_days) * 24))

    def rid(self, provider: str, name: str) -> str:
        return (
            f"/subscriptions/{self.subscription.subscription_id}/resourceGroups/{self.group}"
            f"/providers/{provider}/{name}"
        )

    def add(
        self, kind: str, arm_type: str, name: str, purpose: str, expected: str | None, **row: Any
    ) -> AzureResource:
        tags, pii = _tags(self.rng, purpose)
        full_name = f"{tags['Name']}-{name}"
        resource = AzureResource(
            key=f"{self.subscription.alias}/{self.region}/{name}",
            subscription=self.subscription,
            resource_type=kind,
            row={
                "id": self.rid(arm_type, full_name),
                "name": full_name,
                "type": arm_type.lower(),
                "location": self.region,
                "subscriptionId": self.subscription.subscription_id,
                "tags": tags,
                "managedBy": "",
                **row,
            },
            expected=expected,
            pii=[*pii, full_name],
        )
        created = (row.get("properties") or {}).get("timeCreated")
        resource.appears_at = datetime.fromisoformat(created) if created else self.ago(20, 400)
        self.out.append(resource)
        return resource

    def disk(
        self, name: str, expected: str | None, owner: AzureResource | None, state: str,
        since: datetime | None = None,
    ) -> AzureResource:  # fmt: skip
        sku = str(self.rng.choice(DISK_SKUS))
        created = self.ago(100, 900) if owner is None else _created(owner)
        disk = self.add(
            "managed_disk",
            "Microsoft.Compute/disks",
            name,
            "data",
            expected,
            sku={"name": sku, "tier": sku.split("_")[0]},
            managedBy=owner.resource_id if owner else "",
            properties={
                "diskSizeGB": int(self.rng.choice(DISK_SIZES)),
                "diskState": state,
                "timeCreated": _iso(created),
                "LastOwnershipUpdateTime": _iso(since or created),
                "provisioningState": "Succeeded",
            },
        )
        disk.owner = owner
        if owner is None and since is not None:
            disk.appears_at = max(created, since)  # it shows up detached
        return disk

    def vm(
        self, name: str, expected: str | None, power: str, usage: str = "busy",
        stopped_at: datetime | None = None, idle_since: datetime | None = None,
    ) -> AzureResource:  # fmt: skip
        created = self.ago(60, 900)
        os_disk_id = self.rid("Microsoft.Compute/disks", f"{name}-osdisk")
        vm = self.add(
            "virtual_machine",
            "Microsoft.Compute/virtualMachines",
            name,
            "app",
            expected,
            properties={
                "vmId": str(uuid.uuid5(NAMESPACE, f"{self.subscription.alias}/{name}")),
                "hardwareProfile": {"vmSize": str(self.rng.choice(VM_SIZES))},
                "storageProfile": {
                    "osDisk": {"osType": "Linux", "managedDisk": {"id": os_disk_id}},
                    "dataDisks": [],
                },
                "timeCreated": _iso(created),
                "provisioningState": "Succeeded",
                "extended": {"instanceView": {"powerState": {"code": f"PowerState/{power}"}}},
            },
        )
        vm.stopped_at, vm.usage, vm.idle_since = stopped_at, usage, idle_since
        return vm

    def vm_with_disks(self, vm: AzureResource, disk_expected: str | None, data_disks: int) -> None:
        power = vm.row["properties"]["extended"]["instanceView"]["powerState"]["code"]
        state = "Attached" if power.endswith("running") or power.endswith("stopped") else "Reserved"
        disks = [self.disk(f"{vm.key.rsplit('/', 1)[1]}-osdisk", disk_expected, vm, state)]
        for i in range(data_disks):
            disks.append(self.disk(f"{vm.key.rsplit('/', 1)[1]}-data{i}", disk_expected, vm, state))
        profile = vm.row["properties"]["storageProfile"]
        # The OS disk's id is the one the VM row names (resource names carry a PII prefix).
        profile["osDisk"]["managedDisk"]["id"] = disks[0].resource_id
        profile["dataDisks"] = [
            {"lun": i, "managedDisk": {"id": d.resource_id}} for i, d in enumerate(disks[1:])
        ]


def _created(resource: AzureResource) -> datetime:
    return datetime.fromisoformat(resource.row["properties"]["timeCreated"])


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _busy_vm(b: _Builder, unit: int) -> None:
    b.vm_with_disks(b.vm(f"web-{unit}", None, "running"), None, 1)


def _idle_vm(b: _Builder, unit: int) -> None:
    vm = b.vm(f"idle-{unit}", "idle_vm", "running", "idle", idle_since=b.ago(17, 60))
    b.vm_with_disks(vm, None, 0)


def _recently_idle_vm(b: _Builder, unit: int) -> None:
    # Idle for 5-10 days only: not yet over the 14-day window.
    vm = b.vm(f"quiet-{unit}", None, "running", "idle", idle_since=b.ago(5, 10))
    b.vm_with_disks(vm, None, 0)


def _light_vm(b: _Builder, unit: int) -> None:
    b.vm_with_disks(b.vm(f"batch-{unit}", None, "running", "light"), None, 0)


def _deallocated_vm(b: _Builder, unit: int) -> None:
    # Unit 0 stopped beyond the Activity Log's 90 days: only the instance view knows when.
    low, high = (120, 400) if unit == 0 else (10, 80)
    vm = b.vm(f"old-{unit}", "deallocated_vm", "deallocated", stopped_at=b.ago(low, high))
    b.vm_with_disks(vm, "attached_to_stopped_vm", 1)


def _just_deallocated_vm(b: _Builder, unit: int) -> None:
    vm = b.vm(f"paused-{unit}", None, "deallocated", stopped_at=b.ago(1, 5))
    b.vm_with_disks(vm, None, 0)


def _stopped_vm(b: _Builder, unit: int) -> None:
    vm = b.vm(f"halted-{unit}", "stopped_vm", "stopped", stopped_at=b.ago(9, 60))
    b.vm_with_disks(vm, "attached_to_stopped_vm", 0)


def _unattached_disk(b: _Builder, unit: int) -> None:
    b.disk(f"orphan-{unit}", "unattached_disk", None, "Unattached", since=b.ago(1, 300))


def _snapshots(b: _Builder, unit: int) -> None:
    for name, expected, (low, high) in (
        (f"snap-old-{unit}", "old_snapshot", (100, 700)),
        (f"snap-new-{unit}", None, (2, 80)),
    ):
        b.add(
            "disk_snapshot",
            "Microsoft.Compute/snapshots",
            name,
            "backup",
            expected,
            sku={"name": str(b.rng.choice(["Standard_LRS", "Standard_ZRS", "Premium_LRS"]))},
            properties={
                "diskSizeGB": int(b.rng.choice(DISK_SIZES)),
                "timeCreated": _iso(b.ago(low, high)),
                "creationData": {
                    "createOption": "Copy",
                    "sourceResourceId": b.rid("Microsoft.Compute/disks", f"gone-{name}"),
                },
                "provisioningState": "Succeeded",
            },
        )


def _public_ips(b: _Builder, unit: int) -> None:
    nic = b.rid("Microsoft.Network/networkInterfaces", f"nic-{unit}")
    nat = b.rid("Microsoft.Network/natGateways", f"shared-nat-{unit}")
    for name, expected, extra in (
        (f"pip-free-{unit}", "unassociated_ip", {}),
        (f"pip-nic-{unit}", None, {"ipConfiguration": {"id": f"{nic}/ipConfigurations/ipconfig1"}}),
        (f"pip-nat-{unit}", None, {"natGateway": {"id": nat}}),
    ):
        b.add(
            "public_ip",
            "Microsoft.Network/publicIPAddresses",
            name,
            "edge",
            expected,
            sku={"name": str(b.rng.choice(["Standard", "Standard", "Basic"])), "tier": "Regional"},
            properties={"publicIPAllocationMethod": "Static", **extra},
        )


def _load_balancers(b: _Builder, unit: int) -> None:
    nic = b.rid("Microsoft.Network/networkInterfaces", f"backend-nic-{unit}")
    for name, expected, members in (
        (f"lb-empty-{unit}", "no_backends", 0),
        (f"lb-{unit}", None, 2),
    ):
        b.add(
            "load_balancer",
            "Microsoft.Network/loadBalancers",
            name,
            "lb",
            expected,
            sku={"name": "Standard", "tier": "Regional"},
            properties={
                "frontendIPConfigurations": [{"name": "fe", "properties": {"publicIPAddress": {}}}],
                "backendAddressPools": [
                    {
                        "name": "pool",
                        "properties": {
                            "backendIPConfigurations": [
                                {"id": f"{nic}/ipConfigurations/ip{i}"} for i in range(members)
                            ]
                        },
                    }
                ],
            },
        )


def _nat_gateways(b: _Builder, unit: int) -> None:
    subnet = b.rid("Microsoft.Network/virtualNetworks", f"vnet-{unit}/subnets/default")
    for name, expected, subnets in (
        (f"nat-idle-{unit}", "no_subnets", []),
        (f"nat-{unit}", None, [subnet]),
    ):
        b.add(
            "nat_gateway",
            "Microsoft.Network/natGateways",
            name,
            "egress",
            expected,
            sku={"name": "Standard"},
            properties={"subnets": [{"id": s} for s in subnets], "publicIpAddresses": []},
        )


def _plans(b: _Builder, unit: int) -> None:
    sku, tier = PLAN_SKUS[unit % len(PLAN_SKUS)]
    for name, expected, (plan_sku, plan_tier), sites in (
        (f"plan-empty-{unit}", "empty_plan", (sku, tier), 0),
        (f"plan-{unit}", None, (sku, tier), 3),
        (f"plan-free-{unit}", None, ("F1", "Free"), 0),
        (f"plan-func-{unit}", None, ("Y1", "Dynamic"), 0),
    ):
        b.add(
            "app_service_plan",
            "Microsoft.Web/serverfarms",
            name,
            "web",
            expected,
            sku={"name": plan_sku, "tier": plan_tier, "capacity": 1},
            properties={"numberOfSites": sites, "status": "Ready", "currentNumberOfWorkers": 1},
        )


TEMPLATES: tuple[Callable[[_Builder, int], None], ...] = (
    _busy_vm,
    _idle_vm,
    _recently_idle_vm,
    _light_vm,
    _deallocated_vm,
    _just_deallocated_vm,
    _stopped_vm,
    _unattached_disk,
    _snapshots,
    _public_ips,
    _load_balancers,
    _nat_gateways,
    _plans,
)
