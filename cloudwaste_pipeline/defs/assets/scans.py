"""Scan assets: one partition per day and account alias.

``raw_cloud_scans`` is the only asset that talks to a cloud, and only for today's partition: a
cloud cannot be scanned "as of" last Tuesday, so a past day re-derives from the raw scan stored
that day, and fails with a clear message once that scan is past raw retention. The three derived
assets rebuild their partition from that stored scan and replace it in one transaction.
"""

import functools
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.accounts import Account
from cloudwaste_pipeline.defs.errors import scrubbed
from cloudwaste_pipeline.defs.metadata import PREVIEW_ROWS, counts_table, preview
from cloudwaste_pipeline.defs.partitions import scan_partitions
from cloudwaste_pipeline.defs.resources import AnonymizerResource, CloudResource, WarehouseResource
from cloudwaste_pipeline.privacy import derive, erasure
from cloudwaste_pipeline.privacy.anonymize import hash_id, hash_series, scrub_text
from cloudwaste_pipeline.warehouse import locks, queries, schema

GROUP = "collection"
OWNERS = ["team:data-platform"]


@dataclass(frozen=True)
class ScanPartition:
    day: date
    account: Account

    def describe(self, what: str) -> str:
        """``what`` of this day and account, in words for an error message (no raw id)."""
        return f"{what} of {self.day} for account {self.account.name!r}"


def scan_partition(context: dg.AssetExecutionContext, cloud: CloudResource) -> ScanPartition:
    keys = context.partition_key.keys_by_dimension  # type: ignore[attr-defined]
    return ScanPartition(date.fromisoformat(keys["date"]), cloud.account(keys["account"]))


def missing_scan_message(part: ScanPartition) -> str:
    today = settings.today()
    retention = settings.raw_retention_days()
    if part.day < today - timedelta(days=retention):
        return (
            f"{part.day} for account {part.account.name!r} is past raw retention "
            f"({retention} days, CLOUDWASTE_RAW_RETENTION_DAYS): its raw scan was deleted, so the "
            "day can no longer be re-derived. Its ML rows, if any, are kept as they are."
        )
    return (
        f"no raw scan is stored for account {part.account.name!r} on {part.day}: a cloud cannot be "
        f"scanned as of a past date (today is {today}). Only today's partition scans live."
    )


def stored_scan(warehouse: WarehouseResource, part: ScanPartition) -> dict[str, Any]:
    with locks.reading(warehouse.engine(), part.describe("the raw scan")) as conn:
        scan = queries.load_raw_scan(conn, part.account.provider, part.account.cloud_id, part.day)
    if scan is None:
        raise dg.Failure(description=missing_scan_message(part))
    return scan


def account_hash(part: ScanPartition, key: bytes) -> str:
    return hash_id("account", part.account.provider, part.account.cloud_id, key)


def skip_if_erased(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    anonymizer: AnonymizerResource,
    cloud: CloudResource,
) -> dg.MaterializeResult | None:
    """An erased (GDPR-tombstoned) account stays erased: its partitions succeed empty, scanning,
    storing and deriving nothing, so neither the daily schedule nor a backfill brings its rows
    back. A success, not a failure: the account may stay in the accounts file for a while."""
    part = scan_partition(context, cloud)
    key = anonymizer.key_bytes(warehouse)  # a key the warehouse was not written with stops here
    with warehouse.engine().connect() as conn:
        if not erasure.is_erased(conn, "account", account_hash(part, key)):
            return None
    context.log.warning(f"account {part.account.name!r} was erased (GDPR): nothing done")
    return dg.MaterializeResult(metadata={"erased": True, "dagster/row_count": 0})


