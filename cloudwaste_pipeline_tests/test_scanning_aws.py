"""The AWS scanner against a moto server, and the AWS rule table and price table on their own.

The moto estate is planted per test in two regions (four for the acceptance test of every
scenario): each piece of waste has a healthy twin, so "every planted waste found" and "nothing
healthy flagged" are one equality on detections. Times
moto cannot set through the API (stop time, volume creation) are backdated in moto's in-process
backend, which the threaded server shares.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

import boto3
import pytest
import requests
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.stub import ANY
from moto.ec2.models import ec2_backends

from cloudwaste_pipeline.accounts import Account
from cloudwaste_pipeline.scanning import aws, pricing
from cloudwaste_pipeline.scanning.aws import (
    AccountMismatchError,
    ApiCallCounter,
    list_regions,
    make_session,
    parse_transition_time,
    run_scan,
    scan_account,
)
from cloudwaste_pipeline.scanning.model import Resource
from cloudwaste_pipeline.scanning.rules_aws import (
    DEFAULT_THRESHOLDS,
    RULES,
    Rule,
    Thresholds,
    detect,
    rules_markdown,
)

ACCOUNT_ID = "123456789012"  # moto's account for the "testing" credentials
OTHER_ACCOUNT_ID = "222222222222"
REGIONS = ("us-east-1", "eu-west-1")
ACCOUNT = Account(name="test-aws", provider="aws", owner_user_id="u1", account_id=ACCOUNT_ID)


# --------------------------------------------------------------------------------------------
# The moto server and the planted estate
# --------------------------------------------------------------------------------------------


@pytest.fixture
def moto(moto_url: str) -> str:
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    return moto_url


@pytest.fixture
def now() -> datetime:
    # moto stamps creation with the wall clock, so the scan's clock must be the wall clock too.
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class Estate:
    """Raw ids of what was planted, per region, under the role each plays."""

    ids: dict[tuple[str, str], str] = field(default_factory=dict)

    def arn(self, region: str, role: str, account_id: str = ACCOUNT_ID) -> str:
        kind = {"vol": "volume", "i": "instance", "eipalloc": "elastic-ip"}[
            self.ids[(region, role)].split("-")[0]
        ]
        return f"arn:aws:ec2:{region}:{account_id}:{kind}/{self.ids[(region, role)]}"


def _linux_image(account_id: str, region: str) -> str:
    # Read from the backend: DescribeImages returns moto's ~1,300 AMIs and takes a second.
    amis = ec2_backends[account_id][region].amis.values()
    return next(ami.id for ami in amis if not ami.platform)


def _backdate_stop(account_id: str, region: str, instance_id: str, when: datetime) -> None:
    instance = ec2_backends[account_id][region].get_instance(instance_id)
    instance._reason = f"User initiated ({when:%Y-%m-%d %H:%M:%S} GMT)"


def _backdate_volume(account_id: str, region: str, volume_id: str, when: datetime) -> None:
    # moto keeps naive UTC times.
    ec2_backends[account_id][region].volumes[volume_id].create_time = when.replace(tzinfo=None)


def _root_volume(ec2: Any, instance_id: str) -> str:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservations[0]["Instances"][0]["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]


def plant(region: str, now: datetime, estate: Estate, session: boto3.Session | None = None) -> None:
    """Waste and its healthy twins in one region (of the session's account)."""
    session = session or boto3.Session()
    account_id = session.client("sts", region_name=region).get_caller_identity()["Account"]
    ec2 = session.client("ec2", region_name=region)
    zone = f"{region}a"
    image = _linux_image(account_id, region)

    def run(role: str) -> str:
        instance = ec2.run_instances(
            ImageId=image,
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.micro",
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": role}]}
            ],
        )["Instances"][0]
        estate.ids[(region, role)] = instance["InstanceId"]
        estate.ids[(region, f"{role}-root")] = _root_volume(ec2, instance["InstanceId"])
        return instance["InstanceId"]

    old = ec2.create_volume(AvailabilityZone=zone, Size=100, VolumeType="gp3")["VolumeId"]
    _backdate_volume(account_id, region, old, now - timedelta(days=120))
    estate.ids[(region, "old-unattached")] = old
    new = ec2.create_volume(AvailabilityZone=zone, Size=10, VolumeType="gp2")["VolumeId"]
    estate.ids[(region, "new-unattached")] = new

    running = run("running")
    data = ec2.create_volume(AvailabilityZone=zone, Size=50, VolumeType="gp3")["VolumeId"]
    ec2.attach_volume(VolumeId=data, InstanceId=running, Device="/dev/sdf")
    estate.ids[(region, "running-data")] = data

    for role, days in (("stopped-long", 30), ("stopped-recent", 2)):
        instance_id = run(role)
        ec2.stop_instances(InstanceIds=[instance_id])
        _backdate_stop(account_id, region, instance_id, now - timedelta(days=days))

    free = ec2.allocate_address(Domain="vpc")["AllocationId"]
    estate.ids[(region, "eip-free")] = free
    used = ec2.allocate_address(Domain="vpc")["AllocationId"]
    ec2.associate_address(AllocationId=used, InstanceId=running)
    estate.ids[(region, "eip-used")] = used


def put_daily_metrics(region: str, instance_id: str, now: datetime) -> dict[str, list]:
    """Three daily points per instance metric, at noon of the three days before ``now``."""
    cloudwatch = boto3.client("cloudwatch", region_name=region)
    expected: dict[str, list] = {}
    for metric, values in (("CPUUtilization", [2.0, 3.0, 4.0]), ("NetworkOut", [10.0, 0.0, 5.0])):
        days = [now.date() - timedelta(days=k) for k in (3, 2, 1)]
        cloudwatch.put_metric_data(
            Namespace="AWS/EC2",
            MetricData=[
                {
                    "MetricName": metric,
                    "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
                    "Timestamp": datetime.combine(day, time(12), UTC),
                    "Value": value,
                }
                for day, value in zip(days, values, strict=True)
            ],
        )
        expected[metric] = [(d.isoformat(), v) for d, v in zip(days, values, strict=True)]
    return expected


@pytest.fixture
def estate(moto: str, now: datetime) -> Estate:
    planted = Estate()
    for region in REGIONS:
        plant(region, now, planted)
    return planted


def counted_session() -> tuple[boto3.Session, ApiCallCounter]:
    session = boto3.Session()
    return session, ApiCallCounter().attach(session)


# --------------------------------------------------------------------------------------------
# Injected failures: whole HTTP responses returned from botocore's before-send event, so the
# error goes through botocore's real parsing and retry handling.
# --------------------------------------------------------------------------------------------

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/")


class _RawBody:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def ec2_error(url: str, status: int, code: str, message: str) -> AWSResponse:
    body = (
        f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        "</Errors><RequestID>req-1</RequestID></Response>"
    ).encode()
    return AWSResponse(url, status, {"Content-Type": "text/xml"}, _RawBody(body))


