"""The shapes a scan produces, shared by the live scanners and the simulated history.

A scanner turns API responses into ``Resource`` records (the inventory); the rule tables turn
resources into ``Detection`` records; a ``RawScan`` is what one account's scan of one day stores in
the raw store. These records hold raw ids: they never leave the raw store un-hashed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime
from typing import Any

# One daily series per metric name: [(ISO date, value), ...], oldest first.
MetricSeries = list[tuple[str, float]]


@dataclass
class Resource:
    """One cloud resource as the scanner saw it, normalised across providers."""

    provider: str
    account_id: str
    region: str
    resource_type: str
    resource_id: str  # AWS: the ARN; Azure: the full resource id
    state: str
    name: str | None = None
    created_at: datetime | None = None
    state_since: datetime | None = None  # e.g. when an instance was stopped
    config: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    parent_id: str | None = None
    parent_type: str | None = None
    parent_state: str | None = None
    cost_monthly: float = 0.0
    cost_source: str = ""
    metrics: dict[str, MetricSeries] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)  # rule inputs (attachments, ...)
    cost_real_monthly: float | None = None
    cost_real_reason: str | None = None


@dataclass
class Detection:
    """A resource a rule flagged as waste, with why and how sure."""

    resource: Resource
    detection_scenario: str
    confidence_level: str
    reason: str
    detected_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            # _jsonable copies every container, so the deep copy of asdict() would be spent twice.
            **_jsonable({f.name: getattr(self.resource, f.name) for f in fields(Resource)}),
            "detection_scenario": self.detection_scenario,
            "confidence_level": self.confidence_level,
            "reason": self.reason,
            "detected_at": self.detected_at.isoformat(),
        }


@dataclass
class ScanError:
    """A region or service the scan could not read; the rest of the account is still scanned."""

    region: str
    service: str
    error_code: str
    message: str


@dataclass
class RawScan:
    """One account's scan of one day, as stored in the raw store."""

    provider: str
    account_id: str
    scan_date: date
    scanned_at: datetime
    resources_scanned: int
    total_cost_monthly: float
    cost_by_region: dict[str, float]
    detections: list[dict[str, Any]]
    errors: list[ScanError] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "partial" if self.errors else "complete"

    def payload(self) -> dict[str, Any]:
        """The JSON document stored for this scan."""
        return {
            "resources_scanned": self.resources_scanned,
            "total_cost_monthly": round(self.total_cost_monthly, 4),
            "cost_by_region": {k: round(v, 4) for k, v in sorted(self.cost_by_region.items())},
            "detections": self.detections,
            "errors": [asdict(e) for e in self.errors],
        }


def summarize_inventory(
    provider: str,
    account_id: str,
    scan_date: date,
    scanned_at: datetime,
    resources: list[Resource],
    detections: list[Detection],
    errors: list[ScanError] | None = None,
) -> RawScan:
    """Build the stored scan: the detections plus the inventory totals cost trends need."""
    by_region: dict[str, float] = {}
    for resource in resources:
        if resource.attrs.get("cost_counted_in_volumes"):
            continue  # a stopped instance's cost is its volumes' storage, already counted
        by_region[resource.region] = by_region.get(resource.region, 0.0) + resource.cost_monthly
    return RawScan(
        provider=provider,
        account_id=account_id,
        scan_date=scan_date,
        scanned_at=scanned_at,
        resources_scanned=len(resources),
        total_cost_monthly=sum(by_region.values()),
        cost_by_region=by_region,
        detections=[d.to_json() for d in detections],
        errors=list(errors or []),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
