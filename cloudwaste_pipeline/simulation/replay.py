"""Play the fleet plan into moto, one day at a time, so the real scanner sees each past day.

moto stamps everything with the wall clock; the replay back-dates creation and stop times in
moto's in-process backend to the plan's times. Ids are made deterministic by seeding moto's
random generator per (seed, day), so running the demo twice gives the same resource ids and
therefore the same hashes and row counts.
"""

from __future__ import annotations

import logging
import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import boto3
from moto.ec2.models import ec2_backends
from moto.moto_api._internal import mock_random
from moto.server import ThreadedMotoServer

from cloudwaste_pipeline.simulation.fleet import (
    FleetSpec,
    PlannedResource,
    SimAccount,
    metric_series,
    stable_rng,
)

DEMO_AMI = "ami-0c0ffee0c0ffee000"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "simulated",
    "AWS_SECRET_ACCESS_KEY": "simulated",
    "AWS_DEFAULT_REGION": "us-east-1",
}
METRIC_LOOKBACK_DAYS = 30


@contextmanager
def moto_cloud() -> Iterator[str]:
    """A moto server on loopback, with boto3 pointed at it through ``AWS_ENDPOINT_URL``."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    # moto's backends are process-wide: start every simulated cloud empty.
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", *FAKE_CREDENTIALS)}
    os.environ.update({"AWS_ENDPOINT_URL": url, **FAKE_CREDENTIALS})
    try:
        yield url
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def account_session(account: SimAccount) -> boto3.Session:
    creds = boto3.client("sts").assume_role(
        RoleArn=account.role_arn, RoleSessionName="cloudwaste-simulation"
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def _tag_spec(kind: str, tags: dict[str, str]) -> list[dict]:
    return [{"ResourceType": kind, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


class Replay:
    """Drives moto through the plan; call ``advance_to(t)`` with increasing times."""

    def __init__(self, spec: FleetSpec, planned: list[PlannedResource]) -> None:
        self.spec = spec
        self.planned = planned
        self.by_key = {r.key: r for r in planned}
        self.sessions = {a.account_id: account_session(a) for a in spec.accounts}
        self.deletions: dict[str, datetime] = {}  # key -> when the user deleted it
        self.clock: datetime | None = None
        for account in spec.accounts:  # moto builds a region (default VPC...) on first use:
            for region in account.regions:  # do it now, outside the seeded id windows
                self.client(account, region).describe_vpcs()
                self.client(account, region, "cloudwatch").list_metrics()

    def client(self, account: SimAccount, region: str, service: str = "ec2"):
        return self.sessions[account.account_id].client(service, region_name=region)

    def backend(self, resource: PlannedResource):
        return ec2_backends[resource.account.account_id][resource.region]

    def schedule_deletion(self, key: str, when: datetime) -> None:
        """A user deleted the resource at ``when``; it disappears from the next scan on."""
        self.deletions[key] = when

    def advance_to(self, moment: datetime) -> None:
        """Apply every planned change that happened in (previous clock, moment]."""
        previous = self.clock
        self.clock = moment
        mock_random.seed(int(stable_rng(self.spec.seed, "ids", moment.isoformat()).integers(2**31)))

        def due(when: datetime | None) -> bool:
            return when is not None and when <= moment and (previous is None or when > previous)

        for resource in self.planned:
            if resource.cloud_id is None and resource.created_at <= moment:
                self._create(resource)
        for resource in self.planned:
            if resource.kind == "instance" and due(resource.stop_at):
                self._stop(resource)
            if resource.kind != "instance" and due(resource.detach_at):
                self._detach(resource)
        for key, when in sorted(self.deletions.items(), key=lambda kv: kv[1]):
            resource = self.by_key[key]
            if when <= moment and resource.deleted_at is None and resource.cloud_id:
                self._delete(resource, when)

    def _create(self, resource: PlannedResource) -> None:
        ec2 = self.client(resource.account, resource.region)
        if resource.kind == "instance":
            out = ec2.run_instances(
                ImageId=DEMO_AMI,
                MinCount=1,
                MaxCount=1,
                InstanceType=resource.instance_type,
                TagSpecifications=_tag_spec("instance", resource.tags),
            )["Instances"][0]
            resource.cloud_id = out["InstanceId"]
            instance = self.backend(resource).get_instance(resource.cloud_id)
            instance.launch_time = _naive(resource.created_at)
            for mapping in out.get("BlockDeviceMappings", []):
                volume_id = mapping["Ebs"]["VolumeId"]
                resource.root_volume_id = volume_id
                self.backend(resource).get_volume(volume_id).create_time = _naive(
                    resource.created_at
                )
            self._put_metrics(resource)
            if resource.stop_at and resource.stop_at <= (self.clock or resource.stop_at):
                self._stop(resource)
        elif resource.kind == "volume":
            out = ec2.create_volume(
                AvailabilityZone=f"{resource.region}a",
                Size=resource.size_gb,
                VolumeType=resource.volume_type,
                **({"Iops": resource.iops} if resource.iops else {}),
                TagSpecifications=_tag_spec("volume", resource.tags),
            )
            resource.cloud_id = out["VolumeId"]
            self.backend(resource).get_volume(resource.cloud_id).create_time = _naive(
                resource.created_at
            )
            host = self.by_key.get(resource.attach_to or "")
            if host and host.cloud_id and not self._detached(resource):
                ec2.attach_volume(
                    VolumeId=resource.cloud_id, InstanceId=host.cloud_id, Device="/dev/sdf"
                )
                self._put_metrics(resource)
        else:
            out = ec2.allocate_address(
                Domain="vpc", TagSpecifications=_tag_spec("elastic-ip", resource.tags)
            )
            resource.cloud_id = out["AllocationId"]
            host = self.by_key.get(resource.attach_to or "")
            if host and host.cloud_id and not self._detached(resource):
                ec2.associate_address(AllocationId=resource.cloud_id, InstanceId=host.cloud_id)

    def _detached(self, resource: PlannedResource) -> bool:
        return bool(resource.detach_at and self.clock and resource.detach_at <= self.clock)

    def _stop(self, resource: PlannedResource) -> None:
        ec2 = self.client(resource.account, resource.region)
        ec2.stop_instances(InstanceIds=[resource.cloud_id])
        stamp = _naive(resource.stop_at or self.clock).strftime("%Y-%m-%d %H:%M:%S")  # type: ignore[arg-type]
        self.backend(resource).get_instance(
            resource.cloud_id
        )._reason = f"User initiated ({stamp} GMT)"

    def _detach(self, resource: PlannedResource) -> None:
        if resource.cloud_id is None or resource.deleted_at is not None:
            return
        ec2 = self.client(resource.account, resource.region)
        if resource.kind == "volume":
            volume = ec2.describe_volumes(VolumeIds=[resource.cloud_id])["Volumes"][0]
            for attachment in volume["Attachments"]:
                ec2.detach_volume(VolumeId=resource.cloud_id, InstanceId=attachment["InstanceId"])
        else:
            address = ec2.describe_addresses(AllocationIds=[resource.cloud_id])["Addresses"][0]
            if address.get("AssociationId"):
                ec2.disassociate_address(AssociationId=address["AssociationId"])

    def _delete(self, resource: PlannedResource, when: datetime) -> None:
        ec2 = self.client(resource.account, resource.region)
        if resource.kind == "instance":
            for other in self.planned:  # what AWS does on termination, made explicit
                if other.attach_to == resource.key and other.deleted_at is None:
                    other.detach_at = min(other.detach_at or when, when)
                    self._detach(other)
            ec2.terminate_instances(InstanceIds=[resource.cloud_id])
        elif resource.kind == "volume":
            self._detach(resource)
            ec2.delete_volume(VolumeId=resource.cloud_id)
        else:
            self._detach(resource)
            ec2.release_address(AllocationId=resource.cloud_id)
        resource.deleted_at = when

    def _put_metrics(self, resource: PlannedResource) -> None:
        """Daily data points from a month before the history to the demo date, in one go."""
        first = max(
            resource.created_at.date(),
            self.spec.first_day - timedelta(days=METRIC_LOOKBACK_DAYS),
        )
        days = [first + timedelta(days=i) for i in range((self.spec.demo_date - first).days + 1)]
        rng = stable_rng(self.spec.seed, "metrics", resource.key)
        namespace, dimension, series = metric_series(resource.kind, resource.idle, len(days), rng)
        cloudwatch = self.client(resource.account, resource.region, "cloudwatch")
        data = [
            {
                "MetricName": name,
                "Dimensions": [{"Name": dimension, "Value": resource.cloud_id}],
                "Timestamp": datetime(day.year, day.month, day.day, 0, 0, tzinfo=UTC),
                "Value": float(value),
                "Unit": unit,
            }
            for name, (unit, values) in series.items()
            for day, value in zip(days, values, strict=True)
        ]
        for i in range(0, len(data), 500):
            cloudwatch.put_metric_data(Namespace=namespace, MetricData=data[i : i + 500])

    def key_for(self, resource_id: str) -> str | None:
        """The plan key of a scanned resource (a root volume maps to its instance)."""
        cloud_id = resource_id.rsplit("/", 1)[-1]
        for resource in self.planned:
            if cloud_id in (resource.cloud_id, resource.root_volume_id):
                return resource.key
        return None
