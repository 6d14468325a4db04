"""Read one AWS account's inventory, region by region, into ``Resource`` records, and scan it.

The scanner only reads (``ec2:Describe*``, ``cloudwatch:GetMetricData``, ``sts:AssumeRole``,
``sts:GetCallerIdentity``) and never holds credentials: it uses the default credential chain,
optionally assuming the account's role. Endpoints come from boto3 itself, so ``AWS_ENDPOINT_URL``
(or ``AWS_ENDPOINT_URL_<SERVICE>``) points the scanner at moto or LocalStack without code changes.

A scan is resilient rather than all-or-nothing: a call group (volumes, instances, addresses,
metrics) that fails in one region is recorded as a ``ScanError`` (its message scrubbed of ids) and
the rest of the region and the other regions are still read, so one missing permission or one
unreachable region gives a ``partial`` scan instead of none. Throttling is retried by botocore's
``standard`` retry mode, which backs off on the named throttling codes.

API calls are kept proportional to regions, not resources: paginated describes per region and one
batched ``GetMetricData`` per 500 series. ``ApiCallCounter`` measures that.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.loaders import Loader, create_loader
from botocore.utils import parse_timestamp as botocore_parse_timestamp

from cloudwaste_pipeline.accounts import Account
from cloudwaste_pipeline.privacy.anonymize import aws_arn, aws_resource_arn, scrub_text
from cloudwaste_pipeline.scanning import pricing
from cloudwaste_pipeline.scanning.costs_aws import (
    REASON_NOT_ENABLED,
    attach_real_costs,
    fetch_real_costs,
)
from cloudwaste_pipeline.scanning.model import (
    MetricSeries,
    RawScan,
    Resource,
    ScanError,
    summarize_inventory,
)
from cloudwaste_pipeline.scanning.rules_aws import DEFAULT_THRESHOLDS, Thresholds, detect

PROVIDER = "aws"
ROLE_SESSION_NAME = "cloudwaste-scan"
DEFAULT_REGION = "us-east-1"  # where account-level calls go when the session names no region
MAX_WORKERS = 8  # regions scanned at once
CALLS_AT_ONCE = 8  # independent reads of one region in flight at once (there are eight)

# Each client is used by one thread, sequentially, so a small pool is plenty. Standard retry mode
# backs off with jitter on throttling and transient errors; 10 attempts rides out a busy account.
# Parameters are built here, not typed by users, and validating 500-query GetMetricData requests
# field by field was a sixth of the scanner's CPU, so botocore's client-side validation is off
# (AWS still validates and answers a ValidationError, which a scan records like any error).
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 10},
    max_pool_connections=10,
    parameter_validation=False,
)

# Instances in these states exist (and may bill storage); terminated ones are only a shadow.
LIVE_INSTANCE_STATES = ("pending", "running", "stopping", "stopped")

METRIC_WINDOW_DAYS = 30
METRIC_PERIOD_SECONDS = 86400
MAX_QUERIES_PER_CALL = 500  # the GetMetricData limit on MetricDataQueries
# Per metric profile (the resource type, or ``load_balancer:<type>``): namespace, dimension name,
# then (metric, statistic) pairs. Every series of a region goes into the same batched calls.
METRICS: dict[str, tuple[str, str, tuple[tuple[str, str], ...]]] = {
    "ec2_instance": (
        "AWS/EC2",
        "InstanceId",
        (("CPUUtilization", "Average"), ("NetworkIn", "Sum"), ("NetworkOut", "Sum")),
    ),
    "ebs_volume": ("AWS/EBS", "VolumeId", (("VolumeReadOps", "Sum"), ("VolumeWriteOps", "Sum"))),
    "rds_instance": ("AWS/RDS", "DBInstanceIdentifier", (("DatabaseConnections", "Maximum"),)),
    "nat_gateway": ("AWS/NATGateway", "NatGatewayId", (("BytesOutToDestination", "Sum"),)),
    "load_balancer:application": ("AWS/ApplicationELB", "LoadBalancer", (("RequestCount", "Sum"),)),
    "load_balancer:network": ("AWS/NetworkELB", "LoadBalancer", (("NewFlowCount", "Sum"),)),
    "load_balancer:classic": ("AWS/ELB", "LoadBalancerName", (("RequestCount", "Sum"),)),
}

# "User initiated (2025-03-01 10:00:00 GMT)": AWS's only record of when an instance stopped.
_TRANSITION_TIME = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?:GMT|UTC)\)")

# Errors that lose one call group, not the region: permissions, throttling past the retries,
# unreachable or slow endpoints.
_CALL_GROUP_ERRORS = (ClientError, BotoConnectionError, ReadTimeoutError)

# boto3 sessions are not thread-safe; creating clients under a lock makes it safe for the region
# threads to each build their own clients from the one session.
_CLIENT_LOCK = threading.Lock()

T = TypeVar("T")


class AccountMismatchError(RuntimeError):
    """The credentials reach a different AWS account than the one configured."""


class ApiCallCounter:
    """Counts API calls per region, service and operation, for calls-per-1,000-resources figures.

    It listens to botocore's ``before-call`` event, which fires once per API call (retries of a
    call are not counted again). Attach it before the scan creates its clients: a client copies
    the session's event handlers when it is created.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: Counter[tuple[str, str, str]] = Counter()

    def attach(self, session: boto3.Session) -> ApiCallCounter:
        session.events.register("before-call", self._on_call)
        return self

    def _on_call(self, event_name: str, context: dict[str, Any], **_: Any) -> None:
        _, service, operation = event_name.split(".", 2)
        with self._lock:
            self._calls[(context.get("client_region") or "", service, operation)] += 1

    def total(
        self, service: str | None = None, operation: str | None = None, region: str | None = None
    ) -> int:
        """Calls matching every filter given (``service`` as in event names: ``ec2``)."""
        with self._lock:
            return sum(
                n
                for (r, s, o), n in self._calls.items()
                if (service is None or s == service)
                and (operation is None or o == operation)
                and (region is None or r == region)
            )

    def by_operation(self) -> dict[str, int]:
        """``{"ec2.DescribeVolumes": n, ...}`` over all regions."""
        out: Counter[str] = Counter()
        with self._lock:
            for (_, service, operation), n in self._calls.items():
                out[f"{service}.{operation}"] += n
        return dict(sorted(out.items()))

    def per_thousand(self, resource_count: int) -> float:
        """API calls per 1,000 resources scanned, the figure benchmarks report."""
        return 1000 * self.total() / max(resource_count, 1)


