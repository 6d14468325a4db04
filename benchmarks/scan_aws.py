"""Benchmark of the AWS scanner against a moto server: wall time, API calls, concurrent regions.

Run with ``python -m benchmarks.scan_aws`` (not part of the test suite). It seeds an estate of
about 2,000 resources in 4 regions, scans it once to count API calls per 1,000 resources by
service, then scans again with a 50 ms latency injected into every HTTP request (a botocore
``before-send`` handler that sleeps), one region at a time and then concurrently, and prints the
speed-up. It prints figures and asserts nothing.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from typing import Any

REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1")
INSTANCES_PER_REGION = 100  # each brings a root volume
VOLUMES_PER_REGION = 260
ADDRESSES_PER_REGION = 40
LATENCY_SECONDS = 0.05
ACCOUNT_ID = "123456789012"


def main() -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE="/nonexistent",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
    )
    try:
        run()
    finally:
        server.stop()


def seed(region: str, now: datetime) -> None:
    import boto3
    from moto.ec2.models import ec2_backends

    ec2 = boto3.client("ec2", region_name=region)
    image = next(a.id for a in ec2_backends[ACCOUNT_ID][region].amis.values() if not a.platform)
    instances = ec2.run_instances(
        ImageId=image, MinCount=INSTANCES_PER_REGION, MaxCount=INSTANCES_PER_REGION,
        InstanceType="t3.micro",
    )["Instances"]  # fmt: skip
    for _ in range(VOLUMES_PER_REGION):
        ec2.create_volume(AvailabilityZone=f"{region}a", Size=10, VolumeType="gp3")
    for _ in range(ADDRESSES_PER_REGION):
        ec2.allocate_address(Domain="vpc")
    # Metrics only for a few instances (moto's GetMetricData scans every stored point).
    cloudwatch = boto3.client("cloudwatch", region_name=region)
    days = [now.date() - timedelta(days=k) for k in range(14, 0, -1)]
    for instance in instances[:5]:
        cloudwatch.put_metric_data(
            Namespace="AWS/EC2",
            MetricData=[
                {
                    "MetricName": "CPUUtilization",
                    "Dimensions": [{"Name": "InstanceId", "Value": instance["InstanceId"]}],
                    "Timestamp": datetime.combine(day, clock(12), UTC),
                    "Value": 2.0,
                }
                for day in days
            ],
        )


def run() -> None:
    import boto3

    from cloudwaste_pipeline.accounts import Account
    from cloudwaste_pipeline.scanning.aws import ApiCallCounter, run_scan

    now = datetime.now(UTC).replace(microsecond=0)
    account = Account(name="bench", provider="aws", owner_user_id="u", account_id=ACCOUNT_ID)
    started = time.perf_counter()
    for region in REGIONS:
        seed(region, now)
    print(f"seeded {len(REGIONS)} regions in {time.perf_counter() - started:.1f} s")

    session = boto3.Session()
    counter = ApiCallCounter().attach(session)
    started = time.perf_counter()
    scan = run_scan(account, now, regions=REGIONS, session=session)
    wall = time.perf_counter() - started
    n = scan.resources_scanned
    print(f"resources scanned: {n} in {len(REGIONS)} regions, detections: {len(scan.detections)}")
    print(f"wall time (no injected latency): {wall:.2f} s, status {scan.status}")
    print(f"API calls: {counter.total()} = {counter.per_thousand(n):.1f} per 1,000 resources")
    by_service: dict[str, int] = {}
    for operation, calls in counter.by_operation().items():
        service = operation.split(".", 1)[0]
        by_service[service] = by_service.get(service, 0) + calls
    for service, calls in sorted(by_service.items()):
        print(f"  {service:28s} {calls:4d} calls  {1000 * calls / n:6.2f} per 1,000 resources")
    for operation, calls in counter.by_operation().items():
        print(f"    {operation:50s} {calls:4d}")

    def latency_session() -> boto3.Session:
        slow = boto3.Session()

        def sleep(**_: Any) -> None:
            time.sleep(LATENCY_SECONDS)

        slow.events.register("before-send", sleep)
        return slow

    timings = {}
    for label, workers in (("one region after another", 1), ("concurrent regions", 8)):
        started = time.perf_counter()
        run_scan(account, now, regions=REGIONS, session=latency_session(), max_workers=workers)
        timings[label] = time.perf_counter() - started
        print(
            f"wall time with {LATENCY_SECONDS * 1000:.0f} ms/call, {label}: {timings[label]:.2f} s"
        )
    speedup = timings["one region after another"] / timings["concurrent regions"]
    print(f"speed-up of concurrent regions: {speedup:.1f}x")


if __name__ == "__main__":
    main()