def signing_region(request: Any) -> str | None:
    authorization = request.headers.get("Authorization") or b""
    if isinstance(authorization, bytes):
        authorization = authorization.decode()
    match = _SCOPE.search(authorization)
    return match.group(1) if match else None


# --------------------------------------------------------------------------------------------
# Scanner against moto
# --------------------------------------------------------------------------------------------


def test_scan_finds_every_planted_waste_and_nothing_healthy(estate: Estate, now: datetime) -> None:
    session, _ = counted_session()
    scan = run_scan(ACCOUNT, now, regions=REGIONS, session=session)

    found = {
        d["resource_id"]: (d["detection_scenario"], d["confidence_level"]) for d in scan.detections
    }
    expected = {}
    for region in REGIONS:
        expected |= {
            estate.arn(region, "old-unattached"): ("unattached_volume", "critical"),
            estate.arn(region, "new-unattached"): ("unattached_volume", "low"),
            estate.arn(region, "stopped-long"): ("stopped_instance", "high"),
            estate.arn(region, "stopped-long-root"): ("attached_to_stopped_instance", "high"),
            estate.arn(region, "eip-free"): ("unassociated_ip", "high"),
        }
    assert found == expected
    assert scan.status == "complete"
    # Per region: 3 instances, their 3 root volumes, 3 more volumes, 2 addresses.
    assert scan.resources_scanned == 11 * len(REGIONS)
    for detection in scan.detections:
        assert re.fullmatch(
            r"arn:aws:ec2:(us-east-1|eu-west-1):123456789012:"
            r"(volume/vol|instance/i|elastic-ip/eipalloc)-[0-9a-f]+",
            detection["resource_id"],
        )
        assert "arn:" not in detection["reason"]
        assert not re.search(r"\b(vol|i|eipalloc)-[0-9a-f]{8,}", detection["reason"])


def test_resources_carry_costs_from_the_price_table(estate: Estate, now: datetime) -> None:
    resources, errors = scan_account(ACCOUNT, now, regions=REGIONS)
    assert errors == []
    by_id = {r.resource_id: r for r in resources}
    for region, multiplier in (("us-east-1", 1.0), ("eu-west-1", 1.1)):
        old = by_id[estate.arn(region, "old-unattached")]
        assert old.cost_monthly == pytest.approx(100 * 0.08 * multiplier)
        assert old.config == {
            "size_gb": 100,
            "volume_type": "gp3",
            "iops": old.config["iops"],
            "throughput": old.config["throughput"],
            "encrypted": False,
        }
        assert old.cost_source == pricing.PRICE_TABLE
        assert (now - old.created_at).days == 120

        running = by_id[estate.arn(region, "running")]
        assert running.cost_monthly == pytest.approx(0.0104 * 730 * multiplier)
        assert running.cost_source == pricing.PRICE_TABLE
        assert running.name == "running"
        assert running.parent_type == "vpc"
        assert running.parent_id.startswith(f"arn:aws:ec2:{region}:{ACCOUNT_ID}:vpc/vpc-")

        # A stopped instance costs the storage of its root volume (8 GiB gp2), not compute.
        stopped = by_id[estate.arn(region, "stopped-long")]
        assert stopped.cost_monthly == pytest.approx(8 * 0.10 * multiplier)
        assert stopped.state_since == (now - timedelta(days=30))

        root = by_id[estate.arn(region, "stopped-long-root")]
        assert root.parent_id == estate.arn(region, "stopped-long")
        assert (root.parent_type, root.parent_state) == ("ec2_instance", "stopped")
        assert root.attrs["attached_instance_states"] == ["stopped"]

        assert by_id[estate.arn(region, "eip-free")].cost_monthly == 3.65
        used = by_id[estate.arn(region, "eip-used")]
        assert used.cost_monthly == 0.0
        assert used.attrs["association_id"]
        assert used.parent_id == estate.arn(region, "running")


def test_metrics_come_from_one_get_metric_data_call_per_region(
    estate: Estate, now: datetime
) -> None:
    instance_id = estate.ids[("us-east-1", "running")]
    expected = put_daily_metrics("us-east-1", instance_id, now) | {"NetworkIn": []}
    session, counter = counted_session()

    resources, errors = scan_account(ACCOUNT, now, regions=REGIONS, session=session)

    assert errors == []
    by_id = {r.resource_id: r for r in resources}
    assert by_id[estate.arn("us-east-1", "running")].metrics == expected
    assert by_id[estate.arn("eu-west-1", "running")].metrics == {
        "CPUUtilization": [],
        "NetworkIn": [],
        "NetworkOut": [],
    }
    assert by_id[estate.arn("us-east-1", "old-unattached")].metrics == {
        "VolumeReadOps": [],
        "VolumeWriteOps": [],
    }
    for region in REGIONS:
        assert counter.total(operation="GetMetricData", region=region) == 1
        # Six EC2 describes, one per RDS/ELBv2/ELB (no load balancers: no target groups) and
        # one metrics call per region, whatever the number of resources.
        assert counter.total(service="ec2", region=region) == 6
        assert counter.total(service="rds", region=region) == 1
        assert counter.total(service="elastic-load-balancing-v2", region=region) == 1
        assert counter.total(service="elastic-load-balancing", region=region) == 1
        assert counter.total(service="cloudwatch", region=region) == 1
    assert counter.by_operation()["sts.GetCallerIdentity"] == 1
    assert counter.total() == 1 + 10 * len(REGIONS)


def test_access_denied_in_one_region_gives_a_partial_scan(estate: Estate, now: datetime) -> None:
    session = boto3.Session()
    message = (
        f"You are not authorized to perform this operation. User: arn:aws:iam::{ACCOUNT_ID}:user/"
        "scanner is not authorized on vol-0123456789abcdef0 from 10.1.2.3"
    )

    def deny_eu(request: Any, **_: Any) -> AWSResponse | None:
        if signing_region(request) == "eu-west-1":
            return ec2_error(request.url, 403, "UnauthorizedOperation", message)
        return None

    session.events.register("before-send.ec2", deny_eu)
    scan = run_scan(ACCOUNT, now, regions=REGIONS, session=session)

    assert scan.status == "partial"
    assert {(e.region, e.service, e.error_code) for e in scan.errors} == {
        ("eu-west-1", "ec2:DescribeInstances", "UnauthorizedOperation"),
        ("eu-west-1", "ec2:DescribeVolumes", "UnauthorizedOperation"),
        ("eu-west-1", "ec2:DescribeAddresses", "UnauthorizedOperation"),
        ("eu-west-1", "ec2:DescribeSnapshots", "UnauthorizedOperation"),
        ("eu-west-1", "ec2:DescribeImages", "UnauthorizedOperation"),
        ("eu-west-1", "ec2:DescribeNatGateways", "UnauthorizedOperation"),
    }
    for error in scan.errors:
        assert "not authorized" in error.message
        for raw in (ACCOUNT_ID, "arn:", "vol-0123456789abcdef0", "10.1.2.3"):
            assert raw not in error.message
    assert {d["region"] for d in scan.detections} == {"us-east-1"}
    assert len(scan.detections) == 5
    assert scan.payload()["errors"][0]["region"] == "eu-west-1"


