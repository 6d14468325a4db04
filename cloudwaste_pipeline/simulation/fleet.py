"""The simulated fleet: a seeded plan of an AWS estate and of what happens to it day by day.

The plan is pure data (no cloud calls): which resources exist, when each was created, when
instances stop and volumes are detached, with healthy twins beside every kind of waste and PII
planted in tags so tests can prove it never reaches an ML table. ``replay`` plays the plan into
moto one day at a time, so the real scanner sees the estate as it was on each day.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cloudwaste_pipeline.simulation.azure_estate import AzureSubscription

FIRST_NAMES = ("jane", "omar", "li", "maria", "arjun", "chloe", "kwame", "sofia")
LAST_NAMES = ("doe", "haddad", "wei", "garcia", "patel", "martin", "mensah", "rossi")
ENVS = ("prod", "prod", "staging", "dev", "test")
INSTANCE_TYPES = ("t3.micro", "t3.medium", "m5.large", "c5.xlarge", "r5.large", "t3.large")
VOLUME_TYPES = ("gp3", "gp3", "gp2", "st1", "sc1", "io1")
SCAN_HOUR = 1  # the daily scan schedule runs at 01:00 UTC
IDLE_DAYS = 14  # idle_instance looks at the 14 complete days before the scan


@dataclass(frozen=True)
class SimAccount:
    alias: str
    account_id: str
    regions: tuple[str, ...]
    owner_user_id: str

    @property
    def role_arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:role/CloudWasteReadOnly"


DEMO_ACCOUNTS = (
    SimAccount("acme-prod", "210000000001", ("us-east-1", "eu-west-1"), "user-1001"),
    SimAccount("acme-staging", "210000000002", ("us-east-1", "ap-southeast-2"), "user-1002"),
    SimAccount(
        "globex-analytics", "210000000003", ("us-west-2", "eu-central-1", "sa-east-1"), "user-1003"
    ),
)


@dataclass
class PlannedResource:
    """One resource of the plan; ``key`` is stable across runs, the cloud id is moto's."""

    key: str
    kind: str  # instance | volume | eip
    account: SimAccount
    region: str
    created_at: datetime
    tags: dict[str, str]
    size_gb: int = 0
    volume_type: str = "gp3"
    iops: int | None = None
    instance_type: str = ""
    idle: bool = False
    attach_to: str | None = None  # key of the instance a volume or EIP is attached to
    stop_at: datetime | None = None  # instances: when stopped (None: keeps running)
    detach_at: datetime | None = None  # volumes and EIPs: when detached / disassociated
    cloud_id: str | None = None
    root_volume_id: str | None = None  # instances: the root volume moto creates with them
    deleted_at: datetime | None = None
    pii: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FleetSpec:
    seed: int = 7
    demo_date: date = date(2026, 11, 16)
    history_days: int = 28
    resources_per_region: int = 24
    accounts: tuple[SimAccount, ...] = DEMO_ACCOUNTS
    # The Azure tenant beside the AWS estate (``simulation.azure_estate``), and its size.
    azure_subscriptions: tuple[AzureSubscription, ...] = ()
    azure_units: int = 1

    @property
    def first_day(self) -> date:
        return self.demo_date - timedelta(days=self.history_days)

    def days(self) -> list[date]:
        return [self.first_day + timedelta(days=i) for i in range(self.history_days + 1)]


def scan_time(day: date) -> datetime:
    return datetime.combine(day, time(SCAN_HOUR))