class _UniquePaths(list):
    """A loader's search paths, each once: every ``boto3.Session`` appends boto3's own data
    folder to its loader's paths, which on a shared loader would grow with every session."""

    def append(self, path: str) -> None:
        if path not in self:
            super().append(path)


_LOADERS: dict[str, Loader] = {}


def new_session(**credentials: Any) -> boto3.Session:
    """A ``boto3.Session`` whose botocore data loader is the process's, shared by every session.

    A fresh session parses the service models again (JSON files of megabytes for EC2, the
    endpoint rules, the partitions): about 0.15 CPU-seconds of each account's scan, paid once
    per account when a run scans hundreds. The loader holds parsed files only (no credentials,
    endpoints or state of a session), so one per data path serves every account's session.
    """
    core = botocore.session.get_session()
    data_path = core.get_config_variable("data_path")
    with _CLIENT_LOCK:
        loader = _LOADERS.get(data_path)
        if loader is None:
            loader = _LOADERS[data_path] = create_loader(data_path)
            loader._search_paths = _UniquePaths(loader.search_paths)  # see _UniquePaths
        core.register_component("data_loader", loader)
        return boto3.Session(botocore_session=core, **credentials)


def make_session(account: Account, base_session: boto3.Session | None = None) -> boto3.Session:
    """A session for the account: the default credential chain, or its role assumed through STS.

    The assumed-role credentials are temporary (one hour by default), which is ample for a scan.
    """
    base = base_session or new_session()
    if not account.role_arn:
        return base
    sts = base.client("sts", region_name=base.region_name or DEFAULT_REGION, config=CLIENT_CONFIG)
    params = {"RoleArn": account.role_arn, "RoleSessionName": ROLE_SESSION_NAME}
    if account.external_id:
        params["ExternalId"] = account.external_id
    credentials = sts.assume_role(**params)["Credentials"]
    return new_session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=base.region_name,
    )


def verify_account(session: boto3.Session, account: Account) -> None:
    """Refuse to scan when the credentials reach another account than the configured one.

    Without this check a wrong profile or role would file one account's resources under another
    account's id. The message names the alias only: raw account ids stay out of logs and the UI.
    """
    sts = _client(session, "sts", session.region_name or DEFAULT_REGION)
    if sts.get_caller_identity()["Account"] != account.account_id:
        raise AccountMismatchError(
            f"the credentials for account {account.name!r} belong to a different AWS account; "
            "check its role_arn or the default credential chain"
        )


