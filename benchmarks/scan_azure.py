"""Benchmark of the Azure scanner against the simulated tenant: HTTP calls and wall time.

Run with ``python -m benchmarks.scan_azure [--units 20] [--latency-ms 50]`` (not part of the test
suite). The real SDK clients scan a tenant of several subscriptions (about 30 resources per unit
and region) served by ``simulation.azure_fake`` over HTTPS on loopback, each answer delayed by
``--latency-ms`` as a remote service would be. The fake runs in a process of its own, so its
CPU (generating and encoding 720 hourly points per VM metric) is not charged to the scanner, as
Azure's servers are someone else's CPU. It scans the tenant twice: once with one inventory
query for every subscription (``scan_subscriptions``, the API and benchmark path) and once
subscription by subscription (how the Dagster partitions run), and prints HTTP calls per 1,000
resources by call group and the wall time of each. It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection

from cloudwaste_pipeline.accounts import Account
from cloudwaste_pipeline.scanning import azure
from cloudwaste_pipeline.simulation.azure_estate import (
    DEMO_TENANT_ID,
    AzureSubscription,
    TenantSpec,
    hourly_metric,
    plan_tenant,
)
from cloudwaste_pipeline.simulation.azure_fake import FakeAzure

NOW = datetime(2026, 11, 16, 1, tzinfo=UTC)
SUBSCRIPTIONS = tuple(
    AzureSubscription(
        f"bench-{i}",
        f"00000000-0000-4000-8000-{i:012d}",
        DEMO_TENANT_ID,
        f"user-{i}",
        ("westeurope", "eastus"),
        workspace_id=f"11111111-0000-4000-8000-{i:012d}" if i % 2 == 0 else None,
    )
    for i in range(4)
)


def account(subscription: AzureSubscription) -> Account:
    return Account(
        name=subscription.alias,
        provider="azure",
        owner_user_id=subscription.owner_user_id,
        tenant_id=subscription.tenant_id,
        subscription_id=subscription.subscription_id,
        workspace_id=subscription.workspace_id,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=20, help="template units per region")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="added to every answer")
    args = parser.parse_args()

    spec = TenantSpec(now=NOW, units_per_region=args.units, subscriptions=SUBSCRIPTIONS)
    plan = plan_tenant(spec)
    accounts = [account(s) for s in SUBSCRIPTIONS]
    print(
        f"tenant: {len(plan):,} resources in {len(SUBSCRIPTIONS)} subscriptions x 2 regions, "
        f"{args.latency_ms:g} ms per answer"
    )
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    server = context.Process(target=serve, args=(spec, args.latency_ms / 1000, child), daemon=True)
    server.start()
    os.environ.update(parent.recv())
    try:
        for label, groups in (
            ("one query for all subscriptions", [accounts]),
            ("subscription by subscription", [[a] for a in accounts]),
        ):
            clients = azure.AzureClients()
            clients.credential.get_token(clients.endpoints.arm_scope)  # not part of the scan
            started = time.perf_counter()
            scanned = detections = 0
            for group in groups:
                for scan in azure.scan_subscriptions(group, NOW, clients=clients).values():
                    scanned += scan.resources_scanned
                    detections += len(scan.detections)
            elapsed = time.perf_counter() - started
            by_group = ", ".join(f"{k} {v}" for k, v in sorted(clients.counter.calls.items()))
            print(
                f"{label}: {elapsed:.1f} s for {scanned:,} resources ({detections:,} detections); "
                f"{clients.counter.total()} HTTP calls = "
                f"{clients.counter.per_thousand(scanned):.1f} per 1,000 resources ({by_group})"
            )
    finally:
        parent.send("stop")
        server.join(timeout=30)


def serve(spec: TenantSpec, latency: float, connection: Connection) -> None:
    """The fake tenant, in its own process, until the parent says stop."""
    plan = plan_tenant(spec)
    start = NOW.replace(hour=0) - timedelta(days=azure.METRIC_WINDOW_DAYS)
    for resource in plan:  # draw every metric once, before the clock starts
        if resource.usage:
            for metric in azure.VM_METRICS:
                hourly_metric(spec.seed, resource, metric, start, 24 * azure.METRIC_WINDOW_DAYS)
    fake = FakeAzure(plan, NOW, latency=latency)
    with fake.serving():
        names = [name for name in os.environ if name.startswith(("CLOUDWASTE_AZURE_", "IDENTITY_"))]
        connection.send({name: os.environ[name] for name in [*names, "REQUESTS_CA_BUNDLE"]})
        connection.recv()


if __name__ == "__main__":
    main()