def test_a_region_that_fails_entirely_does_not_stop_the_others(
    estate: Estate, now: datetime
) -> None:
    resources, errors = scan_account(ACCOUNT, now, regions=("us-east-1", "not a region!"))
    assert [(e.region, e.service, e.error_code) for e in errors] == [
        ("not a region!", "region", "InvalidRegionError")
    ]
    assert {r.region for r in resources} == {"us-east-1"}


def test_a_service_endpoint_override_is_honoured_and_its_failure_recorded(
    estate: Estate, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # boto3 reads AWS_ENDPOINT_URL_<SERVICE> itself; nothing listens on port 9, so only the
    # metrics call group fails (at once: no retries here, to keep the test fast).
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH", "http://127.0.0.1:9")
    monkeypatch.setattr(
        aws, "CLIENT_CONFIG", Config(retries={"mode": "standard", "max_attempts": 1})
    )

    resources, errors = scan_account(ACCOUNT, now, regions=("us-east-1",))

    assert [(e.service, e.error_code) for e in errors] == [
        ("cloudwatch:GetMetricData", "EndpointConnectionError")
    ]
    assert len(resources) == 11
    assert all(r.metrics == {} for r in resources)


def test_throttling_is_retried(estate: Estate, now: datetime) -> None:
    session, counter = counted_session()
    throttled = []

    def throttle_twice(request: Any, **_: Any) -> AWSResponse | None:
        if len(throttled) < 2:
            throttled.append(request.url)
            return ec2_error(request.url, 400, "ThrottlingException", "Rate exceeded")
        return None

    session.events.register("before-send.ec2.DescribeVolumes", throttle_twice)
    resources, errors = scan_account(ACCOUNT, now, regions=("us-east-1",), session=session)

    assert errors == []
    assert len(throttled) == 2
    assert counter.total(operation="DescribeVolumes") == 1  # one call, three attempts
    assert sum(r.resource_type == "ebs_volume" for r in resources) == 6


def test_assume_role_scans_the_other_account_only(estate: Estate, now: datetime) -> None:
    # `estate` plants the default account too: the scan of the other account must not see it.
    role_arn = f"arn:aws:iam::{OTHER_ACCOUNT_ID}:role/cloudwaste"
    other = Account(
        name="other",
        provider="aws",
        owner_user_id="u1",
        account_id=OTHER_ACCOUNT_ID,
        regions=("us-east-1",),
        role_arn=role_arn,
        external_id="cw-ext-1",
    )
    base = boto3.Session()
    assume_calls: list[dict[str, Any]] = []
    base.events.register(
        "before-call.sts.AssumeRole", lambda params, **_: assume_calls.append(params)
    )
    session = make_session(other, base_session=base)
    other_estate = Estate()
    plant("us-east-1", now, other_estate, session=session)

    scan = run_scan(other, now, session=session)

    assert len(assume_calls) == 1
    body = assume_calls[0]["body"]
    assert body["RoleSessionName"] == "cloudwaste-scan"
    assert body["ExternalId"] == "cw-ext-1"
    assert scan.account_id == OTHER_ACCOUNT_ID
    assert scan.resources_scanned == 11
    assert all(f":{OTHER_ACCOUNT_ID}:" in d["resource_id"] for d in scan.detections)
    assert {d["resource_id"] for d in scan.detections} == {
        other_estate.arn("us-east-1", role, OTHER_ACCOUNT_ID)
        for role in (
            "old-unattached",
            "new-unattached",
            "stopped-long",
            "stopped-long-root",
            "eip-free",
        )
    }


def test_credentials_of_another_account_are_refused(moto: str, now: datetime) -> None:
    wrong = Account(name="wrong", provider="aws", owner_user_id="u1", account_id="333333333333")
    with pytest.raises(AccountMismatchError) as raised:
        scan_account(wrong, now, regions=("us-east-1",))
    assert "333333333333" not in str(raised.value)
    assert ACCOUNT_ID not in str(raised.value)


def test_regions_default_to_the_enabled_regions(moto: str) -> None:
    regions = list_regions(boto3.Session())
    assert {"us-east-1", "eu-west-1"} <= set(regions)


# --------------------------------------------------------------------------------------------
# The metric-based and newer resource types against moto: one region, each waste with twins
# --------------------------------------------------------------------------------------------

MB = 1024 * 1024


def put_series(
    region: str, namespace: str, dimension: str, value: str, metric: str, values: list[float],
    now: datetime,
) -> None:  # fmt: skip
    """One point a day at noon, the last value on yesterday, oldest first."""
    days = [now.date() - timedelta(days=len(values) - k) for k in range(len(values))]
    boto3.client("cloudwatch", region_name=region).put_metric_data(
        Namespace=namespace,
        MetricData=[
            {
                "MetricName": metric,
                "Dimensions": [{"Name": dimension, "Value": value}],
                "Timestamp": datetime.combine(day, time(12), UTC),
                "Value": v,
            }
            for day, v in zip(days, values, strict=True)
        ],
    )


def _backdate_snapshot(account_id: str, region: str, snapshot_id: str, when: datetime) -> None:
    ec2_backends[account_id][region].snapshots[snapshot_id].start_time = when.replace(tzinfo=None)


@dataclass
class Waste:
    """ARNs of what ``plant_more`` created, by role."""

    arns: dict[str, str] = field(default_factory=dict)


def plant_more(region: str, now: datetime) -> Waste:
    ec2 = boto3.client("ec2", region_name=region)
    zone = f"{region}a"
    image = _linux_image(ACCOUNT_ID, region)
    planted = Waste()

    def arn(kind: str, raw_id: str) -> str:
        return f"arn:aws:ec2:{region}:{ACCOUNT_ID}:{kind}/{raw_id}"

    def ec2_metrics(instance_id: str, cpu: list[float], network: list[float]) -> None:
        for metric, values in (("CPUUtilization", cpu), ("NetworkIn", network)):
            put_series(region, "AWS/EC2", "InstanceId", instance_id, metric, values, now)
        put_series(region, "AWS/EC2", "InstanceId", instance_id, "NetworkOut", [1.0] * 3, now)

    instances = {}
    for role in ("idle", "idle-13-days", "busy-one-day"):
        instance_id = ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro"
        )["Instances"][0]["InstanceId"]
        instances[role] = instance_id
        planted.arns[role] = arn("instance", instance_id)
    ec2_metrics(instances["idle"], [2.0] * 14, [4 * MB] * 14)
    ec2_metrics(instances["idle-13-days"], [2.0] * 13, [MB] * 13)
    ec2_metrics(instances["busy-one-day"], [2.0] * 7 + [10.0] + [2.0] * 6, [MB] * 14)

    # Volumes on the running "idle" instance: one idle over 10 days, one busy, one with 3 days.
    for role, ops in (
        ("vol-idle", [20.0] * 10),
        ("vol-busy", [5000.0] * 10),
        ("vol-3-days", [0.0] * 3),
    ):
        volume_id = ec2.create_volume(AvailabilityZone=zone, Size=20, VolumeType="gp3")["VolumeId"]
        ec2.attach_volume(VolumeId=volume_id, InstanceId=instances["idle"], Device="/dev/sdg")
        planted.arns[role] = arn("volume", volume_id)
        for metric in ("VolumeReadOps", "VolumeWriteOps"):
            put_series(region, "AWS/EBS", "VolumeId", volume_id, metric, ops, now)  # fmt: skip

    kept = ec2.create_volume(AvailabilityZone=zone, Size=30, VolumeType="gp3")["VolumeId"]
    planted.arns["kept-volume"] = arn("volume", kept)
    old = ec2.create_snapshot(VolumeId=kept)["SnapshotId"]
    _backdate_snapshot(ACCOUNT_ID, region, old, now - timedelta(days=200))
    new = ec2.create_snapshot(VolumeId=kept)["SnapshotId"]
    gone = ec2.create_volume(AvailabilityZone=zone, Size=40, VolumeType="gp3")["VolumeId"]
    orphan = ec2.create_snapshot(VolumeId=gone)["SnapshotId"]
    ec2.delete_volume(VolumeId=gone)
    ami = ec2.create_image(InstanceId=instances["idle-13-days"], Name="golden")["ImageId"]
    ami_snapshots = [
        m["Ebs"]["SnapshotId"]
        for m in ec2.describe_images(ImageIds=[ami])["Images"][0]["BlockDeviceMappings"]
        if "Ebs" in m
    ]
    assert ami_snapshots
    for snapshot_id in ami_snapshots:  # old, but an AMI needs it
        _backdate_snapshot(ACCOUNT_ID, region, snapshot_id, now - timedelta(days=200))
    for role, snapshot_id in (("snap-old", old), ("snap-new", new), ("snap-orphan", orphan)):
        planted.arns[role] = f"arn:aws:ec2:{region}::snapshot/{snapshot_id}"
    planted.arns["snap-ami"] = f"arn:aws:ec2:{region}::snapshot/{ami_snapshots[0]}"

    rds = boto3.client("rds", region_name=region)
    for role, connections in (("db-idle", [0.0] * 7), ("db-busy", [5.0] * 7), ("db-no-data", [])):
        rds.create_db_instance(
            DBInstanceIdentifier=role, DBInstanceClass="db.t3.micro", Engine="postgres",
            AllocatedStorage=20, MasterUsername="admin1", MasterUserPassword="password123",
        )  # fmt: skip
        planted.arns[role] = f"arn:aws:rds:{region}:{ACCOUNT_ID}:db:{role}"
        if connections:
            put_series(region, "AWS/RDS", "DBInstanceIdentifier", role,
                       "DatabaseConnections", connections, now)  # fmt: skip

    subnets = [s["SubnetId"] for s in ec2.describe_subnets()["Subnets"]][:2]
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    for role, sent in (("nat-idle", 0.0), ("nat-busy", 1e6)):
        allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
        nat = ec2.create_nat_gateway(SubnetId=subnets[0], AllocationId=allocation)
        nat_id = nat["NatGateway"]["NatGatewayId"]
        planted.arns[role] = arn("natgateway", nat_id)
        put_series(region, "AWS/NATGateway", "NatGatewayId", nat_id, "BytesOutToDestination",
                   [sent] * 7, now)  # fmt: skip

    elbv2 = boto3.client("elbv2", region_name=region)
    for role, lb_type, metric, daily in (
        ("alb-empty", "application", None, 0.0),
        ("alb-quiet", "application", "RequestCount", 5.0),
        ("alb-busy", "application", "RequestCount", 1000.0),
        ("nlb-busy", "network", "NewFlowCount", 1000.0),
    ):
        lb = elbv2.create_load_balancer(Name=role, Subnets=subnets, Type=lb_type)
        lb_arn = lb["LoadBalancers"][0]["LoadBalancerArn"]
        planted.arns[role] = lb_arn
        if metric is None:
            continue
        protocol = "HTTP" if lb_type == "application" else "TCP"
        groups = elbv2.create_target_group(Name=f"{role}-tg", Protocol=protocol, Port=80, VpcId=vpc)
        group = groups["TargetGroups"][0]["TargetGroupArn"]
        elbv2.register_targets(TargetGroupArn=group, Targets=[{"Id": instances["idle"]}])
        elbv2.create_listener(
            LoadBalancerArn=lb_arn, Protocol=protocol, Port=80,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": group}],
        )  # fmt: skip
        namespace = "AWS/ApplicationELB" if lb_type == "application" else "AWS/NetworkELB"
        dimension = lb_arn.split(":loadbalancer/", 1)[1]
        put_series(region, namespace, "LoadBalancer", dimension, metric, [daily] * 7, now)

    elb = boto3.client("elb", region_name=region)
    for role in ("clb-empty", "clb-serving"):
        elb.create_load_balancer(
            LoadBalancerName=role,
            Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 80}],
            AvailabilityZones=[zone],
        )
        planted.arns[role] = (
            f"arn:aws:elasticloadbalancing:{region}:{ACCOUNT_ID}:loadbalancer/{role}"
        )
    elb.register_instances_with_load_balancer(
        LoadBalancerName="clb-serving", Instances=[{"InstanceId": instances["idle"]}]
    )
    put_series(region, "AWS/ELB", "LoadBalancerName", "clb-serving", "RequestCount",
               [1000.0] * 7, now)  # fmt: skip
    return planted