def parse_timestamp(value: Any) -> datetime:
    """botocore's timestamp parser, with ISO 8601 (what every Describe* returns) on a fast path.

    botocore parses each timestamp with dateutil, about 0.1 ms apiece: a quarter of the scanner's
    CPU for a 2,000-resource account, and CPU is what region threads share. Anything not ISO
    (epoch numbers from JSON protocols, RFC 822 headers) goes to botocore's parser unchanged.
    Every result is aware; ISO ones are in UTC, and a naive one is UTC, as AWS means it.
    """
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return botocore_parse_timestamp(value)


def use_fast_timestamps(session: boto3.Session) -> boto3.Session:
    """Make ``session``'s clients parse timestamps with ``parse_timestamp`` (as the AWS CLI
    swaps in its own parser); returns the session."""
    factory = session._session.get_component("response_parser_factory")
    factory.set_parser_defaults(timestamp_parser=parse_timestamp)
    return session


def list_regions(session: boto3.Session) -> list[str]:
    """The regions enabled for the account (opt-in regions only when opted in)."""
    ec2 = _client(session, "ec2", session.region_name or DEFAULT_REGION)
    response = ec2.describe_regions(
        Filters=[{"Name": "opt-in-status", "Values": ["opt-in-not-required", "opted-in"]}]
    )
    return sorted(r["RegionName"] for r in response["Regions"])


def parse_transition_time(reason: str | None) -> datetime | None:
    """When the last state transition happened, from ``StateTransitionReason`` (UTC), if stated."""
    match = _TRANSITION_TIME.search(reason or "")
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def collect_region(
    session: boto3.Session,
    account_id: str,
    region: str,
    now: datetime,
    calls_at_once: int = CALLS_AT_ONCE,
) -> tuple[list[Resource], list[ScanError]]:
    """Every resource of one region the rules look at, with costs and 30 days of metrics.

    The describes do not depend on each other, so up to ``calls_at_once`` run together (boto3
    clients are thread-safe): a region costs about two round trips of latency (describes, then
    metrics) instead of a dozen. Resources are built once everything is read, so each volume knows
    the state of its instances and each stopped instance the storage it keeps billing.
    """
    ec2 = _client(session, "ec2", region)
    rds = _client(session, "rds", region)
    cloudwatch = _client(session, "cloudwatch", region)
    errors: list[ScanError] = []

    def guarded(service: str, read: Callable[[], T]) -> T | None:
        try:
            return read()
        except _CALL_GROUP_ERRORS as exc:
            errors.append(_scan_error(region, service, exc))
            return None

    def pages(client: Any, operation: str, key: str, **params: Any) -> list[dict[str, Any]]:
        return [
            item
            for page in client.get_paginator(operation).paginate(**params)
            for item in page[key]
        ]

    reads: dict[str, Callable[[], Any]] = {
        "ec2:DescribeInstances": lambda: [
            instance
            for reservation in pages(
                ec2,
                "describe_instances",
                "Reservations",
                Filters=[{"Name": "instance-state-name", "Values": list(LIVE_INSTANCE_STATES)}],
            )
            for instance in reservation["Instances"]
        ],
        "ec2:DescribeVolumes": lambda: pages(ec2, "describe_volumes", "Volumes"),
        # DescribeAddresses has no paginator: it returns every address of the region at once.
        "ec2:DescribeAddresses": lambda: ec2.describe_addresses()["Addresses"],
        "ec2:DescribeSnapshots": lambda: [
            snapshot
            for snapshot in pages(
                ec2,
                "describe_snapshots",
                "Snapshots",
                OwnerIds=["self"],
                # Redundant on AWS; moto also returns public AMI snapshots for "self" without it.
                Filters=[{"Name": "owner-id", "Values": [account_id]}],
            )
            if snapshot.get("OwnerId", account_id) == account_id
        ],
        "ec2:DescribeImages": lambda: {
            mapping["Ebs"]["SnapshotId"]
            for image in ec2.describe_images(Owners=["self"])["Images"]
            for mapping in image.get("BlockDeviceMappings") or []
            if (mapping.get("Ebs") or {}).get("SnapshotId")
        },
        "ec2:DescribeNatGateways": lambda: [
            nat
            for nat in pages(ec2, "describe_nat_gateways", "NatGateways")
            if nat.get("State") not in ("deleted", "deleting", "failed")
        ],
        "rds:DescribeDBInstances": lambda: pages(rds, "describe_db_instances", "DBInstances"),
    }
    with ThreadPoolExecutor(max_workers=max(1, calls_at_once)) as pool:
        balancers_read = pool.submit(read_load_balancers, session, account_id, region, guarded)
        read = {name: pool.submit(guarded, name, call) for name, call in reads.items()}
        raw_instances = read["ec2:DescribeInstances"].result()
        raw_volumes = read["ec2:DescribeVolumes"].result()
        raw_addresses = read["ec2:DescribeAddresses"].result()
        raw_snapshots = read["ec2:DescribeSnapshots"].result()
        ami_snapshots = read["ec2:DescribeImages"].result()
        raw_nats = read["ec2:DescribeNatGateways"].result()
        raw_databases = read["rds:DescribeDBInstances"].result()
        balancers = balancers_read.result()

    instance_states = {i["InstanceId"]: i["State"]["Name"] for i in raw_instances or []}
    stopped_since = {
        i["InstanceId"]: parse_transition_time(i.get("StateTransitionReason"))
        for i in raw_instances or []
    }
    volumes = [
        _volume_resource(v, account_id, region, instance_states, stopped_since)
        for v in raw_volumes or []
    ]
    volume_costs = {
        raw["VolumeId"]: (resource.cost_monthly, resource.cost_source)
        for raw, resource in zip(raw_volumes or [], volumes, strict=True)
    }
    instances = [
        _instance_resource(i, account_id, region, volume_costs) for i in raw_instances or []
    ]
    addresses = [
        _address_resource(a, account_id, region, instance_states) for a in raw_addresses or []
    ]
    volume_states = {v["VolumeId"]: v.get("State", "") for v in raw_volumes or []}
    snapshots = [
        _snapshot_resource(
            s, account_id, region, None if raw_volumes is None else volume_states, ami_snapshots
        )
        for s in raw_snapshots or []
    ]
    nats = [_nat_resource(n, account_id, region) for n in raw_nats or []]
    databases = [_database_resource(d, account_id, region) for d in raw_databases or []]

    # CloudWatch dimensions take the raw ids, which the ARN-keyed resources no longer carry.
    targets = [
        *zip(instances, [i["InstanceId"] for i in raw_instances or []], strict=True),
        *zip(volumes, [v["VolumeId"] for v in raw_volumes or []], strict=True),
        *zip(databases, [d["DBInstanceIdentifier"] for d in raw_databases or []], strict=True),
        *zip(nats, [n["NatGatewayId"] for n in raw_nats or []], strict=True),
        *((lb, lb.attrs["metric_dimension"]) for lb in balancers),
    ]
    if targets:
        guarded("cloudwatch:GetMetricData", lambda: attach_metrics(cloudwatch, targets, now))
    resources = [*instances, *volumes, *addresses, *snapshots, *nats, *databases, *balancers]
    # Reads finish in any order; errors are sorted so a scan's record does not depend on timing.
    return resources, sorted(errors, key=lambda e: (e.service, e.error_code, e.message))