@dg.asset(
    partitions_def=scan_partitions,
    group_name=GROUP,
    kinds={"aws", "azure", "sqlite", "postgres"},
    # Asset-level: some scan landed between 01:00 and 03:00 UTC. Per account, the check
    # every_account_scanned_recently (defs/checks.py) says which accounts stopped arriving.
    freshness_policy=dg.FreshnessPolicy.cron(
        deadline_cron="0 3 * * *", lower_bound_delta=timedelta(hours=2)
    ),
    owners=OWNERS,
    tags={"privacy": "raw"},
    description=(
        "Today's scan of one cloud account, kept in the raw store (raw ids, short retention). "
        "Past days are not re-scanned: they re-use the raw scan stored that day."
    ),
)
@scrubbed
def raw_cloud_scans(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    anonymizer: AnonymizerResource,
    cloud: CloudResource,
) -> dg.MaterializeResult:
    if skipped := skip_if_erased(context, warehouse, anonymizer, cloud):
        return skipped
    part = scan_partition(context, cloud)
    today = settings.today()
    if part.day > today:
        raise dg.Failure(description=f"{part.day} is in the future (today is {today})")
    if part.day == today:
        try:
            scan = cloud.scan(part.account)
        except Exception as exc:
            # Cloud SDK errors quote ARNs and account ids: scrub them, and drop the original
            # traceback (``from None``) so they reach neither the run log nor the UI.
            raise dg.Failure(
                description=f"scan of account {part.account.name!r} failed: "
                f"{type(exc).__name__}: {scrub_text(str(exc))}"
            ) from None
        with locks.writing(warehouse.engine(), part.describe("the raw scan")) as conn:
            queries.store_raw_scan(conn, part.account.name, scan)
        payload, source, status = scan.payload(), "live scan", scan.status
    else:
        payload = stored_scan(warehouse, part)
        source, status = "stored raw scan", payload["status"]
    detections = payload["detections"]
    scenarios = Counter(f"{d['resource_type']}/{d['detection_scenario']}" for d in detections)
    errors = payload.get("errors", [])
    if errors:
        context.log.warning(
            f"partial scan: {len(errors)} region/service error(s): "
            + "; ".join(f"{e['region']}/{e['service']}: {e['error_code']}" for e in errors)
        )
    return dg.MaterializeResult(
        metadata={
            "source": source,
            "status": status,
            "resources_scanned": payload["resources_scanned"],
            "detections": len(detections),
            "dagster/row_count": len(detections),
            "estimated_spend_monthly_usd": round(payload["total_cost_monthly"], 2),
            "waste_monthly_usd": round(sum(d["cost_monthly"] for d in detections), 2),
            "errors": len(errors),
            "by_scenario": counts_table(dict(scenarios), "scenario", "detections"),
        }
    )


@dataclass(frozen=True)
class Derivation:
    """What every derived asset starts from: the partition's stored scan and its ML rows."""

    part: ScanPartition
    key: bytes
    account_hash: str
    scan: dict[str, Any]
    collected_at: datetime

    def training_chunks(self) -> Iterator[dict[str, list[Any]]]:
        """The ML rows a few at a time, derived as a streaming load takes them."""
        detections = self.scan["detections"]
        return derive.training_row_chunks(detections, self.key, self.part.day, self.collected_at)

    @functools.cached_property
    def training(self) -> pd.DataFrame:
        return derive.training_rows(
            self.scan["detections"], self.key, self.part.day, self.collected_at
        )


def derivation(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    anonymizer: AnonymizerResource,
    cloud: CloudResource,
) -> Derivation:
    part = scan_partition(context, cloud)
    key = anonymizer.key_bytes(warehouse)
    scan = stored_scan(warehouse, part)
    collected_at = queries.as_datetime(scan["scanned_at"])
    return Derivation(part, key, account_hash(part, key), scan, collected_at)


SCAN_DERIVED = {
    "partitions_def": scan_partitions,
    "group_name": GROUP,
    "owners": OWNERS,
    "deps": [raw_cloud_scans],
}


