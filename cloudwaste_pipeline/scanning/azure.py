"""Read Azure subscriptions' inventory through Resource Graph and Azure Monitor, and scan them.

The predecessor walked each resource with its own ARM call. Here the whole inventory of any
number of subscriptions comes from one Resource Graph query (``INVENTORY_QUERY``, paged with skip
tokens), metrics from ``MetricsClient`` batches of up to 50 VMs per call, and VM stop times from
one Activity Log query per Log Analytics workspace (``LogsQueryClient``), with the instance view
(one ARM call per stopped VM the log did not answer) as the fallback. Calls scale with
subscriptions, regions and stopped VMs, not with the estate: ``HttpCallCounter`` measures that.

Everything only reads, with azure-identity's ``DefaultAzureCredential`` (environment, workload or
managed identity, Azure CLI...). The ARM, Monitor metrics and Log Analytics endpoints come from
``Endpoints`` (``CLOUDWASTE_AZURE_*_ENDPOINT``), which is how sovereign clouds are reached and how
the simulated tenant (``simulation.azure_fake``) serves the real SDK clients. azure-core's retry
policy honours ``429`` and ``Retry-After``. A call group that still fails (a forbidden
subscription, a workspace without access, a region's metrics) is recorded as a ``ScanError`` with
its message scrubbed of ids, and the rest of the scan goes on: a ``partial`` scan, as for AWS.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline.policies import SansIOHTTPPolicy

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.accounts import Account
from cloudwaste_pipeline.privacy.anonymize import scrub_text
from cloudwaste_pipeline.scanning import pricing_azure as pricing
from cloudwaste_pipeline.scanning.model import RawScan, Resource, ScanError, summarize_inventory
from cloudwaste_pipeline.scanning.rules_azure import (
    CPU_P95,
    DEFAULT_THRESHOLDS,
    NETWORK_IN,
    NETWORK_OUT,
    Thresholds,
    detect,
)

PROVIDER = "azure"
# Detections carry the list-price estimate only: Cost Management's actual costs are not read.
REASON_NO_REAL_COST = "Azure Cost Management is not read"
GLOBAL = "global"  # the "region" of errors that are not about one region

# ARM type (lower-case) -> our resource type. The one query lists all of them.
RESOURCE_TYPES = {
    "microsoft.compute/disks": "managed_disk",
    "microsoft.compute/snapshots": "disk_snapshot",
    "microsoft.compute/virtualmachines": "virtual_machine",
    "microsoft.network/publicipaddresses": "public_ip",
    "microsoft.network/loadbalancers": "load_balancer",
    "microsoft.network/natgateways": "nat_gateway",
    "microsoft.web/serverfarms": "app_service_plan",
}
INVENTORY_QUERY = (
    "resources"
    f" | where type in~ ({', '.join(repr(t) for t in RESOURCE_TYPES)})"
    " | project id, name, type = tolower(type), location, subscriptionId, tags, sku, managedBy,"
    " properties"
    " | order by id asc"  # a stable order, so skip tokens page through a fixed sequence
)
PAGE_SIZE = 1000  # Resource Graph's maximum rows per page

# VM stop and deallocation in the Activity Log; the last successful one is when the VM stopped.
STOP_OPERATIONS = (
    "MICROSOFT.COMPUTE/VIRTUALMACHINES/DEALLOCATE/ACTION",
    "MICROSOFT.COMPUTE/VIRTUALMACHINES/POWEROFF/ACTION",
)
ACTIVITY_QUERY = (
    "AzureActivity"
    f" | where OperationNameValue in~ ({', '.join(repr(o) for o in STOP_OPERATIONS)})"
    " | where ActivityStatusValue in~ ('Success', 'Succeeded')"
    " | summarize stopped_at = max(TimeGenerated) by resource_id = tolower(_ResourceId)"
)
ACTIVITY_LOOKBACK_DAYS = 90  # the Activity Log's own retention
INSTANCE_VIEW_API_VERSION = "2024-07-01"

VM_NAMESPACE = "Microsoft.Compute/virtualMachines"
VM_METRICS = ("Percentage CPU", "Network In Total", "Network Out Total")
METRIC_WINDOW_DAYS = 30
METRICS_API_VERSION = "2024-02-01"  # metrics:getBatch, as MetricsClient 1.0 calls it
MAX_RESOURCES_PER_BATCH = 50  # the metrics:getBatch limit on resource ids
MAX_WORKERS = 8  # metric batches and instance views in flight at once

# azure-core's RetryPolicy backs off exponentially, and sleeps for Retry-After when a 429/503
# says so; 8 attempts ride out Resource Graph's 15-queries-per-5-seconds quota.
RETRY = {"retry_total": 8, "retry_backoff_factor": 0.8, "retry_backoff_max": 60}


@dataclass(frozen=True)
class Endpoints:
    """Where the SDK clients go: Azure's public cloud by default, a sovereign cloud or a fake."""

    arm: str = "https://management.azure.com"
    metrics: str = "https://{region}.metrics.monitor.azure.com"  # regional; {region} optional
    logs: str = "https://api.loganalytics.io"

    @classmethod
    def from_env(cls) -> Endpoints:
        """``CLOUDWASTE_AZURE_ARM_ENDPOINT``, ``..._METRICS_ENDPOINT``, ``..._LOGS_ENDPOINT``.

        US Government: ``https://management.usgovcloudapi.net``,
        ``https://{region}.metrics.monitor.azure.us``, ``https://api.loganalytics.us``.
        """
        default = cls()
        return cls(
            arm=settings.get("CLOUDWASTE_AZURE_ARM_ENDPOINT") or default.arm,
            metrics=settings.get("CLOUDWASTE_AZURE_METRICS_ENDPOINT") or default.metrics,
            logs=settings.get("CLOUDWASTE_AZURE_LOGS_ENDPOINT") or default.logs,
        )

    @property
    def arm_scope(self) -> str:
        return self.arm.rstrip("/") + "/.default"

    @property
    def metrics_audience(self) -> str:
        """The token audience is the endpoint without its region: metrics.monitor.azure.com."""
        return self.metrics.replace("{region}.", "").rstrip("/")

    def metrics_for(self, region: str) -> str:
        return self.metrics.format(region=region)