def read_load_balancers(
    session: boto3.Session,
    account_id: str,
    region: str,
    guarded: Callable[[str, Callable[[], Any]], Any],
) -> list[Resource]:
    """ALBs/NLBs (elbv2) and CLBs (elb), each with its count of registered and healthy targets.

    Target groups are listed once per region (each names its load balancers); target health
    takes one call per target group and instance health one per CLB with instances, since
    neither API accepts more than one. ``healthy_targets`` is ``None`` when it could not be read.
    """
    elbv2 = _client(session, "elbv2", region)
    elb = _client(session, "elb", region)
    balancers: list[Resource] = []
    raw_v2 = guarded(
        "elbv2:DescribeLoadBalancers",
        lambda: [
            lb
            for page in elbv2.get_paginator("describe_load_balancers").paginate()
            for lb in page["LoadBalancers"]
        ],
    )
    if raw_v2:
        groups = guarded(
            "elbv2:DescribeTargetGroups",
            lambda: [
                group
                for page in elbv2.get_paginator("describe_target_groups").paginate()
                for group in page["TargetGroups"]
            ],
        )

        def health() -> dict[str, tuple[int, int]]:
            counts: dict[str, tuple[int, int]] = {}
            for group in groups or []:
                if not group.get("LoadBalancerArns"):
                    continue
                described = elbv2.describe_target_health(TargetGroupArn=group["TargetGroupArn"])
                states = [
                    (d.get("TargetHealth") or {}).get("State")
                    for d in described["TargetHealthDescriptions"]
                ]
                for arn in group["LoadBalancerArns"]:
                    registered, healthy = counts.get(arn, (0, 0))
                    counts[arn] = (registered + len(states), healthy + states.count("healthy"))
            return counts

        counts = guarded("elbv2:DescribeTargetHealth", health) if groups is not None else None
        for raw in raw_v2:
            known = counts is not None
            registered, healthy = (counts or {}).get(raw["LoadBalancerArn"], (0, 0))
            balancers.append(
                _load_balancer_resource(
                    raw, account_id, region, registered if known else None,
                    healthy if known else None,
                )
            )  # fmt: skip
    raw_classic = guarded(
        "elb:DescribeLoadBalancers",
        lambda: [
            lb
            for page in elb.get_paginator("describe_load_balancers").paginate()
            for lb in page["LoadBalancerDescriptions"]
        ],
    )
    for raw in raw_classic or []:
        instances = raw.get("Instances") or []

        def in_service(name: str = raw["LoadBalancerName"]) -> int:
            states = elb.describe_instance_health(LoadBalancerName=name)["InstanceStates"]
            return sum(state.get("State") == "InService" for state in states)

        healthy = guarded("elb:DescribeInstanceHealth", in_service) if instances else 0
        balancers.append(_classic_resource(raw, account_id, region, len(instances), healthy))
    return balancers


