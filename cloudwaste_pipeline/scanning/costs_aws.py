"""Real costs per resource from Cost Explorer's resource-level data, where the account allows it.

``GetCostAndUsageWithResources`` is the only Cost Explorer call that groups by ``RESOURCE_ID``
(``GetCostAndUsage`` rejects that dimension), and it only covers the last 14 days and only for
accounts whose management account opted in to resource-level data. It is also paid (per request),
so a scan only calls it when asked (``run_scan(..., real_costs=True)``), once per account.

The monthly figure is the daily average over the 14 complete days before the scan, times 30.4
(days in an average month); a day without cost counts as 0. When the data is not available, every
flagged resource keeps ``cost_real_monthly = None`` and ``cost_real_reason`` says why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from cloudwaste_pipeline.privacy.anonymize import scrub_text
from cloudwaste_pipeline.scanning.model import Resource

COST_EXPLORER_REGION = "us-east-1"  # Cost Explorer has one endpoint, in us-east-1
WINDOW_DAYS = 14  # the most GetCostAndUsageWithResources serves
DAYS_PER_MONTH = 30.4
METRIC = "UnblendedCost"
# The SERVICE values that bill the resource types the scanner reads (EBS volumes, snapshots and
# NAT gateways bill under "EC2 - Other"; public IPv4 addresses under VPC).
SERVICES = (
    "Amazon Elastic Compute Cloud - Compute",
    "EC2 - Other",
    "Amazon Relational Database Service",
    "Amazon Elastic Load Balancing",
    "Amazon Virtual Private Cloud",
)

REASON_NOT_ENABLED = "not enabled"
REASON_NOT_OPTED_IN = "not opted in"
REASON_NOT_IN_DATA = "no resource-level cost in Cost Explorer"
_NOT_OPTED_IN_CODES = ("DataUnavailableException", "OptInRequiredException")


@dataclass
class RealCosts:
    """Monthly cost by Cost Explorer resource id, or why there are none (``reason``)."""

    monthly_by_id: dict[str, float] = field(default_factory=dict)
    reason: str | None = None


def fetch_real_costs(session: boto3.Session, now: datetime, client: Any = None) -> RealCosts:
    """Resource id -> monthly cost from the 14 complete days before ``now``; never raises."""
    try:
        ce = client or session.client("ce", region_name=COST_EXPLORER_REGION)
        end = now.date()
        start = end - timedelta(days=WINDOW_DAYS)
        params: dict[str, Any] = {
            "TimePeriod": {"Start": start.isoformat(), "End": end.isoformat()},
            "Granularity": "DAILY",
            "Filter": {"Dimensions": {"Key": "SERVICE", "Values": list(SERVICES)}},
            "GroupBy": [{"Type": "DIMENSION", "Key": "RESOURCE_ID"}],
            "Metrics": [METRIC],
        }
        pages = []
        while True:
            page = ce.get_cost_and_usage_with_resources(**params)
            pages.append(page)
            if not page.get("NextPageToken"):
                break
            params["NextPageToken"] = page["NextPageToken"]
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "ClientError")
        if code in _NOT_OPTED_IN_CODES or "opt" in error.get("Message", "").lower():
            return RealCosts(reason=REASON_NOT_OPTED_IN)
        return RealCosts(reason=f"error: {scrub_text(code)}")
    except BotoCoreError as exc:
        return RealCosts(reason=f"error: {type(exc).__name__}")
    return RealCosts(monthly_by_id=monthly_costs(pages))


def monthly_costs(pages: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Sum each resource's daily costs over the pages, as a monthly figure."""
    totals: dict[str, float] = {}
    for page in pages:
        for day in page.get("ResultsByTime") or []:
            for group in day.get("Groups") or []:
                resource_id = group["Keys"][0]
                amount = float(group["Metrics"][METRIC]["Amount"])
                totals[resource_id] = totals.get(resource_id, 0.0) + amount
    return {k: round(v / WINDOW_DAYS * DAYS_PER_MONTH, 4) for k, v in totals.items()}


def attach_real_costs(resources: Iterable[Resource], costs: RealCosts) -> None:
    """Fill ``cost_real_monthly`` (or ``cost_real_reason``) of each resource.

    Cost Explorer names EC2 instances and volumes by their raw id and most other resources by ARN,
    so a resource is looked up by its ARN, then by the id after the ARN's last ``/``.
    """
    for resource in resources:
        if costs.reason:
            resource.cost_real_monthly, resource.cost_real_reason = None, costs.reason
            continue
        raw_id = resource.resource_id.rsplit("/", 1)[-1]
        cost = costs.monthly_by_id.get(resource.resource_id, costs.monthly_by_id.get(raw_id))
        resource.cost_real_monthly = cost
        resource.cost_real_reason = None if cost is not None else REASON_NOT_IN_DATA
