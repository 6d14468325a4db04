"""The Azure scanner: rules on their own, then the real SDK clients against the simulated tenant."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from cloudwaste_pipeline import api
from cloudwaste_pipeline.accounts import Account
from cloudwaste_pipeline.defs.resources import CloudResource
from cloudwaste_pipeline.scanning import azure
from cloudwaste_pipeline.scanning.model import Resource, summarize_inventory
from cloudwaste_pipeline.scanning.rules import CONFIDENCE_LEVELS
from cloudwaste_pipeline.scanning.rules_azure import (
    DEFAULT_THRESHOLDS,
    RULES,
    Thresholds,
    detect,
    rules_markdown,
)
from cloudwaste_pipeline.simulation.azure_estate import (
    DEMO_SUBSCRIPTIONS,
    AzureSubscription,
    TenantSpec,
    expected_detections,
    plan_tenant,
)
from cloudwaste_pipeline.simulation.azure_fake import FakeAzure

NOW = datetime(2026, 11, 16, 1, tzinfo=UTC)
FORBIDDEN = AzureSubscription(
    "contoso-locked",
    "9c3f6e4a-0d5f-4a71-9c2d-3e4f5a6b7c8d",
    DEMO_SUBSCRIPTIONS[0].tenant_id,
    "user-2003",
    ("uksouth",),
)
SPEC = TenantSpec(now=NOW, units_per_region=12, subscriptions=(*DEMO_SUBSCRIPTIONS, FORBIDDEN))
PAGE_SIZE = 250


def account_of(subscription: AzureSubscription) -> Account:
    return Account(
        name=subscription.alias,
        provider="azure",
        owner_user_id=subscription.owner_user_id,
        tenant_id=subscription.tenant_id,
        subscription_id=subscription.subscription_id,
        workspace_id=subscription.workspace_id,
    )


@pytest.fixture(scope="module")
def tenant_scan():
    """One scan of a 1,000+ resource tenant: small pages, one 429 per API, one forbidden sub."""
    plan = plan_tenant(SPEC)
    fake = FakeAzure(
        plan,
        NOW,
        page_size=PAGE_SIZE,
        forbidden={FORBIDDEN.subscription_id},
        throttle={"resourcegraph": 1, "metrics": 1},
    )
    with fake.serving():
        clients = azure.AzureClients()
        scans = azure.scan_subscriptions(
            [account_of(s) for s in SPEC.subscriptions], NOW, clients=clients
        )
    return plan, fake, clients, scans


def _found(scans) -> dict[str, str]:
    return {
        d["resource_id"].lower(): d["detection_scenario"]
        for scan in scans.values()
        for d in scan.detections
    }


def test_tenant_is_large_enough_and_spans_subscriptions(tenant_scan) -> None:
    plan, _, _, scans = tenant_scan
    readable = [r for r in plan if r.subscription is not FORBIDDEN]
    assert len(readable) >= 1000
    assert len({r.subscription.alias for r in readable}) >= 2
    for subscription in DEMO_SUBSCRIPTIONS:
        planned = sum(1 for r in plan if r.subscription is subscription)
        # Every row of every page arrived, none twice.
        assert scans[subscription.alias].resources_scanned == planned


def test_every_planted_waste_is_found_with_its_scenario(tenant_scan) -> None:
    plan, _, _, scans = tenant_scan
    expected = {
        rid: scenario
        for rid, scenario in expected_detections(plan).items()
        if f"/subscriptions/{FORBIDDEN.subscription_id}/" not in rid
    }
    found = _found(scans)
    assert set(Counter(expected.values())) == {rule.scenario for rule in RULES}
    missing = {rid: s for rid, s in expected.items() if found.get(rid) != s}
    assert missing == {}


def test_no_healthy_resource_is_flagged(tenant_scan) -> None:
    plan, _, _, scans = tenant_scan
    healthy = {r.resource_id.lower() for r in plan if r.expected is None}
    assert len(healthy) > 400
    assert healthy & set(_found(scans)) == set()


def test_inventory_is_paged_and_throttling_is_retried(tenant_scan) -> None:
    plan, fake, clients, scans = tenant_scan
    assert fake.throttled == {"resourcegraph": 1, "metrics": 1}
    # The joint query is refused (forbidden subscription): each subscription alone, paged.
    pages = sum(
        math.ceil(sum(1 for r in plan if r.subscription is s) / PAGE_SIZE)
        for s in DEMO_SUBSCRIPTIONS
    )
    assert pages >= 4
    assert fake.calls["resourcegraph"] == 1 + 1 + pages + 1  # 429, joint 403, pages, forbidden
    for subscription in DEMO_SUBSCRIPTIONS:
        assert scans[subscription.alias].status == "complete"
    # The client-side counter saw what the service saw (tokens aside).
    served = sum(n for route, n in fake.calls.items() if route != "token")
    assert clients.counter.total() == served


def test_forbidden_subscription_is_a_partial_scan_without_its_id(tenant_scan) -> None:
    _, _, _, scans = tenant_scan
    scan = scans[FORBIDDEN.alias]
    assert scan.status == "partial"
    assert scan.resources_scanned == 0
    [error] = scan.errors
    assert (error.service, error.error_code) == ("resourcegraph", "AuthorizationFailed")
    assert FORBIDDEN.subscription_id not in error.message
    assert "authorization" in error.message.lower()


def test_metric_batches_and_stop_time_lookups_scale_with_vms_not_resources(tenant_scan) -> None:
    plan, fake, _, _ = tenant_scan
    running: Counter[tuple[str, str]] = Counter()
    for r in plan:
        power = (r.row.get("properties") or {}).get("extended", {})
        if r.subscription is not FORBIDDEN and "running" in str(power):
            running[(r.subscription.alias, r.row["location"])] += 1
    batches = sum(math.ceil(n / azure.MAX_RESOURCES_PER_BATCH) for n in running.values())
    assert fake.calls["metrics"] == batches + 1  # + the throttled attempt
    # Stop times: one Activity Log query for the subscription with a workspace; the instance
    # view only for stopped VMs the log cannot answer (no workspace, or older than 90 days).
    horizon = NOW - timedelta(days=azure.ACTIVITY_LOOKBACK_DAYS)
    unanswered = sum(
        1
        for r in plan
        if r.stopped_at is not None
        and r.subscription is not FORBIDDEN
        and (r.subscription.workspace_id is None or r.stopped_at < horizon)
    )
    assert fake.calls["logs"] == 1
    assert 0 < unanswered == fake.calls["instance_view"]


def test_detections_carry_the_shared_fields(tenant_scan) -> None:
    _, _, _, scans = tenant_scan
    detections = [d for scan in scans.values() for d in scan.detections]
    assert {d["provider"] for d in detections} == {"azure"}
    assert {d["confidence_level"] for d in detections} <= set(CONFIDENCE_LEVELS)
    assert len({d["confidence_level"] for d in detections}) >= 3
    for d in detections:
        assert d["cost_source"].startswith("azure-price-")
        assert d["cost_monthly"] >= 0
        assert d["cost_real_reason"] == azure.REASON_NO_REAL_COST
        assert d["region"] == d["region"].lower()
        assert d["reason"]
    idle = [d for d in detections if d["detection_scenario"] == "idle_vm"]
    assert idle and all(d["attrs"]["cpu_p95_percent"] < 5 for d in idle)
    assert all(len(d["metrics"]["Percentage CPU P95"]) == 30 for d in idle)
    disks = [d for d in detections if d["detection_scenario"] == "attached_to_stopped_vm"]
    assert all(d["parent_type"] == "virtual_machine" and d["parent_id"] for d in disks)


def test_scan_by_alias_through_the_api_and_the_resource(tmp_path: Path, monkeypatch) -> None:
    subscription = DEMO_SUBSCRIPTIONS[1]
    spec = TenantSpec(now=NOW, units_per_region=1, subscriptions=(subscription,))
    plan = plan_tenant(spec)
    accounts_file = tmp_path / "accounts.yaml"
    accounts_file.write_text(yaml.safe_dump({"accounts": [subscription.accounts_entry()]}))
    monkeypatch.setenv("CLOUDWASTE_NOW", NOW.isoformat())
    with FakeAzure(plan, NOW).serving():
        frame = api.scan(
            provider="azure", account=subscription.alias, accounts_file=str(accounts_file)
        )
        by_id = api.scan(
            provider="azure", account=subscription.subscription_id, accounts_file=str(accounts_file)
        )
        resource = CloudResource(accounts_file=str(accounts_file))
        raw = resource.scan(resource.account(subscription.alias))
    expected = expected_detections(plan)
    assert (
        dict(zip(frame["resource_id"].str.lower(), frame["detection_scenario"], strict=True))
        == expected
    )
    assert len(by_id) == len(frame) and frame.attrs["errors"] == []
    assert raw.provider == "azure" and len(raw.detections) == len(expected)


# --------------------------------------------------------------------------------------------
# Rules and row mapping, without HTTP
# --------------------------------------------------------------------------------------------


def vm(state: str, since: datetime | None = None, **attrs) -> Resource:
    return Resource(
        provider="azure",
        account_id="sub",
        region="westeurope",
        resource_type="virtual_machine",
        resource_id="/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/a",
        state=state,
        state_since=since,
        config={"vm_size": "Standard_D2s_v5"},
        attrs=attrs,
    )


def scenarios(resource: Resource, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[str]:
    return [d.detection_scenario for d in detect([resource], NOW, thresholds)]


def test_vm_stop_rules_need_a_known_time_past_their_threshold() -> None:
    assert scenarios(vm("deallocated", NOW - timedelta(days=8))) == ["deallocated_vm"]
    assert scenarios(vm("deallocated", NOW - timedelta(days=6))) == []
    assert scenarios(vm("deallocated", None)) == []
    assert scenarios(vm("stopped", NOW - timedelta(days=2))) == ["stopped_vm"]
    assert scenarios(vm("stopped", NOW - timedelta(hours=12))) == []
    assert (
        scenarios(
            vm("deallocated", NOW - timedelta(days=8)), Thresholds(deallocated_vm_min_days=10)
        )
        == []
    )
    [d] = detect([vm("deallocated", NOW - timedelta(days=95))], NOW)
    assert d.confidence_level == "critical"


def idle_vm(p95: float, hours: int, network: float) -> Resource:
    days = [(NOW.date() - timedelta(days=k)).isoformat() for k in range(30, 0, -1)]
    resource = vm("running", cpu_p95_percent=p95, cpu_hours=hours)
    resource.metrics = {
        "Percentage CPU P95": [(d, p95) for d in days],
        "Network In Total": [(d, network) for d in days],
        "Network Out Total": [(d, network) for d in days],
    }
    return resource


def test_idle_vm_needs_low_p95_low_network_and_enough_data() -> None:
    assert scenarios(idle_vm(2.0, 336, 1e5)) == ["idle_vm"]
    assert scenarios(idle_vm(6.0, 336, 1e5)) == []
    assert scenarios(idle_vm(2.0, 336, 3e6)) == []  # 6 MB a day in+out
    assert scenarios(idle_vm(2.0, 200, 1e5)) == []  # 60% of the hours: not enough to judge
    [d] = detect([idle_vm(2.0, 336, 1e5)], NOW)
    assert d.confidence_level == "critical"  # quiet on all 30 days of the window


def row(kind: str, name: str, **fields) -> dict:
    return {
        "id": f"/subscriptions/sub/resourceGroups/rg/providers/{kind}/{name}",
        "name": name,
        "type": kind.lower(),
        "location": "westeurope",
        "subscriptionId": "sub",
        **fields,
    }


def test_rows_link_disks_to_their_vm_and_cost_a_deallocated_vm_once() -> None:
    disk = row(
        "Microsoft.Compute/disks",
        "d1",
        sku={"name": "Premium_LRS"},
        managedBy="/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v1",
        properties={"diskSizeGB": 128, "diskState": "Reserved"},
    )
    machine = row(
        "Microsoft.Compute/virtualMachines",
        "v1",
        properties={
            "hardwareProfile": {"vmSize": "Standard_D4s_v5"},
            "storageProfile": {"osDisk": {"managedDisk": {"id": disk["id"].upper()}}},
            "extended": {"instanceView": {"powerState": {"code": "PowerState/deallocated"}}},
        },
    )
    stopped = NOW - timedelta(days=40)
    resources = azure.to_resources([disk, machine], "sub", {machine["id"].lower(): stopped})
    by_type = {r.resource_type: r for r in resources}
    d, v = by_type["managed_disk"], by_type["virtual_machine"]
    assert (d.parent_state, d.attrs["parent_stopped_since"]) == ("deallocated", stopped)
    assert d.config["disk_tier"] == "P10" and d.cost_monthly > 0
    assert v.state_since == stopped and v.cost_monthly == d.cost_monthly
    scan = summarize_inventory("azure", "sub", NOW.date(), NOW, resources, detect(resources, NOW))
    assert scan.total_cost_monthly == pytest.approx(d.cost_monthly)
    assert {x["detection_scenario"] for x in scan.detections} == {
        "deallocated_vm",
        "attached_to_stopped_vm",
    }


def test_ips_plans_and_balancers_in_use_are_not_waste() -> None:
    rows = [
        row("Microsoft.Network/publicIPAddresses", "nat-ip", sku={"name": "Standard"},
            properties={"natGateway": {"id": "/subscriptions/sub/x/natGateways/n"}}),
        row("Microsoft.Network/publicIPAddresses", "free-ip", sku={"name": "Standard"}),
        row("Microsoft.Web/serverfarms", "free-plan", sku={"name": "F1", "tier": "Free"},
            properties={"numberOfSites": 0}),
        row("Microsoft.Web/serverfarms", "basic-plan", sku={"name": "B1", "tier": "Basic"},
            properties={"numberOfSites": 0}),
        row("Microsoft.Network/loadBalancers", "lb", sku={"name": "Standard"},
            properties={"backendAddressPools": [
                {"properties": {"loadBalancerBackendAddresses": [{"name": "a"}]}}
            ]}),
    ]  # fmt: skip
    found = {
        d.resource.name: d.detection_scenario
        for d in detect(azure.to_resources(rows, "sub", {}), NOW)
    }
    assert found == {"free-ip": "unassociated_ip", "basic-plan": "empty_plan"}


def test_rule_table_documents_every_scenario_with_its_thresholds() -> None:
    table = rules_markdown(Thresholds(idle_vm_days=21))
    for rule in RULES:
        assert f"| {rule.resource_type} | {rule.scenario} |" in table
    assert "last 21 complete UTC days" in table


def test_endpoints_follow_the_sovereign_cloud_settings(monkeypatch) -> None:
    default = azure.Endpoints()
    assert default.metrics_for("eastus") == "https://eastus.metrics.monitor.azure.com"
    assert default.metrics_audience == "https://metrics.monitor.azure.com"
    assert default.arm_scope == "https://management.azure.com/.default"
    monkeypatch.setenv("CLOUDWASTE_AZURE_ARM_ENDPOINT", "https://management.usgovcloudapi.net")
    monkeypatch.setenv(
        "CLOUDWASTE_AZURE_METRICS_ENDPOINT", "https://{region}.metrics.monitor.azure.us"
    )
    gov = azure.Endpoints.from_env()
    assert gov.arm_scope == "https://management.usgovcloudapi.net/.default"
    assert gov.metrics_audience == "https://metrics.monitor.azure.us"
    assert gov.logs == default.logs