@pytest.fixture
def waste(moto: str, now: datetime) -> Waste:
    return plant_more("us-east-1", now)


def test_new_scenarios_are_found_and_their_twins_are_not(waste: Waste, now: datetime) -> None:
    session, counter = counted_session()
    resources, errors = scan_account(ACCOUNT, now, regions=("us-east-1",), session=session)
    assert errors == []
    detections = detect(resources, now)
    found = {d.resource.resource_id: d.detection_scenario for d in detections}
    a = waste.arns
    assert found == {
        a["idle"]: "idle_instance",
        a["vol-idle"]: "idle_volume",
        a["snap-old"]: "old_snapshot",
        a["snap-orphan"]: "orphaned_snapshot",
        a["db-idle"]: "idle_database",
        a["nat-idle"]: "no_traffic",
        a["alb-empty"]: "no_targets",
        a["clb-empty"]: "no_targets",
        a["alb-quiet"]: "no_requests",
        a["kept-volume"]: "unattached_volume",  # the snapshots' source, left unattached
    }
    by_id = {r.resource_id: r for r in resources}
    for healthy in ("snap-new", "snap-ami", "db-busy", "db-no-data", "nat-busy", "alb-busy",
                    "nlb-busy", "clb-serving", "idle-13-days", "busy-one-day", "vol-busy",
                    "vol-3-days"):  # fmt: skip
        assert a[healthy] in by_id, healthy  # scanned, and not flagged

    # All series of the region (11 instance/volume series and the others) in one call.
    assert counter.total(service="cloudwatch") == 1

    volume = by_id[a["vol-idle"]]
    assert (volume.parent_id, volume.parent_state) == (a["idle"], "running")
    snapshot = by_id[a["snap-orphan"]]
    assert snapshot.config == {"size_gb": 40, "encrypted": False}
    assert snapshot.cost_monthly == pytest.approx(40 * 0.05)
    assert (snapshot.parent_type, snapshot.parent_state) == ("ebs_volume", "deleted")
    assert by_id[a["snap-old"]].parent_id == a["kept-volume"]
    assert (now - by_id[a["snap-old"]].created_at).days == 200
    db = by_id[a["db-idle"]]
    assert db.config == {
        "db_instance_class": "db.t3.micro", "engine": "postgres", "allocated_storage_gb": 20,
        "multi_az": False, "storage_type": "gp2",
    }  # fmt: skip
    assert db.cost_monthly == pytest.approx(0.017 * 730 + 20 * 0.115)
    assert db.cost_source == pricing.PRICE_TABLE
    nat = by_id[a["nat-idle"]]
    assert nat.cost_monthly == pytest.approx(32.85)
    assert nat.parent_type == "vpc" and nat.config == {"connectivity_type": "public"}
    alb = by_id[a["alb-quiet"]]
    assert alb.config["lb_type"] == "application"
    assert alb.cost_monthly == pytest.approx(16.42)
    assert alb.parent_type == "vpc"
    assert alb.metrics["RequestCount"][-1] == ((now.date() - timedelta(days=1)).isoformat(), 5.0)
    assert by_id[a["clb-empty"]].cost_monthly == pytest.approx(18.25)
    nlb = by_id[a["nlb-busy"]]
    assert nlb.config["lb_type"] == "network"
    assert len(nlb.metrics["NewFlowCount"]) == 7
    assert (nlb.attrs["registered_targets"], nlb.attrs["healthy_targets"]) == (1, 1)
    assert by_id[a["clb-serving"]].attrs["healthy_targets"] == 1
    assert len(by_id[a["idle"]].metrics["NetworkOut"]) == 3  # NetworkIn alone carries the days