class HttpCallCounter(SansIOHTTPPolicy):
    """Counts HTTP requests per call group, each retry included, for calls-per-1,000 figures.

    Installed as a per-retry policy on every client, so a request retried after a 429 counts
    twice: the figure is what the service saw. Token requests are not counted (they are cached).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()

    def on_request(self, request: Any) -> None:
        url = request.http_request.url.lower()
        if "/microsoft.resourcegraph/" in url:
            group = "resourcegraph"
        elif "metrics:getbatch" in url:
            group = "metrics"
        elif "/workspaces/" in url:
            group = "logs"
        elif "/instanceview" in url:
            group = "instance_view"
        else:
            group = "other"
        with self._lock:
            self.calls[group] += 1

    def total(self) -> int:
        with self._lock:
            return sum(self.calls.values())

    def per_thousand(self, resource_count: int) -> float:
        return 1000 * self.total() / max(resource_count, 1)


class AzureClients:
    """The SDK clients of one scan, built on first use and shared by its threads.

    ``credential`` defaults to ``DefaultAzureCredential``; pass ``transport`` (an azure-core
    ``HttpTransport``) only to run the clients over something other than ``requests``.
    """

    def __init__(
        self,
        credential: Any | None = None,
        endpoints: Endpoints | None = None,
        counter: HttpCallCounter | None = None,
        **client_kwargs: Any,
    ) -> None:
        self.endpoints = endpoints or Endpoints.from_env()
        self.counter = counter or HttpCallCounter()
        self._credential = credential
        self._kwargs = {**RETRY, **client_kwargs, "per_retry_policies": [self.counter]}
        self._lock = threading.Lock()
        self._graph: Any = None
        self._arm: Any = None
        self._logs: Any = None
        self._metrics: dict[str, Any] = {}

    @property
    def credential(self) -> Any:
        with self._lock:
            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            return self._credential

    def graph(self) -> Any:
        from azure.mgmt.resourcegraph import ResourceGraphClient

        credential = self.credential
        with self._lock:
            if self._graph is None:
                self._graph = ResourceGraphClient(
                    credential,
                    base_url=self.endpoints.arm,
                    credential_scopes=[self.endpoints.arm_scope],
                    **self._kwargs,
                )
            return self._graph

    def arm(self) -> Any:
        """A bare ARM pipeline (auth, retries, counting) for the instance view GET."""
        from azure.core import PipelineClient
        from azure.core.pipeline import policies
        from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

        credential = self.credential
        with self._lock:
            if self._arm is None:
                kwargs = dict(self._kwargs)
                kwargs.pop("per_retry_policies")
                self._arm = PipelineClient(
                    base_url=self.endpoints.arm,
                    policies=[
                        policies.HeadersPolicy(),
                        policies.UserAgentPolicy("cloudwaste-scanner"),
                        policies.RetryPolicy(**kwargs),
                        ARMChallengeAuthenticationPolicy(credential, self.endpoints.arm_scope),
                        self.counter,
                    ],
                )
            return self._arm

    def metrics(self, region: str) -> Any:
        from azure.monitor.querymetrics import MetricsClient

        credential = self.credential
        with self._lock:
            if region not in self._metrics:
                self._metrics[region] = MetricsClient(
                    self.endpoints.metrics_for(region),
                    credential,
                    audience=self.endpoints.metrics_audience,
                    **self._kwargs,
                )
            return self._metrics[region]

    def logs(self) -> Any:
        from azure.monitor.query import LogsQueryClient

        credential = self.credential
        with self._lock:
            if self._logs is None:
                self._logs = LogsQueryClient(
                    credential,
                    endpoint=self.endpoints.logs,
                    audience=self.endpoints.logs,
                    **self._kwargs,
                )
            return self._logs


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def query_inventory(graph: Any, subscription_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Every candidate row of the subscriptions, page by page (skip tokens)."""
    from azure.mgmt.resourcegraph.models import QueryRequest, QueryRequestOptions

    rows: list[dict[str, Any]] = []
    skip_token = None
    while True:
        request = QueryRequest(
            subscriptions=list(subscription_ids),
            query=INVENTORY_QUERY,
            options=QueryRequestOptions(
                top=PAGE_SIZE, skip_token=skip_token, result_format="objectArray"
            ),
        )
        response = graph.resources(request)
        rows.extend(response.data or [])
        skip_token = response.skip_token
        if not skip_token:
            return rows