def attach_metrics(cloudwatch: Any, targets: Sequence[tuple[Resource, str]], now: datetime) -> None:
    """Fill ``metrics`` of every target with daily series, in as few calls as the API allows.

    One ``GetMetricData`` carries up to 500 series, so a region costs one call per 500 series (and
    per page), never one per resource. The window is the last 30 whole UTC days before ``now``, so
    each point is a complete calendar day.
    """
    end = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=METRIC_WINDOW_DAYS)
    series: list[tuple[Resource, str, dict[str, Any]]] = []
    for resource, raw_id in targets:
        profile = resource.attrs.get("metric_profile", resource.resource_type)
        namespace, dimension, metrics = METRICS[profile]
        for metric, stat in metrics:
            query = {
                "MetricStat": {
                    "Metric": {
                        "Namespace": namespace,
                        "MetricName": metric,
                        "Dimensions": [{"Name": dimension, "Value": raw_id}],
                    },
                    "Period": METRIC_PERIOD_SECONDS,
                    "Stat": stat,
                },
                "ReturnData": True,
            }
            series.append((resource, metric, query))

    points: dict[str, dict[str, float]] = {}
    paginator = cloudwatch.get_paginator("get_metric_data")
    for first in range(0, len(series), MAX_QUERIES_PER_CALL):
        chunk = series[first : first + MAX_QUERIES_PER_CALL]
        # Ids must start with a lower-case letter and be unique within the call.
        queries = [{"Id": f"m{first + n}", **query} for n, (_, _, query) in enumerate(chunk)]
        pages = paginator.paginate(
            MetricDataQueries=queries, StartTime=start, EndTime=end, ScanBy="TimestampAscending"
        )
        for page in pages:
            for result in page["MetricDataResults"]:
                by_day = points.setdefault(result["Id"], {})
                for timestamp, value in zip(result["Timestamps"], result["Values"], strict=True):
                    by_day[timestamp.astimezone(UTC).date().isoformat()] = float(value)

    for n, (resource, metric, _) in enumerate(series):
        day_values: MetricSeries = sorted(points.get(f"m{n}", {}).items())
        resource.metrics[metric] = day_values


def scan_account(
    account: Account,
    now: datetime,
    regions: Sequence[str] | None = None,
    max_workers: int = MAX_WORKERS,
    session: boto3.Session | None = None,
    calls_at_once: int = CALLS_AT_ONCE,
) -> tuple[list[Resource], list[ScanError]]:
    """The account's inventory across regions, read concurrently, with what could not be read.

    Regions come from ``regions``, else the account's list, else every enabled region. A region
    that fails as a whole (say its endpoint cannot be reached) becomes one ``ScanError``; failing
    to reach the account at all (no credentials, a role that cannot be assumed, the wrong account)
    raises, because an empty scan would look like an account without waste.
    """
    session = use_fast_timestamps(session or make_session(account))
    verify_account(session, account)
    chosen = list(regions or account.regions or list_regions(session))
    resources: list[Resource] = []
    errors: list[ScanError] = []
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(chosen)))) as pool:
        futures = {
            region: pool.submit(
                collect_region, session, account.account_id, region, now, calls_at_once
            )
            for region in chosen
        }
        for region, future in futures.items():
            try:
                found, region_errors = future.result()
            except (BotoCoreError, ClientError) as exc:
                errors.append(_scan_error(region, "region", exc))
                continue
            resources.extend(found)
            errors.extend(region_errors)
    return resources, errors