@dg.asset(
    **SCAN_DERIVED,
    kinds={"pandas", "sqlite", "postgres"},
    description=(
        "Anonymized ML training rows, one per detection per scan: hashed ids, generalized "
        "region, metric aggregates, whitelisted config and tags, enrichment columns. "
        "user_action is joined in from user_action_patterns."
    ),
)
@scrubbed
def ml_training_data(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    anonymizer: AnonymizerResource,
    cloud: CloudResource,
) -> dg.MaterializeResult:
    if skipped := skip_if_erased(context, warehouse, anonymizer, cloud):
        return skipped
    d = derivation(context, warehouse, anonymizer, cloud)
    table = schema.ml_training_data
    partition = sa.and_(table.c.scan_date == d.part.day, table.c.account_hash == d.account_hash)
    shown = [
        "resource_type",
        "detection_scenario",
        "confidence_level",
        "region_anonymized",
        "resource_age_days",
        "cost_monthly",
    ]
    shown_rows: dict[str, list[Any]] = {}  # the first rows loaded, for the preview
    cost = 0.0  # of every row loaded

    def chunks() -> Iterator[dict[str, list[Any]]]:
        nonlocal cost
        for chunk in d.training_chunks():
            if not shown_rows:
                shown_rows.update({c: chunk[c][:PREVIEW_ROWS] for c in shown})
            cost += math.fsum(chunk["cost_monthly"])
            yield chunk

    with locks.writing(warehouse.engine(), d.part.describe(table.name)) as conn:
        queries.lock_labels_for_load(conn)
        deleted, inserted = queries.replace_scan_partition(
            conn, table, d.part.day, d.account_hash, chunks()
        )
        queries.apply_labels(conn, partition, loading=True)
        labels = conn.execute(
            sa.select(sa.func.count()).where(partition, table.c.user_action.is_not(None))
        ).scalar()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": inserted,
            "rows_replaced": deleted,
            "rows_labelled": int(labels or 0),
            "waste_monthly_usd": round(cost, 2),
            "preview": preview(pd.DataFrame(shown_rows)),
        }
    )


@dg.asset(
    **SCAN_DERIVED,
    kinds={"pandas", "sqlite", "postgres"},
    description=(
        "Lifecycle events from scans: 'detected' when a resource first appears (relative to the "
        "account's previous stored scan) and 'metrics_updated' per scan. User actions add "
        "'status_changed' and 'deleted' events (see user_action_patterns)."
    ),
)
@scrubbed
def resource_lifecycle_events(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    anonymizer: AnonymizerResource,
    cloud: CloudResource,
) -> dg.MaterializeResult:
    if skipped := skip_if_erased(context, warehouse, anonymizer, cloud):
        return skipped
    d = derivation(context, warehouse, anonymizer, cloud)
    account, table = d.part.account, schema.resource_lifecycle_events
    with locks.writing(warehouse.engine(), d.part.describe(table.name)) as conn:
        previous = queries.previous_raw_scan(conn, account.provider, account.cloud_id, d.part.day)
        if previous is not None:
            ids = pd.Series([x["resource_id"] for x in previous["detections"]], dtype=object)
            seen = set(hash_series("resource", account.provider, ids, d.key))
        else:
            seen = queries.previous_detected_hashes(conn, d.account_hash, d.part.day) or set()
        rows = derive.lifecycle_rows(d.training, seen, d.collected_at)
        deleted, inserted = queries.replace_scan_partition(
            conn,
            table,
            d.part.day,
            d.account_hash,
            rows,
            extra=table.c.event_type.in_(["detected", "metrics_updated"]),
        )
    by_type = rows["event_type"].value_counts().to_dict() if not rows.empty else {}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": inserted,
            "rows_replaced": deleted,
            "detected": int(by_type.get("detected", 0)),
            "metrics_updated": int(by_type.get("metrics_updated", 0)),
        }
    )


@dg.asset(
    **SCAN_DERIVED,
    kinds={"pandas", "sqlite", "postgres"},
    description=(
        "The full daily metric series (CloudWatch / Azure Monitor) of each detected resource, "
        "under hashed ids, with its aggregates."
    ),
)
@scrubbed
def cloudwatch_metrics_history(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    anonymizer: AnonymizerResource,
    cloud: CloudResource,
) -> dg.MaterializeResult:
    if skipped := skip_if_erased(context, warehouse, anonymizer, cloud):
        return skipped
    d = derivation(context, warehouse, anonymizer, cloud)
    rows = derive.metrics_history_rows(d.scan["detections"], d.training, d.collected_at)
    table = schema.cloudwatch_metrics_history
    with locks.writing(warehouse.engine(), d.part.describe(table.name)) as conn:
        deleted, inserted = queries.replace_scan_partition(
            conn, table, d.part.day, d.account_hash, rows
        )
    metrics = rows["metric_name"].value_counts().to_dict() if not rows.empty else {}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": inserted,
            "rows_replaced": deleted,
            "resources_with_metrics": int(rows["resource_hash"].nunique()) if not rows.empty else 0,
            "by_metric": counts_table(metrics, "metric", "series"),
        }
    )