def read_inventories(
    graph: Any, subscription_ids: Sequence[str]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, ScanError]]:
    """Rows per subscription (lower-case id) from one query for all; errors per subscription.

    When the joint query is refused (one forbidden subscription fails the whole request), each
    subscription is queried alone, so only the forbidden ones are lost.
    """
    wanted = [s.lower() for s in subscription_ids]
    by_subscription: dict[str, list[dict[str, Any]]] = {s: [] for s in wanted}
    errors: dict[str, ScanError] = {}
    groups = [wanted]
    while groups:
        group = groups.pop()
        try:
            rows = query_inventory(graph, group)
        except AzureError as exc:
            if len(group) > 1 and _is_access_error(exc):
                groups.extend([s] for s in group)
                continue
            for subscription in group:
                errors[subscription] = _scan_error(GLOBAL, "resourcegraph", exc)
            continue
        for row in rows:
            subscription = str(row.get("subscriptionId", "")).lower()
            if subscription in by_subscription:
                by_subscription[subscription].append(row)
    return by_subscription, errors


def read_activity_stop_times(logs: Any, workspace_id: str, now: datetime) -> dict[str, datetime]:
    """When each VM last stopped or was deallocated, per lower-case resource id (one query)."""
    from azure.monitor.query import LogsQueryStatus

    start = now - timedelta(days=ACTIVITY_LOOKBACK_DAYS)
    result = logs.query_workspace(workspace_id, ACTIVITY_QUERY, timespan=(start, now))
    if result.status == LogsQueryStatus.PARTIAL:
        raise HttpResponseError(message=f"partial Activity Log result: {result.partial_error}")
    tables = result.tables
    times: dict[str, datetime] = {}
    for table in tables:
        columns = list(table.columns)
        rid, at = columns.index("resource_id"), columns.index("stopped_at")
        for row in table.rows:
            stamp = row[at]
            if isinstance(stamp, str):
                stamp = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            if stamp is not None:
                times[str(row[rid]).lower()] = _utc(stamp)
    return times


