"""Benchmark of the AWS scanner against a moto server: wall time, API calls, concurrent regions.

Run with ``python -m benchmarks.scan_aws [--latency-ms 50]`` (not part of the test suite). It seeds
an estate of about 2,000 resources in 4 regions and scans it against moto to count API calls per
1,000 resources by service. Then it measures what region concurrency buys when every call costs a
real round trip. Against moto that is hard to see: moto runs in this process and spends more CPU
per call (rendering 100 instances takes it ~0.2 s) than AWS's latency, and that CPU is serialised
by the GIL whatever the scanner does. So the scan's HTTP responses are recorded once and replayed
from a botocore ``before-send`` handler that sleeps ``--latency-ms`` per call and sends nothing:
the scanner does all its own work (signing, parsing, building, detecting) while the server costs
only the latency, as AWS's servers are someone else's CPU. Both are timed (best of ``--repeat``)
three ways: one call after another (the predecessor's way), regions one after another (calls of a
region together), and the default (regions and calls together). It prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from typing import Any

REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-southeast-1")
INSTANCES_PER_REGION = 100  # each brings a root volume
VOLUMES_PER_REGION = 260
ADDRESSES_PER_REGION = 40
ACCOUNT_ID = "123456789012"
_SCOPE = re.compile(r"Credential=[^/]+/\d+/([a-z0-9-]+)/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=50.0, help="injected per call")
    parser.add_argument("--repeat", type=int, default=3, help="timings keep the best of these")
    args = parser.parse_args()

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
        run(args.latency_ms / 1000, args.repeat)
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


class _Body:
    """The ``raw`` of a botocore ``AWSResponse``: a recorded body, streamed once."""

    def __init__(self, content: bytes) -> None:
        self.content = content

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.content


class Replay:
    """Answers each request from a recording of moto's answer, after ``latency`` seconds.

    A ``before-send`` handler that returns a response short-circuits botocore's HTTP send, so
    everything on the client side runs as usual. Requests are keyed by region, URL, the operation
    header and body; the first sight of a key is sent to moto (recording), later ones are replayed.
    """

    def __init__(self) -> None:
        import urllib3

        self._http = urllib3.PoolManager(maxsize=16)
        self._recorded: dict[tuple[str, ...], tuple[int, dict[str, str], bytes]] = {}
        self._lock = threading.Lock()
        self.misses = 0

    def session(self, latency: float) -> Any:
        import boto3

        session = boto3.Session()
        session.events.register("before-send", lambda request, **_: self.answer(request, latency))
        return session

    def answer(self, request: Any, latency: float) -> Any:
        from botocore.awsrequest import AWSResponse

        body = request.body or b""
        body = body.encode() if isinstance(body, str) else bytes(body)
        scope = _SCOPE.search(str(request.headers.get("Authorization", "")))
        target = str(request.headers.get("X-Amz-Target", ""))
        key = (scope.group(1) if scope else "", request.url, target, body.decode("latin-1"))
        with self._lock:
            recorded = self._recorded.get(key)
        if recorded is None:
            sent = self._http.request(
                request.method, request.url, body=body, headers=dict(request.headers)
            )
            recorded = (sent.status, dict(sent.headers), sent.data)
            with self._lock:
                self._recorded[key] = recorded
                self.misses += 1
        time.sleep(latency)
        status, headers, content = recorded
        return AWSResponse(request.url, status, headers, _Body(content))


def run(latency: float, repeat: int) -> None:
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
    print(f"wall time against moto (no injected latency): {wall:.2f} s, status {scan.status}")
    print(f"API calls: {counter.total()} = {counter.per_thousand(n):.1f} per 1,000 resources")
    by_service: dict[str, int] = {}
    for operation, calls in counter.by_operation().items():
        service = operation.split(".", 1)[0]
        by_service[service] = by_service.get(service, 0) + calls
    for service, calls in sorted(by_service.items()):
        print(f"  {service:28s} {calls:4d} calls  {1000 * calls / n:6.2f} per 1,000 resources")
    for operation, calls in counter.by_operation().items():
        print(f"    {operation:50s} {calls:4d}")

    replay = Replay()
    # (label, regions at once, calls at once within a region)
    modes = (
        ("one call after another", 1, 1),
        ("regions one after another", 1, 8),
        ("concurrent (the default)", 8, 8),
    )

    def timed(label: str, session: Any, workers: int, calls: int) -> float:
        """The best of ``repeat`` scans, as timeit does: noise only ever adds time."""
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            found = run_scan(
                account, now, regions=REGIONS, session=session, max_workers=workers,
                calls_at_once=calls,
            )  # fmt: skip
            times.append(time.perf_counter() - started)
            assert found.resources_scanned == n, "the replayed scan must see the same estate"
        print(f"  {label:28s} {min(times):6.2f} s (best of {repeat})")
        return min(times)

    def report(times: list[float]) -> None:
        print(
            f"  speed-up of the default: {times[0] / times[2]:.1f}x over one call after another,"
            f" {times[1] / times[2]:.1f}x over regions one after another"
        )

    ms = f"{latency * 1000:.0f} ms/call"

    def slow_moto() -> Any:
        slow = boto3.Session()
        slow.events.register("before-send", lambda **_: time.sleep(latency))
        return slow

    print(f"against moto with {ms} (moto's CPU is serialised with the scanner's):")
    report([timed(label, slow_moto(), *concurrency) for label, *concurrency in modes])

    replay_session = replay.session(0.0)
    run_scan(account, now, regions=REGIONS, session=replay_session)  # records every response
    print(f"replayed responses with {ms}, as against AWS ({replay.misses} responses recorded):")
    report([timed(label, replay.session(latency), *concurrency) for label, *concurrency in modes])
    print("replayed with no latency (the scanner's own CPU time):")
    timed("one call after another", replay.session(0.0), 1, 1)


if __name__ == "__main__":
    main()