def run_scan(
    account: Account,
    now: datetime,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    regions: Sequence[str] | None = None,
    session: boto3.Session | None = None,
    real_costs: bool = False,
    max_workers: int = MAX_WORKERS,
    calls_at_once: int = CALLS_AT_ONCE,
) -> RawScan:
    """One account's scan of the day: inventory, detections and totals, as the raw store keeps it.

    Pass ``session`` (from ``make_session``, with an ``ApiCallCounter`` attached) to measure calls.
    With ``real_costs`` the detections also get ``cost_real_monthly`` from Cost Explorer's
    resource-level data (a paid API, opt-in per account); otherwise, or where it is not available,
    ``cost_real_reason`` says why it is empty.
    """
    session = session or make_session(account)
    resources, errors = scan_account(
        account, now, regions=regions, session=session, max_workers=max_workers,
        calls_at_once=calls_at_once,
    )  # fmt: skip
    detections = detect(resources, now, thresholds)
    flagged = [d.resource for d in detections]
    if real_costs:
        attach_real_costs(flagged, fetch_real_costs(session, now))
    else:
        for resource in flagged:
            resource.cost_real_reason = REASON_NOT_ENABLED
    return summarize_inventory(
        PROVIDER, account.account_id, now.date(), now, resources, detections, errors
    )


def _client(session: boto3.Session, service: str, region: str) -> Any:
    with _CLIENT_LOCK:
        return session.client(service, region_name=region, config=CLIENT_CONFIG)


def _scan_error(region: str, service: str, exc: Exception) -> ScanError:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "ClientError"), error.get("Message", str(exc))
    else:
        code, message = type(exc).__name__, str(exc)
    return ScanError(region=region, service=service, error_code=code, message=scrub_text(message))


def _tags(raw: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag.get("Value", "") for tag in raw.get("Tags") or []}


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value else None


def _volume_resource(
    raw: dict[str, Any],
    account_id: str,
    region: str,
    instance_states: dict[str, str],
    stopped_since: dict[str, datetime | None],
) -> Resource:
    """A volume, with the states of the instances it is attached to (``None`` when unknown)."""
    attached = [a["InstanceId"] for a in raw.get("Attachments") or [] if a.get("InstanceId")]
    states = [instance_states.get(instance_id) for instance_id in attached]
    stop_times = [stopped_since.get(instance_id) for instance_id in attached]
    all_stopped_known = bool(attached) and all(
        state == "stopped" and since is not None
        for state, since in zip(states, stop_times, strict=True)
    )
    volume_type = raw.get("VolumeType", "")
    tags = _tags(raw)
    return Resource(
        provider=PROVIDER,
        account_id=account_id,
        region=region,
        resource_type="ebs_volume",
        resource_id=aws_resource_arn("ebs_volume", region, account_id, raw["VolumeId"]),
        state=raw.get("State", ""),
        name=tags.get("Name"),
        created_at=_utc(raw.get("CreateTime")),
        config={
            "size_gb": raw.get("Size"),
            "volume_type": volume_type,
            "iops": raw.get("Iops"),
            "throughput": raw.get("Throughput"),
            "encrypted": bool(raw.get("Encrypted")),
        },
        tags=tags,
        parent_id=(
            aws_resource_arn("ec2_instance", region, account_id, attached[0]) if attached else None
        ),
        parent_type="ec2_instance" if attached else None,
        parent_state=states[0] if attached else None,
        cost_monthly=pricing.ebs_volume_monthly(
            volume_type, raw.get("Size") or 0, raw.get("Iops"), region, raw.get("Throughput")
        ),
        cost_source=pricing.volume_cost_source(volume_type),
        attrs={
            "attachments": len(attached),
            "attached_instance_states": states,
            # The most recent stop among the attached instances: how long the volume sat idle.
            "attached_instances_stopped_since": (
                max(t for t in stop_times if t) if all_stopped_known else None
            ),
        },
    )