FOUR_REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2", "sa-east-1")


def test_every_scenario_in_four_regions_and_no_healthy_twin(moto: str, now: datetime) -> None:
    """The acceptance estate: all twelve scenarios, each with healthy twins, in four regions,
    scanned in one go (regions and their reads concurrent); exactly the waste is flagged."""
    estate = Estate()
    expected: dict[str, str] = {}
    for region in FOUR_REGIONS:
        plant(region, now, estate)
        more = plant_more(region, now).arns
        expected |= {
            estate.arn(region, "old-unattached"): "unattached_volume",
            estate.arn(region, "new-unattached"): "unattached_volume",
            estate.arn(region, "stopped-long"): "stopped_instance",
            estate.arn(region, "stopped-long-root"): "attached_to_stopped_instance",
            estate.arn(region, "eip-free"): "unassociated_ip",
            more["idle"]: "idle_instance",
            more["vol-idle"]: "idle_volume",
            more["snap-old"]: "old_snapshot",
            more["snap-orphan"]: "orphaned_snapshot",
            more["db-idle"]: "idle_database",
            more["nat-idle"]: "no_traffic",
            more["alb-empty"]: "no_targets",
            more["clb-empty"]: "no_targets",
            more["alb-quiet"]: "no_requests",
            more["kept-volume"]: "unattached_volume",
        }
    session, counter = counted_session()
    scan = run_scan(ACCOUNT, now, regions=FOUR_REGIONS, session=session)

    assert scan.status == "complete" and scan.errors == []
    found = {d["resource_id"]: d["detection_scenario"] for d in scan.detections}
    assert found == expected
    assert set(found.values()) == {rule.scenario for rule in RULES}  # every rule of the table
    assert counter.total(service="cloudwatch") == len(FOUR_REGIONS)  # one call per region
    one_by_one = run_scan(ACCOUNT, now, regions=FOUR_REGIONS, max_workers=1, calls_at_once=1)
    assert one_by_one.payload() == scan.payload()  # concurrency changes nothing but time


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-04T05:06:07.000Z", datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)),
        ("2026-03-04T07:06:07+02:00", datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)),
        ("2026-03-04T05:06:07", datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)),  # AWS means UTC
        (1772600767, datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)),  # epoch (JSON protocols)
        ("Wed, 04 Mar 2026 05:06:07 GMT", datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)),
    ],
)
def test_parse_timestamp_fast_path_and_fallback(value: Any, expected: datetime) -> None:
    parsed = aws.parse_timestamp(value)
    assert parsed == expected and parsed.utcoffset() == timedelta(0)


def test_real_costs_are_off_by_default_and_say_so(waste: Waste, now: datetime) -> None:
    scan = run_scan(ACCOUNT, now, regions=("us-east-1",))
    assert scan.detections
    assert {(d["cost_real_monthly"], d["cost_real_reason"]) for d in scan.detections} == {
        (None, "not enabled")
    }


def test_real_costs_when_cost_explorer_is_not_supported_are_recorded(
    waste: Waste, now: datetime
) -> None:
    # moto does not implement GetCostAndUsageWithResources: the scan still completes.
    scan = run_scan(ACCOUNT, now, regions=("us-east-1",), real_costs=True)
    assert scan.status == "complete"
    reasons = {d["cost_real_reason"] for d in scan.detections}
    assert len(reasons) == 1 and reasons.pop().startswith("error: ")
    assert all(d["cost_real_monthly"] is None for d in scan.detections)


@pytest.mark.parametrize(
    ("deployment_default", "account_choice", "asked"),
    [(False, True, True), (True, False, False), (True, None, True), (False, None, False)],
)
def test_the_accounts_file_opts_an_account_in_or_out_of_real_costs(
    moto: str, now: datetime, deployment_default: bool, account_choice: bool | None, asked: bool
) -> None:
    from dataclasses import replace

    from cloudwaste_pipeline.defs.resources import CloudResource

    plant("us-east-1", now, Estate())
    account = replace(ACCOUNT, regions=("us-east-1",), real_costs=account_choice)
    scan = CloudResource(real_costs=deployment_default).scan(account)
    reasons = {d["cost_real_reason"] for d in scan.detections}
    assert scan.detections and len(reasons) == 1
    # Asked: moto has no resource-level Cost Explorer, so the reason is its error.
    assert reasons.pop().startswith("error: ") if asked else reasons == {"not enabled"}