def stable_rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator per (seed, parts): decisions do not depend on the order things happen in."""
    digest = hashlib.sha256("|".join(map(str, (seed, *parts))).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _tags(rng: np.random.Generator, purpose: str) -> tuple[dict[str, str], list[str]]:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    email = f"{first}.{last}@example.com"
    name = f"{first}-{last}-{purpose}-{int(rng.integers(10, 99))}"
    phone = f"+1 415 555 {int(rng.integers(1000, 9999))}"
    tags = {
        "Name": name,
        "Owner": email,
        "env": str(rng.choice(ENVS)),
        "Contact": phone,
        "CostCenter": f"CC-{int(rng.integers(1000, 9999))}",
    }
    return tags, [name, email, phone]


def plan_fleet(spec: FleetSpec) -> list[PlannedResource]:
    """The whole estate over the history: initial resources plus those created along the way."""
    planned: list[PlannedResource] = []
    start = scan_time(spec.first_day)
    end = scan_time(spec.demo_date)
    span_hours = (end - start).total_seconds() / 3600
    for account in spec.accounts:
        for region in account.regions:
            rng = stable_rng(spec.seed, account.account_id, region)
            n = spec.resources_per_region
            instances: list[PlannedResource] = []

            def born(rng: np.random.Generator, initial: bool) -> datetime:
                if initial:
                    return start - timedelta(hours=float(rng.uniform(24 * 3, 24 * 400)))
                return start + timedelta(hours=float(rng.uniform(0, span_hours)))

            for i in range(max(3, n * 3 // 10)):
                initial = rng.random() < 0.8
                created = born(rng, initial)
                tags, pii = _tags(rng, "app")
                stop_at = None
                roll = rng.random()
                if roll < 0.3:  # stopped some time ago, or stops during the history
                    stop_at = max(created, start) - timedelta(hours=float(rng.uniform(1, 24 * 90)))
                    stop_at = max(stop_at, created + timedelta(hours=2))
                elif roll < 0.45:
                    stop_at = created + timedelta(
                        hours=float(
                            rng.uniform(24, max(48, (end - created).total_seconds() / 3600))
                        )
                    )
                instances.append(
                    PlannedResource(
                        key=f"{account.alias}/{region}/instance-{i:03d}",
                        kind="instance",
                        account=account,
                        region=region,
                        created_at=created,
                        tags=tags,
                        pii=pii,
                        instance_type=str(rng.choice(INSTANCE_TYPES)),
                        idle=bool(rng.random() < 0.3),
                        stop_at=stop_at,
                    )
                )
            planned.extend(instances)
            running_hosts = [r for r in instances if r.stop_at is None]
            for i in range(max(3, n * 4 // 10)):
                initial = rng.random() < 0.75
                created = born(rng, initial)
                tags, pii = _tags(rng, "data")
                volume_type = str(rng.choice(VOLUME_TYPES))
                hosts = [h for h in running_hosts if h.created_at <= created]
                attach = (
                    hosts[int(rng.integers(len(hosts)))].key
                    if hosts and rng.random() < 0.55
                    else None
                )
                detach_at = None
                if attach and rng.random() < 0.15:
                    detach_at = max(created, start) + timedelta(
                        hours=float(rng.uniform(1, span_hours))
                    )
                planned.append(
                    PlannedResource(
                        key=f"{account.alias}/{region}/volume-{i:03d}",
                        kind="volume",
                        account=account,
                        region=region,
                        created_at=created,
                        tags=tags,
                        pii=pii,
                        size_gb=int(rng.choice([20, 50, 100, 250, 500, 1000])),
                        volume_type=volume_type,
                        iops=3000 if volume_type == "io1" else None,
                        attach_to=attach,
                        detach_at=detach_at,
                    )
                )
            for i in range(max(2, n * 3 // 10)):
                created = born(rng, rng.random() < 0.8)
                tags, pii = _tags(rng, "ip")
                hosts = [h for h in running_hosts if h.created_at <= created]
                attach = (
                    hosts[int(rng.integers(len(hosts)))].key
                    if hosts and rng.random() < 0.6
                    else None
                )
                planned.append(
                    PlannedResource(
                        key=f"{account.alias}/{region}/eip-{i:03d}",
                        kind="eip",
                        account=account,
                        region=region,
                        created_at=created,
                        tags=tags,
                        pii=pii,
                        attach_to=attach,
                    )
                )
    return planned


def expected_detections(
    planned: list[PlannedResource], now: datetime, stopped_min_days: int = 7
) -> dict[str, str]:
    """Ground truth at ``now``: cloud id -> scenario, for the resources alive then.

    Written from the plan, independently of the scanner's rules, so a test can compare the two.
    """
    by_key = {r.key: r for r in planned}
    alive = [
        r
        for r in planned
        if r.created_at <= now and (r.deleted_at is None or r.deleted_at > now) and r.cloud_id
    ]

    def stopped(instance: PlannedResource | None) -> bool:
        """Stopped for longer than the threshold (a shorter stop may be a pause)."""
        return bool(
            instance
            and instance.stop_at
            and now - instance.stop_at > timedelta(days=stopped_min_days)
        )

    def idle(instance: PlannedResource) -> bool:
        """Running and idle on each of the last 14 complete days (metrics from its creation)."""
        running = instance.stop_at is None or instance.stop_at > now
        old_enough = instance.created_at.date() <= now.date() - timedelta(days=IDLE_DAYS)
        return instance.idle and running and old_enough

    expected: dict[str, str] = {}
    for r in alive:
        if r.kind == "instance" and idle(r):
            expected[r.cloud_id] = "idle_instance"  # type: ignore[index]
        if r.kind == "instance" and stopped(r):
            expected[r.cloud_id] = "stopped_instance"  # type: ignore[index]
            if r.root_volume_id:
                expected[r.root_volume_id] = "attached_to_stopped_instance"
        elif r.kind in ("volume", "eip"):
            host = by_key.get(r.attach_to) if r.attach_to else None
            attached = bool(
                host
                and (r.detach_at is None or r.detach_at > now)
                and (host.deleted_at is None or host.deleted_at > now)
            )
            if not attached:
                expected[r.cloud_id] = (  # type: ignore[index]
                    "unattached_volume" if r.kind == "volume" else "unassociated_ip"
                )
            elif r.kind == "volume" and stopped(host):
                expected[r.cloud_id] = "attached_to_stopped_instance"  # type: ignore[index]
    return expected


def metric_series(
    kind: str, idle: bool, days: int, rng: np.random.Generator
) -> tuple[str, str, dict[str, tuple[str, list[float]]]]:
    """The simulated daily metrics of an instance or a volume: steady noise around a level
    (low when idle). Returns (namespace, dimension, metric -> (unit, values))."""
    if kind == "instance":
        cpu = 2.0 if idle else 35.0
        return (
            "AWS/EC2",
            "InstanceId",
            {
                "CPUUtilization": (
                    "Percent",
                    [max(0.0, rng.normal(cpu, cpu / 4)) for _ in range(days)],
                ),
                **{
                    name: (
                        "Bytes",
                        [max(0.0, rng.normal(5e5 if idle else 5e8, 1e5)) for _ in range(days)],
                    )
                    for name in ("NetworkIn", "NetworkOut")
                },
            },
        )
    ops = 20.0 if idle else 50_000.0
    return (
        "AWS/EBS",
        "VolumeId",
        {
            "VolumeReadOps": ("Count", [max(0.0, rng.normal(ops, ops / 5)) for _ in range(days)]),
            "VolumeWriteOps": ("Count", [max(0.0, rng.normal(ops, ops / 5)) for _ in range(days)]),
        },
    )