def _instance_resource(
    raw: dict[str, Any],
    account_id: str,
    region: str,
    volume_costs: dict[str, tuple[float, str]],
) -> Resource:
    """An instance; its cost is compute when running, else the storage its volumes keep billing.

    ``created_at`` is ``LaunchTime``, which AWS resets at every start: it is the last launch.
    """
    state = raw["State"]["Name"]
    volume_ids = [m["Ebs"]["VolumeId"] for m in raw.get("BlockDeviceMappings") or [] if "Ebs" in m]
    instance_type = raw.get("InstanceType", "")
    if state == "running":
        cost, source = pricing.instance_monthly(instance_type, region)
    else:
        storage = [volume_costs[v] for v in volume_ids if v in volume_costs]
        cost = round(sum(c for c, _ in storage), 4)
        source = (
            pricing.PRICE_ESTIMATE
            if any(s == pricing.PRICE_ESTIMATE for _, s in storage)
            else pricing.PRICE_TABLE
        )
    state_since = parse_transition_time(raw.get("StateTransitionReason"))
    vpc_id = raw.get("VpcId")
    tags = _tags(raw)
    attrs: dict[str, Any] = {"attached_volumes": len(volume_ids)}
    if state != "running":
        attrs["cost_counted_in_volumes"] = True  # inventory totals count the storage once
    if state == "stopped" and state_since is None:
        attrs["stop_time_unknown"] = True  # the stopped-instance rule cannot judge it
    return Resource(
        provider=PROVIDER,
        account_id=account_id,
        region=region,
        resource_type="ec2_instance",
        resource_id=aws_resource_arn("ec2_instance", region, account_id, raw["InstanceId"]),
        state=state,
        name=tags.get("Name"),
        created_at=_utc(raw.get("LaunchTime")),
        state_since=state_since,
        config={
            "instance_type": instance_type,
            "platform": raw.get("PlatformDetails") or raw.get("Platform") or "Linux/UNIX",
            "architecture": raw.get("Architecture"),
            "tenancy": (raw.get("Placement") or {}).get("Tenancy"),
        },
        tags=tags,
        parent_id=aws_resource_arn("vpc", region, account_id, vpc_id) if vpc_id else None,
        parent_type="vpc" if vpc_id else None,
        parent_state=None,
        cost_monthly=cost,
        cost_source=source,
        attrs=attrs,
    )


def _address_resource(
    raw: dict[str, Any], account_id: str, region: str, instance_states: dict[str, str]
) -> Resource:
    """An Elastic IP; only an unassociated one counts as waste, so only it carries a cost.

    AWS bills every public IPv4 address since February 2024, associated or not, but an associated
    address is part of the cost of what uses it; the waste is the address nothing uses.
    """
    association_id = raw.get("AssociationId")
    instance_id = raw.get("InstanceId") or None
    allocation_id = raw.get("AllocationId") or raw["PublicIp"]
    tags = _tags(raw)
    return Resource(
        provider=PROVIDER,
        account_id=account_id,
        region=region,
        resource_type="elastic_ip",
        resource_id=aws_resource_arn("elastic_ip", region, account_id, allocation_id),
        state="associated" if association_id else "unassociated",
        name=tags.get("Name"),
        config={"domain": raw.get("Domain")},
        tags=tags,
        parent_id=(
            aws_resource_arn("ec2_instance", region, account_id, instance_id)
            if instance_id
            else None
        ),
        parent_type="ec2_instance" if instance_id else None,
        parent_state=instance_states.get(instance_id) if instance_id else None,
        cost_monthly=0.0 if association_id else pricing.elastic_ip_monthly(region),
        cost_source=pricing.PRICE_TABLE,
        attrs={
            "association_id": association_id,
            "network_interface": raw.get("NetworkInterfaceId"),
        },
    )


def _snapshot_resource(
    raw: dict[str, Any],
    account_id: str,
    region: str,
    volume_states: dict[str, str] | None,
    ami_snapshots: set[str] | None,
) -> Resource:
    """An own snapshot: does its volume exist, does it back an AMI (``None``: unknown)."""
    volume_id = raw.get("VolumeId") or ""
    # AWS gives copied snapshots the placeholder vol-ffffffff: their source never existed here.
    volume_exists = None if volume_states is None else volume_id in volume_states
    tags = _tags(raw)
    size = raw.get("VolumeSize") or 0
    return Resource(
        provider=PROVIDER,
        account_id=account_id,
        region=region,
        resource_type="ebs_snapshot",
        resource_id=aws_resource_arn("ebs_snapshot", region, account_id, raw["SnapshotId"]),
        state=raw.get("State", ""),
        name=tags.get("Name"),
        created_at=_utc(raw.get("StartTime")),
        config={"size_gb": raw.get("VolumeSize"), "encrypted": bool(raw.get("Encrypted"))},
        tags=tags,
        parent_id=(
            aws_resource_arn("ebs_volume", region, account_id, volume_id) if volume_id else None
        ),
        parent_type="ebs_volume" if volume_id else None,
        parent_state=(None if volume_states is None else volume_states.get(volume_id, "deleted")),
        cost_monthly=pricing.snapshot_monthly(size, region),
        cost_source=pricing.PRICE_TABLE,
        attrs={
            "source_volume_exists": volume_exists,
            "backs_ami": None if ami_snapshots is None else raw["SnapshotId"] in ami_snapshots,
        },
    )