def read_instance_view_time(arm: Any, vm_id: str) -> datetime | None:
    """The instance view's last successful operation time: for a stopped VM, its stop."""
    from azure.core.rest import HttpRequest

    request = HttpRequest(
        "GET",
        arm.format_url(f"{vm_id}/instanceView"),
        params={"api-version": INSTANCE_VIEW_API_VERSION},
    )
    response = arm.send_request(request)
    if response.status_code != 200:
        raise HttpResponseError(response=response)
    for status in response.json().get("statuses") or []:
        code = str(status.get("code", ""))
        if code.startswith("ProvisioningState/") and status.get("time"):
            return _parse_time(status["time"])
    return None


def read_vm_metrics(
    metrics_client: Any, vm_ids: Sequence[str], now: datetime
) -> dict[str, dict[str, list[tuple[datetime, float]]]]:
    """Hourly points per lower-case VM id and metric, for up to 50 VMs of one region (one call).

    CPU is the hourly average, network the hourly total (bytes). The batch request goes through
    the ``MetricsClient``'s own pipeline (auth, retries) with ``send_request``, and the JSON is
    read directly: ``query_resources`` builds typed models at about 70 µs per data point, which
    for 50 VMs x 3 metrics x 720 hours is 8 s of CPU per call, far more than the call itself.
    """
    from azure.core.rest import HttpRequest

    end = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=METRIC_WINDOW_DAYS)
    subscription = vm_ids[0].split("/")[2]
    request = HttpRequest(
        "POST",
        f"/subscriptions/{subscription}/metrics:getBatch",
        params={
            "api-version": METRICS_API_VERSION,
            "starttime": _iso(start),
            "endtime": _iso(end),
            "interval": "PT1H",
            "metricnamespace": VM_NAMESPACE,
            "metricnames": ",".join(VM_METRICS),
            "aggregation": "average,total",
        },
        json={"resourceids": list(vm_ids)},
    )
    response = metrics_client.send_request(request)
    if response.status_code != 200:
        raise HttpResponseError(response=response)
    points: dict[str, dict[str, list[tuple[datetime, float]]]] = defaultdict(dict)
    for result in response.json().get("values") or []:
        for metric in result.get("value") or []:
            # The metric id is the resource id + /providers/Microsoft.Insights/metrics/<name>.
            owner = str(metric["id"]).lower().split("/providers/microsoft.insights/metrics")[0]
            name = (metric.get("name") or {}).get("value")
            field = "average" if name == "Percentage CPU" else "total"
            points[owner][name] = [
                (_parse_iso(point["timeStamp"]), float(point[field]))
                for series in metric.get("timeseries") or []
                for point in series.get("data") or []
                if point.get(field) is not None
            ]
    return points


# --------------------------------------------------------------------------------------------
# Rows to resources (pure)
# --------------------------------------------------------------------------------------------


def power_state(row: dict[str, Any]) -> str:
    """``running``, ``stopped``, ``deallocated``...; ``unknown`` when Resource Graph omits it."""
    properties = row.get("properties") or {}
    code = ((properties.get("extended") or {}).get("instanceView") or {}).get("powerState") or {}
    value = str(code.get("code") or "")
    return value.split("/", 1)[1].lower() if "/" in value else "unknown"


def to_resources(
    rows: Iterable[dict[str, Any]], subscription_id: str, stop_times: dict[str, datetime | None]
) -> list[Resource]:
    """Resource Graph rows of one subscription as ``Resource`` records, linked to each other.

    ``stop_times``: when each stopped or deallocated VM (lower-case id) stopped, if known.
    Disks learn their VM's state and stop time; a deallocated VM's cost is its disks' storage
    (compute stops billing), counted once in the totals; snapshots learn whether their disk exists.
    """
    rows = [r for r in rows if str(r.get("type", "")).lower() in RESOURCE_TYPES]
    vms = {r["id"].lower(): r for r in rows if r["type"].lower().endswith("/virtualmachines")}
    vm_states = {vm_id: power_state(row) for vm_id, row in vms.items()}
    disks = {r["id"].lower(): r for r in rows if r["type"].lower() == "microsoft.compute/disks"}
    resources: list[Resource] = []
    disk_costs: dict[str, tuple[float, str]] = {}
    for row in rows:
        kind = RESOURCE_TYPES[row["type"].lower()]
        if kind == "managed_disk":
            owner = (row.get("managedBy") or "").lower() or None
            resource = _disk(row, subscription_id, owner, vm_states, stop_times)
            disk_costs[row["id"].lower()] = (resource.cost_monthly, resource.cost_source)
        elif kind == "disk_snapshot":
            resource = _snapshot(row, subscription_id, disks)
        elif kind == "public_ip":
            resource = _public_ip(row, subscription_id)
        elif kind == "load_balancer":
            resource = _load_balancer(row, subscription_id)
        elif kind == "nat_gateway":
            resource = _nat_gateway(row, subscription_id)
        elif kind == "app_service_plan":
            resource = _plan(row, subscription_id)
        else:
            continue  # VMs below, once every disk's cost is known
        resources.append(resource)
    for vm_id, row in vms.items():
        resources.append(_vm(row, subscription_id, vm_states[vm_id], stop_times, disk_costs))
    return resources