# --------------------------------------------------------------------------------------------
# Rules, on hand-built resources
# --------------------------------------------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def volume(**overrides: Any) -> Resource:
    fields: dict[str, Any] = {
        "provider": "aws",
        "account_id": ACCOUNT_ID,
        "region": "us-east-1",
        "resource_type": "ebs_volume",
        "resource_id": f"arn:aws:ec2:us-east-1:{ACCOUNT_ID}:volume/vol-1",
        "state": "available",
        "created_at": NOW - timedelta(days=10),
        "config": {"size_gb": 20, "volume_type": "gp3"},
        "attrs": {"attachments": 0, "attached_instance_states": []},
    }
    return Resource(**(fields | overrides))


def instance(stopped_for: timedelta | None, state: str = "stopped") -> Resource:
    return Resource(
        provider="aws",
        account_id=ACCOUNT_ID,
        region="us-east-1",
        resource_type="ec2_instance",
        resource_id=f"arn:aws:ec2:us-east-1:{ACCOUNT_ID}:instance/i-1",
        state=state,
        state_since=None if stopped_for is None else NOW - stopped_for,
        config={"instance_type": "m5.large"},
    )


def volume_on_stopped(stopped_for: timedelta, states: list[str | None]) -> Resource:
    return volume(
        state="in-use",
        parent_state=states[0],
        attrs={
            "attachments": len(states),
            "attached_instance_states": states,
            "attached_instances_stopped_since": NOW - stopped_for,
        },
    )