def _vpc_parent(region: str, account_id: str, vpc_id: str | None) -> dict[str, Any]:
    return {
        "parent_id": aws_resource_arn("vpc", region, account_id, vpc_id) if vpc_id else None,
        "parent_type": "vpc" if vpc_id else None,
        "parent_state": None,
    }


def _nat_resource(raw: dict[str, Any], account_id: str, region: str) -> Resource:
    tags = _tags(raw)
    return Resource(
        provider=PROVIDER,
        account_id=account_id,
        region=region,
        resource_type="nat_gateway",
        resource_id=aws_resource_arn("nat_gateway", region, account_id, raw["NatGatewayId"]),
        state=raw.get("State", ""),
        name=tags.get("Name"),
        created_at=_utc(raw.get("CreateTime")),
        config={"connectivity_type": raw.get("ConnectivityType") or "public"},
        tags=tags,
        **_vpc_parent(region, account_id, raw.get("VpcId")),
        cost_monthly=pricing.nat_gateway_monthly(region),
        cost_source=pricing.PRICE_TABLE,
    )


def _database_resource(raw: dict[str, Any], account_id: str, region: str) -> Resource:
    db_class = raw.get("DBInstanceClass", "")
    storage_type = raw.get("StorageType") or "gp2"
    storage_gb = raw.get("AllocatedStorage") or 0
    multi_az = bool(raw.get("MultiAZ"))
    cost, source = pricing.rds_instance_monthly(
        db_class, storage_type, storage_gb, raw.get("Iops"), multi_az, region
    )
    tags = _tags({"Tags": raw.get("TagList")})
    return Resource(
        provider=PROVIDER,
        account_id=account_id,
        region=region,
        resource_type="rds_instance",
        resource_id=raw.get("DBInstanceArn")
        or aws_resource_arn("rds_instance", region, account_id, raw["DBInstanceIdentifier"]),
        state=raw.get("DBInstanceStatus", ""),
        name=tags.get("Name"),
        created_at=_utc(raw.get("InstanceCreateTime")),
        config={
            "db_instance_class": db_class,
            "engine": raw.get("Engine"),
            "allocated_storage_gb": storage_gb,
            "multi_az": multi_az,
            "storage_type": storage_type,
        },
        tags=tags,
        **_vpc_parent(region, account_id, (raw.get("DBSubnetGroup") or {}).get("VpcId")),
        cost_monthly=cost,
        cost_source=source,
    )


def _load_balancer_resource(
    raw: dict[str, Any],
    account_id: str,
    region: str,
    registered: int | None,
    healthy: int | None,
) -> Resource:
    """An ALB or NLB; its CloudWatch dimension is the ARN after ``loadbalancer/``."""
    arn = raw["LoadBalancerArn"]
    lb_type = raw.get("Type") or "application"
    profile = f"load_balancer:{lb_type}"
    return Resource(
        provider=PROVIDER,
        account_id=account_id,
        region=region,
        resource_type="load_balancer",
        resource_id=arn,
        state=(raw.get("State") or {}).get("Code", ""),
        name=raw.get("LoadBalancerName"),
        created_at=_utc(raw.get("CreatedTime")),
        config={"lb_type": lb_type, "scheme": raw.get("Scheme")},
        **_vpc_parent(region, account_id, raw.get("VpcId")),
        cost_monthly=pricing.load_balancer_monthly(lb_type, region),
        cost_source=pricing.PRICE_TABLE,
        attrs={
            "registered_targets": registered,
            "healthy_targets": healthy,
            "metric_profile": profile if profile in METRICS else "load_balancer:application",
            "metric_dimension": arn.split(":loadbalancer/", 1)[-1],
        },
    )


def _classic_resource(
    raw: dict[str, Any], account_id: str, region: str, registered: int, healthy: int | None
) -> Resource:
    name = raw["LoadBalancerName"]
    return Resource(
        provider=PROVIDER,
        account_id=account_id,
        region=region,
        resource_type="load_balancer",
        resource_id=aws_arn("elasticloadbalancing", region, account_id, f"loadbalancer/{name}"),
        state="active",
        name=name,
        created_at=_utc(raw.get("CreatedTime")),
        config={"lb_type": "classic", "scheme": raw.get("Scheme")},
        **_vpc_parent(region, account_id, raw.get("VPCId")),
        cost_monthly=pricing.load_balancer_monthly("classic", region),
        cost_source=pricing.PRICE_TABLE,
        attrs={
            "registered_targets": registered,
            "healthy_targets": healthy,
            "metric_profile": "load_balancer:classic",
            "metric_dimension": name,
        },
    )