def _base(row: dict[str, Any], subscription_id: str, kind: str, state: str) -> dict[str, Any]:
    return {
        "provider": PROVIDER,
        "account_id": subscription_id,
        "region": str(row.get("location") or "").lower(),
        "resource_type": kind,
        "resource_id": row["id"],
        "state": state,
        "name": row.get("name"),
        "tags": {str(k): str(v) for k, v in (row.get("tags") or {}).items()},
    }


def _props(row: dict[str, Any]) -> dict[str, Any]:
    return row.get("properties") or {}


def _sku(row: dict[str, Any]) -> dict[str, Any]:
    return row.get("sku") or {}


def _disk(
    row: dict[str, Any],
    subscription_id: str,
    owner: str | None,
    vm_states: dict[str, str],
    stop_times: dict[str, datetime | None],
) -> Resource:
    props = _props(row)
    sku = str(_sku(row).get("name") or "")
    size = props.get("diskSizeGB") or 0
    region = str(row.get("location") or "").lower()
    cost, source, tier = pricing.managed_disk_monthly(sku, size, region)
    parent_state = vm_states.get(owner) if owner else None
    return Resource(
        **_base(row, subscription_id, "managed_disk", str(props.get("diskState") or "")),
        created_at=_parse_time(props.get("timeCreated")),
        state_since=_parse_time(props.get("LastOwnershipUpdateTime")),
        config={"size_gb": size, "sku": sku, "disk_tier": props.get("tier") or tier},
        parent_id=row.get("managedBy") or None,
        parent_type="virtual_machine" if owner else None,
        parent_state=parent_state,
        cost_monthly=cost,
        cost_source=source,
        attrs={
            "parent_stopped_since": stop_times.get(owner)
            if parent_state in ("stopped", "deallocated")
            else None
        },
    )


def _snapshot(
    row: dict[str, Any], subscription_id: str, disks: dict[str, dict[str, Any]]
) -> Resource:
    props = _props(row)
    sku = str(_sku(row).get("name") or "Standard_LRS")
    size = props.get("diskSizeGB") or 0
    source_id = (props.get("creationData") or {}).get("sourceResourceId") or None
    source_row = disks.get(source_id.lower()) if source_id else None
    return Resource(
        **_base(row, subscription_id, "disk_snapshot", str(props.get("provisioningState") or "")),
        created_at=_parse_time(props.get("timeCreated")),
        config={"size_gb": size, "sku": sku},
        parent_id=source_id,
        parent_type="managed_disk" if source_id else None,
        parent_state=(
            None
            if not source_id
            else str(_props(source_row).get("diskState") or "")
            if source_row
            else "deleted"
        ),
        cost_monthly=pricing.snapshot_monthly(sku, size, str(row.get("location") or "").lower()),
        cost_source=pricing.PRICE_TABLE,
    )