def only(resource: Resource, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> tuple[str, str] | None:
    """The (scenario, confidence) the rules give one resource, or None when nothing matches."""
    detections = detect([resource], NOW, thresholds)
    assert len(detections) <= 1
    if not detections:
        return None
    return detections[0].detection_scenario, detections[0].confidence_level


@pytest.mark.parametrize(
    ("age", "confidence"),
    [
        (timedelta(0), "low"),
        (timedelta(days=7) - timedelta(seconds=1), "low"),
        (timedelta(days=7), "medium"),
        (timedelta(days=29), "medium"),
        (timedelta(days=30), "high"),
        (timedelta(days=90) - timedelta(seconds=1), "high"),
        (timedelta(days=90), "critical"),
    ],
)
def test_unattached_volume_confidence_grows_with_age(age: timedelta, confidence: str) -> None:
    assert only(volume(created_at=NOW - age)) == ("unattached_volume", confidence)


def test_unattached_volume_of_unknown_age_is_low() -> None:
    assert only(volume(created_at=None)) == ("unattached_volume", "low")


def test_an_attached_or_busy_volume_is_not_unattached() -> None:
    assert only(volume(state="in-use", attrs={"attachments": 1})) is None
    assert only(volume(state="creating")) is None


@pytest.mark.parametrize(
    ("stopped_for", "expected"),
    [
        (timedelta(days=7), None),
        (timedelta(days=7, seconds=1), ("stopped_instance", "low")),
        (timedelta(days=14), ("stopped_instance", "medium")),
        (timedelta(days=30), ("stopped_instance", "high")),
        (timedelta(days=90), ("stopped_instance", "critical")),
    ],
)
def test_stopped_instance_boundaries(
    stopped_for: timedelta, expected: tuple[str, str] | None
) -> None:
    assert only(instance(stopped_for)) == expected


def test_stopped_instance_needs_a_known_stop_time_and_the_stopped_state() -> None:
    assert only(instance(None)) is None
    assert only(instance(timedelta(days=60), state="running")) is None


def test_thresholds_are_overridable() -> None:
    assert only(instance(timedelta(days=2))) is None
    assert only(instance(timedelta(days=2)), Thresholds(stopped_instance_min_days=1)) == (
        "stopped_instance",
        "low",
    )


def test_volume_attached_to_stopped_instances() -> None:
    assert only(volume_on_stopped(timedelta(days=40), ["stopped"])) == (
        "attached_to_stopped_instance",
        "high",
    )
    assert only(volume_on_stopped(timedelta(days=7), ["stopped"])) is None
    # Every attached instance must be stopped, and every state known.
    assert only(volume_on_stopped(timedelta(days=40), ["stopped", "running"])) is None
    assert only(volume_on_stopped(timedelta(days=40), [None])) is None


def test_elastic_ip_without_association_is_high() -> None:
    free = Resource(
        provider="aws",
        account_id=ACCOUNT_ID,
        region="us-east-1",
        resource_type="elastic_ip",
        resource_id=f"arn:aws:ec2:us-east-1:{ACCOUNT_ID}:elastic-ip/eipalloc-1",
        state="unassociated",
        attrs={"association_id": None},
    )
    assert only(free) == ("unassociated_ip", "high")
    free.attrs["association_id"] = "eipassoc-1"
    assert only(free) is None


def test_the_first_matching_rule_wins() -> None:
    def always(*_: Any) -> bool:
        return True

    rules = [
        Rule("ebs_volume", "first", "", "", always, lambda *_: "high", lambda *_: "First."),
        Rule("ebs_volume", "second", "", "", always, lambda *_: "low", lambda *_: "Second."),
    ]
    detections = detect([volume()], NOW, rules=rules)
    assert [(d.detection_scenario, d.confidence_level, d.reason) for d in detections] == [
        ("first", "high", "First.")
    ]


def test_reasons_are_sentences_without_ids() -> None:
    resources = [
        volume(created_at=NOW - timedelta(days=45)),
        instance(timedelta(days=45)),
        volume_on_stopped(timedelta(days=45), ["stopped"]),
    ]
    detections = detect(resources, NOW)
    assert [d.reason for d in detections] == [
        "20 GiB gp3 volume is not attached to any instance, created 45 days ago.",
        "m5.large instance has been stopped for 45 days; its volumes still bill.",
        "20 GiB gp3 volume is attached only to an instance stopped for 45 days.",
    ]


def test_rules_markdown_is_the_reviewable_table() -> None:
    table = rules_markdown(Thresholds(stopped_instance_min_days=10))
    lines = table.splitlines()
    assert lines[0] == "| resource_type | scenario | rule | confidence |"
    assert len(lines) == 2 + len(RULES)
    assert "more than 10 days" in table
    for rule in RULES:
        assert f"| {rule.resource_type} | {rule.scenario} |" in table


def running(metrics: dict[str, list[tuple[str, float]]], state: str = "running") -> Resource:
    return Resource(
        provider="aws",
        account_id=ACCOUNT_ID,
        region="us-east-1",
        resource_type="ec2_instance",
        resource_id=f"arn:aws:ec2:us-east-1:{ACCOUNT_ID}:instance/i-2",
        state=state,
        config={"instance_type": "t3.micro"},
        metrics=metrics,
    )


def daily(values: list[float], end_days_ago: int = 1) -> list[tuple[str, float]]:
    """A series whose last value is ``end_days_ago`` days before NOW's date, oldest first."""
    last = NOW.date() - timedelta(days=end_days_ago)
    n = len(values)
    return [((last - timedelta(days=n - 1 - k)).isoformat(), v) for k, v in enumerate(values)]


def idle_metrics(days: int = 14, cpu: float = 2.0, net_in: float = MB, net_out: float = MB):
    return {
        "CPUUtilization": daily([cpu] * days),
        "NetworkIn": daily([net_in] * days),
        "NetworkOut": daily([net_out] * days),
    }


def test_idle_instance_needs_each_of_the_last_14_days() -> None:
    assert only(running(idle_metrics(14))) == ("idle_instance", "medium")
    assert only(running(idle_metrics(21))) == ("idle_instance", "high")
    assert only(running(idle_metrics(30))) == ("idle_instance", "critical")
    assert only(running(idle_metrics(13))) is None  # 13 days of data: not flagged
    # 14 points that end the day before yesterday miss yesterday: not flagged.
    shifted = {name: daily([v for _, v in s], end_days_ago=2) for name, s in idle_metrics().items()}
    assert only(running(shifted)) is None
    # Today's partial day does not count and is not required.
    assert only(running(idle_metrics(14) | {"CPUUtilization": daily([2.0] * 15, 0)})) == (
        "idle_instance",
        "medium",
    )
    assert only(running(idle_metrics(14), state="stopped")) is None


def test_idle_instance_a_single_busy_day_is_not_idle() -> None:
    for k in range(14):
        cpu = [2.0] * 14
        cpu[k] = 10.0  # the limit is strict: < 10%
        assert only(running(idle_metrics() | {"CPUUtilization": daily(cpu)})) is None
    assert only(running(idle_metrics(cpu=9.99))) == ("idle_instance", "medium")
    # Network: NetworkIn + NetworkOut must stay under 5 MB a day.
    assert only(running(idle_metrics(net_in=2.5 * MB, net_out=2.5 * MB))) is None
    assert only(running(idle_metrics(net_in=2.5 * MB, net_out=2.5 * MB - 1))) is not None
    network = [MB] * 14
    network[5] = 5 * MB
    assert only(running(idle_metrics() | {"NetworkIn": daily(network)})) is None


def test_idle_instance_missing_data() -> None:
    metrics = idle_metrics()
    metrics["CPUUtilization"] = [p for k, p in enumerate(metrics["CPUUtilization"]) if k != 6]
    assert only(running(metrics)) is None  # a day without CPU data
    # One of the two network metrics missing on a day counts as 0 ...
    metrics = idle_metrics()
    metrics["NetworkOut"] = metrics["NetworkOut"][:5]
    assert only(running(metrics)) == ("idle_instance", "medium")
    # ... but a day with neither is a day without network data.
    metrics["NetworkIn"] = metrics["NetworkIn"][:-1]
    assert only(running(metrics)) is None
    assert only(running({})) is None


def test_idle_volume_average_and_minimum_days() -> None:
    def attached(reads: list[float], writes: list[float], states=("running",)) -> Resource:
        return volume(
            state="in-use",
            parent_state=states[0],
            attrs={"attachments": len(states), "attached_instance_states": list(states)},
            metrics={"VolumeReadOps": daily(reads), "VolumeWriteOps": daily(writes)},
        )

    assert only(attached([50.0] * 7, [50.0] * 7)) == ("idle_volume", "low")
    assert only(attached([50.0] * 30, [50.0] * 30)) == ("idle_volume", "critical")
    assert only(attached([50.0] * 7, [50.1] * 7)) is None
    assert only(attached([0.0] * 6, [0.0] * 6)) is None  # fewer than 7 days of data
    assert only(attached([400.0] + [0.0] * 9, [0.0] * 10)) == ("idle_volume", "low")
    assert only(attached([0.0] * 10, [0.0] * 10, states=("stopped",))) is None
    assert only(attached([], [])) is None


def snapshot(age_days: float, volume_exists: bool | None, backs_ami: bool | None) -> Resource:
    return Resource(
        provider="aws",
        account_id=ACCOUNT_ID,
        region="us-east-1",
        resource_type="ebs_snapshot",
        resource_id="arn:aws:ec2:us-east-1::snapshot/snap-1",
        state="completed",
        created_at=NOW - timedelta(days=age_days),
        config={"size_gb": 8, "encrypted": False},
        attrs={"source_volume_exists": volume_exists, "backs_ami": backs_ami},
    )


def test_snapshot_rules_and_their_order() -> None:
    assert only(snapshot(91, True, False)) == ("old_snapshot", "medium")
    assert only(snapshot(90, True, False)) is None
    assert only(snapshot(200, True, False)) == ("old_snapshot", "high")
    assert only(snapshot(400, True, False)) == ("old_snapshot", "critical")
    assert only(snapshot(400, True, True)) is None  # backs an AMI
    assert only(snapshot(2, False, False)) == ("orphaned_snapshot", "low")
    assert only(snapshot(400, False, False)) == ("orphaned_snapshot", "critical")  # not old
    assert only(snapshot(400, False, True)) is None
    assert only(snapshot(400, None, None)) is None  # volumes or images unreadable


def metric_resource(resource_type: str, metrics: dict, state: str = "available", **attrs):
    return Resource(
        provider="aws",
        account_id=ACCOUNT_ID,
        region="us-east-1",
        resource_type=resource_type,
        resource_id=f"arn:aws:x:us-east-1:{ACCOUNT_ID}:{resource_type}/x",
        state=state,
        created_at=NOW - timedelta(days=40),
        config={"lb_type": "application"},
        metrics=metrics,
        attrs=attrs,
    )


def test_database_nat_and_load_balancer_rules() -> None:
    db = metric_resource
    assert only(db("rds_instance", {"DatabaseConnections": daily([0.0] * 7)})) == (
        "idle_database",
        "low",
    )
    assert only(db("rds_instance", {"DatabaseConnections": daily([0.0] * 6)})) is None
    assert only(db("rds_instance", {"DatabaseConnections": daily([1.0] + [0.0] * 6)})) is None
    assert only(db("rds_instance", {"DatabaseConnections": daily([0.0] * 7)}, "stopped")) is None
    assert only(db("nat_gateway", {"BytesOutToDestination": daily([0.0] * 21)})) == (
        "no_traffic",
        "high",
    )
    assert only(db("nat_gateway", {"BytesOutToDestination": daily([0.0] * 6 + [1.0])})) is None
    lb = metric_resource
    assert only(lb("load_balancer", {}, healthy_targets=0)) == ("no_targets", "high")
    assert only(lb("load_balancer", {}, healthy_targets=None)) is None
    quiet = {"RequestCount": daily([14.0] * 7)}
    assert only(lb("load_balancer", quiet, healthy_targets=1)) == ("no_requests", "low")
    assert only(lb("load_balancer", quiet, healthy_targets=0)) == ("no_targets", "high")
    assert only(lb("load_balancer", {"RequestCount": daily([15.0] * 7)}, healthy_targets=1)) is None
    assert only(lb("load_balancer", {"NewFlowCount": daily([0.0] * 6)}, healthy_targets=1)) is None
    assert only(lb("load_balancer", {"NewFlowCount": daily([0.0] * 30)}, healthy_targets=1)) == (
        "no_requests",
        "critical",
    )


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("User initiated (2026-10-01 10:00:00 GMT)", datetime(2026, 10, 1, 10, tzinfo=UTC)),
        ("User initiated (2026-10-01 10:00:00 UTC)", datetime(2026, 10, 1, 10, tzinfo=UTC)),
        ("Server.ScheduledStop", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_transition_time(reason: str | None, expected: datetime | None) -> None:
    assert parse_transition_time(reason) == expected


# --------------------------------------------------------------------------------------------
# Prices
# --------------------------------------------------------------------------------------------


def test_listed_and_estimated_instance_prices() -> None:
    assert pricing.instance_monthly("t3.micro", "us-east-1") == (
        pytest.approx(7.592),
        pricing.PRICE_TABLE,
    )
    assert pricing.instance_monthly("m7g.large", "us-east-1") == (
        pytest.approx(0.096 * 730),
        pricing.PRICE_ESTIMATE,
    )
    assert pricing.instance_monthly("x2idn.16xlarge", "us-east-1")[0] == pytest.approx(
        0.192 * 16 * 730
    )
    assert pricing.instance_monthly("m5.large", "sa-east-1")[0] == pytest.approx(0.096 * 730 * 1.5)


def test_volume_and_region_prices() -> None:
    assert pricing.ebs_volume_monthly("io1", 100, 1000, "us-east-1") == pytest.approx(77.5)
    assert pricing.ebs_volume_monthly("gp3", 100, 3000, "us-east-1", 125) == pytest.approx(8.0)
    assert pricing.ebs_volume_monthly("gp3", 100, 4000, "us-east-1", 225) == pytest.approx(17.0)
    assert pricing.volume_cost_source("gp9") == pricing.PRICE_ESTIMATE
    assert pricing.snapshot_monthly(100, "us-east-1") == pytest.approx(5.0)
    assert pricing.elastic_ip_monthly("ap-south-1") == 3.65
    assert pricing.region_multiplier("eu-west-1") == 1.1
    assert pricing.region_multiplier("eu-north-1") == 1.15
    assert pricing.region_multiplier("ca-west-1") == 1.1
    assert pricing.region_multiplier("xx-nowhere-1") == pricing.UNKNOWN_REGION_MULTIPLIER


# --------------------------------------------------------------------------------------------
# Cost Explorer real costs, against botocore's Stubber (moto lacks the operation)
# --------------------------------------------------------------------------------------------


def _ce_client() -> Any:
    return boto3.client(
        "ce", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


def _flagged(resource_id: str) -> Resource:
    return volume(resource_id=resource_id)


def test_real_costs_from_cost_explorer_are_daily_averages_times_30_4() -> None:
    from botocore.stub import Stubber

    from cloudwaste_pipeline.scanning.costs_aws import attach_real_costs, fetch_real_costs

    ce = _ce_client()

    def day(start: str, groups: list[tuple[str, str]]) -> dict[str, Any]:
        return {
            "TimePeriod": {"Start": start, "End": start},
            "Groups": [
                {"Keys": [key], "Metrics": {"UnblendedCost": {"Amount": amount, "Unit": "USD"}}}
                for key, amount in groups
            ],
        }

    instance_arn = f"arn:aws:ec2:us-east-1:{ACCOUNT_ID}:instance/i-0abc"
    nat_arn = f"arn:aws:ec2:us-east-1:{ACCOUNT_ID}:natgateway/nat-0abc"
    with Stubber(ce) as stub:
        stub.add_response(
            "get_cost_and_usage_with_resources",
            {"ResultsByTime": [day("2026-02-15", [("i-0abc", "7.0")])], "NextPageToken": "p2"},
            {
                "TimePeriod": {"Start": "2026-02-15", "End": "2026-03-01"},
                "Granularity": "DAILY",
                "Filter": {"Dimensions": {"Key": "SERVICE", "Values": ANY}},
                "GroupBy": [{"Type": "DIMENSION", "Key": "RESOURCE_ID"}],
                "Metrics": ["UnblendedCost"],
            },
        )
        stub.add_response(
            "get_cost_and_usage_with_resources",
            {"ResultsByTime": [day("2026-02-16", [("i-0abc", "7.0"), (nat_arn, "14.0")])]},
        )
        costs = fetch_real_costs(boto3.Session(), NOW, client=ce)
    resources = [_flagged(instance_arn), _flagged(nat_arn), _flagged("arn:aws:ec2:x:y:volume/v")]
    attach_real_costs(resources, costs)
    assert [(r.cost_real_monthly, r.cost_real_reason) for r in resources] == [
        (pytest.approx(30.4), None),
        (pytest.approx(30.4), None),
        (None, "no resource-level cost in Cost Explorer"),
    ]


@pytest.mark.parametrize(
    ("code", "message", "reason"),
    [
        ("DataUnavailableException", "Data is not available.", "not opted in"),
        (
            "ValidationException",
            "Resource-level data is not enabled; opt in through the console",
            "not opted in",
        ),
        ("AccessDeniedException", f"User arn:aws:iam::{ACCOUNT_ID}:user/x denied", "error: "
         "AccessDeniedException"),
    ],
)  # fmt: skip
def test_real_costs_unavailable_say_why(code: str, message: str, reason: str) -> None:
    from botocore.stub import Stubber

    from cloudwaste_pipeline.scanning.costs_aws import attach_real_costs, fetch_real_costs

    ce = _ce_client()
    with Stubber(ce) as stub:
        stub.add_client_error(
            "get_cost_and_usage_with_resources", service_error_code=code, service_message=message
        )
        costs = fetch_real_costs(boto3.Session(), NOW, client=ce)
    resources = [_flagged(f"arn:aws:ec2:us-east-1:{ACCOUNT_ID}:volume/vol-1")]
    attach_real_costs(resources, costs)
    assert (resources[0].cost_real_monthly, resources[0].cost_real_reason) == (None, reason)


def test_account_sessions_share_one_parsed_loader_and_keep_their_own_credentials() -> None:
    sessions = [
        aws.new_session(aws_access_key_id=f"AKIA{i}", aws_secret_access_key="s", region_name="x")
        for i in range(3)
    ]
    loaders = {id(s._session.get_component("data_loader")) for s in sessions}
    assert len(loaders) == 1  # the models parsed for one account serve the next
    loader = sessions[0]._session.get_component("data_loader")
    paths = list(loader.search_paths)
    assert len(paths) == len(set(paths))  # boto3's data folder once, however many sessions
    aws.new_session()
    assert loader.search_paths == paths
    keys = [s.get_credentials().access_key for s in sessions]
    assert keys == ["AKIA0", "AKIA1", "AKIA2"]
    clients = [s.client("ec2", region_name="us-east-1") for s in sessions[:2]]
    assert clients[0]._request_signer._credentials.access_key == "AKIA0"
    assert clients[1]._request_signer._credentials.access_key == "AKIA1"