def _public_ip(row: dict[str, Any], subscription_id: str) -> Resource:
    props = _props(row)
    sku = str(_sku(row).get("name") or "Basic")
    configuration = (props.get("ipConfiguration") or {}).get("id")
    nat = (props.get("natGateway") or {}).get("id")
    associated = bool(configuration or nat)
    if configuration:
        parent_id, parent_type = configuration.split("/ipConfigurations/")[0], "network_interface"
        if "/loadbalancers/" in configuration.lower():
            parent_id, parent_type = (
                configuration.split("/frontendIPConfigurations/")[0],
                ("load_balancer"),
            )
    elif nat:
        parent_id, parent_type = nat, "nat_gateway"
    else:
        parent_id, parent_type = None, None
    region = str(row.get("location") or "").lower()
    return Resource(
        **_base(row, subscription_id, "public_ip", "associated" if associated else "unassociated"),
        config={"sku": sku, "allocation_method": props.get("publicIPAllocationMethod")},
        parent_id=parent_id,
        parent_type=parent_type,
        # As for AWS: an IP in use is part of the cost of what uses it; the waste is the idle one.
        cost_monthly=0.0 if associated else pricing.public_ip_monthly(sku, region),
        cost_source=pricing.PRICE_TABLE,
    )


def _load_balancer(row: dict[str, Any], subscription_id: str) -> Resource:
    props = _props(row)
    sku = str(_sku(row).get("name") or "Basic")
    members = sum(
        len((pool.get("properties") or {}).get("backendIPConfigurations") or [])
        + len((pool.get("properties") or {}).get("loadBalancerBackendAddresses") or [])
        for pool in props.get("backendAddressPools") or []
    )
    public = any(
        (frontend.get("properties") or {}).get("publicIPAddress")
        for frontend in props.get("frontendIPConfigurations") or []
    )
    return Resource(
        **_base(row, subscription_id, "load_balancer", "active"),
        config={"lb_type": sku, "scheme": "internet-facing" if public else "internal"},
        cost_monthly=pricing.load_balancer_monthly(sku, str(row.get("location") or "").lower()),
        cost_source=pricing.PRICE_TABLE,
        attrs={"backend_members": members},
    )


def _nat_gateway(row: dict[str, Any], subscription_id: str) -> Resource:
    props = _props(row)
    return Resource(
        **_base(row, subscription_id, "nat_gateway", "active"),
        config={"connectivity_type": "public"},
        cost_monthly=pricing.nat_gateway_monthly(str(row.get("location") or "").lower()),
        cost_source=pricing.PRICE_TABLE,
        attrs={
            "subnets": len(props.get("subnets") or []),
            "public_ips": len(props.get("publicIpAddresses") or []),
        },
    )


def _plan(row: dict[str, Any], subscription_id: str) -> Resource:
    props = _props(row)
    sku = _sku(row)
    name, tier = str(sku.get("name") or ""), str(sku.get("tier") or "")
    workers = int(sku.get("capacity") or props.get("currentNumberOfWorkers") or 1)
    cost, source = pricing.app_service_plan_monthly(
        name, tier, str(row.get("location") or "").lower(), workers
    )
    return Resource(
        **_base(row, subscription_id, "app_service_plan", str(props.get("status") or "active")),
        config={"sku": name, "tier": tier},
        cost_monthly=cost,
        cost_source=source,
        attrs={"sites": props.get("numberOfSites"), "workers": workers},
    )


def _vm(
    row: dict[str, Any],
    subscription_id: str,
    state: str,
    stop_times: dict[str, datetime | None],
    disk_costs: dict[str, tuple[float, str]],
) -> Resource:
    props = _props(row)
    storage = props.get("storageProfile") or {}
    os_disk = storage.get("osDisk") or {}
    disk_ids = [
        str(((d.get("managedDisk") or {}).get("id")) or "").lower()
        for d in [os_disk, *(storage.get("dataDisks") or [])]
    ]
    vm_size = str((props.get("hardwareProfile") or {}).get("vmSize") or "")
    os_type = os_disk.get("osType")
    region = str(row.get("location") or "").lower()
    attrs: dict[str, Any] = {"attached_disks": sum(1 for d in disk_ids if d)}
    if state == "deallocated":
        # Compute stops billing; what is left is the disks' storage, counted under the disks.
        known = [disk_costs[d] for d in disk_ids if d in disk_costs]
        cost = round(sum(c for c, _ in known), 4)
        source = (
            pricing.PRICE_ESTIMATE
            if any(s == pricing.PRICE_ESTIMATE for _, s in known)
            else pricing.PRICE_TABLE
        )
        attrs["cost_counted_in_volumes"] = True
    else:
        cost, source = pricing.vm_monthly(vm_size, region, os_type)
    since = stop_times.get(row["id"].lower()) if state in ("stopped", "deallocated") else None
    if state in ("stopped", "deallocated") and since is None:
        attrs["stop_time_unknown"] = True
    return Resource(
        **_base(row, subscription_id, "virtual_machine", state),
        created_at=_parse_time(props.get("timeCreated")),
        state_since=since,
        config={"vm_size": vm_size, "os_type": os_type},
        cost_monthly=cost,
        cost_source=source,
        attrs=attrs,
    )


def attach_vm_metrics(
    vm: Resource,
    points: dict[str, list[tuple[datetime, float]]],
    now: datetime,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> None:
    """Daily series from hourly points, and the idle window's CPU P95 the idle rule reads."""
    cpu = points.get("Percentage CPU") or []
    by_day: dict[str, list[float]] = defaultdict(list)
    for moment, value in cpu:
        by_day[moment.date().isoformat()].append(value)
    vm.metrics["Percentage CPU"] = [
        (day, round(sum(values) / len(values), 4)) for day, values in sorted(by_day.items())
    ]
    vm.metrics[CPU_P95] = [(day, percentile(values, 95)) for day, values in sorted(by_day.items())]
    for name, label in (("Network In Total", NETWORK_IN), ("Network Out Total", NETWORK_OUT)):
        totals: dict[str, float] = defaultdict(float)
        for moment, value in points.get(name) or []:
            totals[moment.date().isoformat()] += value
        vm.metrics[label] = sorted(totals.items())
    end = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=thresholds.idle_vm_days)
    window = [value for moment, value in cpu if start <= moment < end]
    vm.attrs["cpu_hours"] = len(window)
    vm.attrs["cpu_p95_percent"] = percentile(window, 95) if window else None


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation (numpy's default), rounded to 4 places.

    In plain Python because it runs once per VM and day on 24 values, where numpy's per-call
    overhead is most of the scanner's CPU.
    """
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (rank - low), 4)


# --------------------------------------------------------------------------------------------
# Scanning
# --------------------------------------------------------------------------------------------


def scan_subscriptions(
    accounts: Sequence[Account],
    now: datetime,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    clients: AzureClients | None = None,
    max_workers: int = MAX_WORKERS,
) -> dict[str, RawScan]:
    """Scan several subscriptions with one inventory query; a ``RawScan`` per account name."""
    clients = clients or AzureClients()
    ids = {a.name: str(a.subscription_id).lower() for a in accounts}
    errors: dict[str, list[ScanError]] = defaultdict(list)
    try:
        inventories, refused = read_inventories(clients.graph(), list(ids.values()))
    except AzureError as exc:  # the credential itself failed: nothing could be read
        error = _scan_error(GLOBAL, "resourcegraph", exc)
        inventories, refused = {s: [] for s in ids.values()}, dict.fromkeys(ids.values(), error)
    for subscription, error in refused.items():
        errors[subscription].append(error)

    stop_times = _stop_times(accounts, inventories, now, clients, errors, max_workers)
    resources = {s: to_resources(rows, s, stop_times) for s, rows in inventories.items()}
    _attach_metrics(resources, now, thresholds, clients, errors, max_workers)

    scans = {}
    for account in accounts:
        subscription = ids[account.name]
        found = resources.get(subscription, [])
        detections = detect(found, now, thresholds)
        for detection in detections:
            detection.resource.cost_real_reason = REASON_NO_REAL_COST
        scans[account.name] = summarize_inventory(
            PROVIDER,
            str(account.subscription_id),
            now.date(),
            now,
            found,
            detections,
            sorted(errors[subscription], key=lambda e: (e.service, e.region, e.error_code)),
        )
    return scans


def run_scan(
    account: Account,
    now: datetime,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    clients: AzureClients | None = None,
) -> RawScan:
    """One subscription's scan of the day, as the raw store keeps it."""
    return scan_subscriptions([account], now, thresholds, clients)[account.name]


def _stop_times(
    accounts: Sequence[Account],
    inventories: dict[str, list[dict[str, Any]]],
    now: datetime,
    clients: AzureClients,
    errors: dict[str, list[ScanError]],
    max_workers: int,
) -> dict[str, datetime | None]:
    """Stop times of the stopped VMs: the Activity Log where a workspace is set, then the
    instance view for the VMs it did not answer."""
    stopped: dict[str, tuple[str, str]] = {}  # vm id -> (subscription, region)
    for subscription, rows in inventories.items():
        for row in rows:
            if str(row.get("type", "")).lower() == "microsoft.compute/virtualmachines" and (
                power_state(row) in ("stopped", "deallocated")
            ):
                stopped[row["id"].lower()] = (subscription, str(row.get("location", "")).lower())
    times: dict[str, datetime | None] = {}
    if not stopped:
        return times
    workspaces = defaultdict(list)
    for account in accounts:
        if account.workspace_id:
            workspaces[account.workspace_id].append(str(account.subscription_id).lower())
    for workspace, subscriptions in workspaces.items():
        try:
            found = read_activity_stop_times(clients.logs(), workspace, now)
        except AzureError as exc:
            for subscription in subscriptions:
                errors[subscription].append(_scan_error(GLOBAL, "monitor:logs", exc))
            continue
        times.update({vm: at for vm, at in found.items() if vm in stopped})

    missing = [vm for vm in stopped if vm not in times]

    def view(vm_id: str) -> tuple[str, datetime | None, ScanError | None]:
        try:
            return vm_id, read_instance_view_time(clients.arm(), vm_id), None
        except AzureError as exc:
            return vm_id, None, _scan_error(stopped[vm_id][1], "compute:instanceView", exc)

    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        for vm_id, at, error in pool.map(view, missing):
            times[vm_id] = at
            if error is not None:
                errors[stopped[vm_id][0]].append(error)
    # One error per subscription and call group is enough: the rest say the same thing.
    for subscription, found in errors.items():
        errors[subscription] = _dedupe(found)
    return times


def _attach_metrics(
    resources: dict[str, list[Resource]],
    now: datetime,
    thresholds: Thresholds,
    clients: AzureClients,
    errors: dict[str, list[ScanError]],
    max_workers: int,
) -> None:
    """Hourly VM metrics in batches of 50 per (subscription, region) -> daily series."""
    groups: dict[tuple[str, str], list[Resource]] = defaultdict(list)
    for subscription, found in resources.items():
        for r in found:
            if r.resource_type == "virtual_machine" and r.state == "running":
                groups[(subscription, r.region)].append(r)
    batches = [
        (subscription, region, vms[i : i + MAX_RESOURCES_PER_BATCH])
        for (subscription, region), vms in sorted(groups.items())
        for i in range(0, len(vms), MAX_RESOURCES_PER_BATCH)
    ]

    def read(batch: tuple[str, str, list[Resource]]) -> Any:
        _, region, vms = batch
        try:
            return read_vm_metrics(clients.metrics(region), [vm.resource_id for vm in vms], now)
        except AzureError as exc:
            return _scan_error(region, "monitor:metrics", exc)

    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        for (subscription, _, vms), result in zip(batches, pool.map(read, batches), strict=True):
            if isinstance(result, ScanError):
                errors[subscription].append(result)
                continue
            for vm in vms:
                attach_vm_metrics(vm, result.get(vm.resource_id.lower(), {}), now, thresholds)
    for subscription, found in errors.items():
        errors[subscription] = _dedupe(found)


def _dedupe(errors: list[ScanError]) -> list[ScanError]:
    seen: dict[tuple[str, str, str], ScanError] = {}
    for error in errors:
        seen.setdefault((error.region, error.service, error.error_code), error)
    return list(seen.values())


def _is_access_error(exc: AzureError) -> bool:
    return isinstance(exc, HttpResponseError) and exc.status_code in (401, 403)


def _scan_error(region: str, service: str, exc: Exception) -> ScanError:
    code = type(exc).__name__
    message = str(getattr(exc, "message", None) or exc)
    if isinstance(exc, HttpResponseError):
        error = getattr(exc, "error", None)
        code = str(getattr(error, "code", None) or exc.status_code or code)
    return ScanError(
        region=region, service=service, error_code=code, message=scrub_text(message)[:500]
    )


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return _utc(value)
    try:
        return _utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError:
        return None


def _parse_iso(text: str) -> datetime:
    return _utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
