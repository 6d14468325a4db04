"""Scan assets: one partition per day and account shard; inside it, one step per account.

``raw_cloud_scans`` is the only asset that talks to a cloud, and only for today's partition: a
cloud cannot be scanned "as of" last Tuesday, so a past day re-derives from the raw scans stored
that day (a named account whose scan is past raw retention fails with a clear message). The three
derived assets rebuild each account's rows from its stored scan, one transaction per account.
One account's failure is recorded by alias and retried (``defs/shards.py``), never failing or
rolling back the shard's other accounts.
"""

import functools
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterator
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
from cloudwaste_pipeline.defs.shards import Outcomes, Skip, each_account, shard_run
from cloudwaste_pipeline.errors import CloudWasteError
from cloudwaste_pipeline.privacy import derive, erasure
from cloudwaste_pipeline.privacy.anonymize import hash_id, hash_series, scrub_text
from cloudwaste_pipeline.warehouse import locks, queries, schema

GROUP = "collection"
OWNERS = ["team:data-platform"]


@dataclass(frozen=True)
class ScanPartition:
    """One account's day: what every per-account step of a shard run works on."""

    day: date
    account: Account

    def describe(self, what: str) -> str:
        """``what`` of this day and account, in words for an error message (no raw id)."""
        return f"{what} of {self.day} for account {self.account.name!r}"


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


def stored_scan(warehouse: WarehouseResource, part: ScanPartition) -> dict[str, Any] | None:
    with locks.reading(warehouse.engine(), part.describe("the raw scan")) as conn:
        return queries.load_raw_scan(conn, part.account.provider, part.account.cloud_id, part.day)


def account_hash(part: ScanPartition, key: bytes) -> str:
    return hash_id("account", part.account.provider, part.account.cloud_id, key)


def skip_if_erased(warehouse: WarehouseResource, part: ScanPartition, key: bytes) -> None:
    """An erased (GDPR-tombstoned) account stays erased: it is skipped, scanning, storing and
    deriving nothing, so neither the daily schedule nor a backfill brings its rows back. Not a
    failure: the account may stay in the accounts sources for a while."""
    with warehouse.engine().connect() as conn:
        if erasure.is_erased(conn, "account", account_hash(part, key)):
            raise Skip("erased")


class ScanFailed(CloudWasteError):
    """A cloud scan that raised; the message names the account by alias, ids scrubbed."""


SCAN_FIGURES = ("detections", "resources_scanned", "errors")


@dg.asset(
    partitions_def=scan_partitions,
    group_name=GROUP,
    kinds={"aws", "azure", "sqlite", "postgres"},
    # Asset-level: some scan landed between 01:00 and 03:00 UTC. Per account, the checks
    # no_failed_accounts and every_account_scanned_recently (defs/checks.py) name the aliases.
    freshness_policy=dg.FreshnessPolicy.cron(
        deadline_cron="0 3 * * *", lower_bound_delta=timedelta(hours=2)
    ),
    owners=OWNERS,
    tags={"privacy": "raw"},
    description=(
        "Today's scan of every account of one shard (or of the accounts the run's "
        "cloudwaste/accounts tag names), a bounded pool of accounts at once per cloud, kept in "
        "the raw store (raw ids, short retention). One account's failure is recorded by alias "
        "and retried; the others land. Past days are not re-scanned: they re-use the raw scans "
        "stored that day."
    ),
)
@scrubbed
def raw_cloud_scans(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    anonymizer: AnonymizerResource,
    cloud: CloudResource,
) -> dg.MaterializeResult:
    run = shard_run(context, cloud, warehouse)
    key = anonymizer.key_bytes(warehouse)  # a key the warehouse was not written with stops here
    today = settings.today()
    if run.day > today:
        raise dg.Failure(description=f"{run.day} is in the future (today is {today})")
    live = run.day == today
    if not live and run.named:  # one account for one past day: say why it cannot be done
        for account in run.accounts:
            part = ScanPartition(run.day, account)
            if stored_scan(warehouse, part) is None:
                raise dg.Failure(description=missing_scan_message(part))
    scenarios: Counter[str] = Counter()
    counting = threading.Lock()  # accounts finish on several threads

    def one(account: Account) -> dict[str, Any]:
        part = ScanPartition(run.day, account)
        skip_if_erased(warehouse, part, key)
        if live:
            try:
                scan = cloud.scan(account)
            except Exception as exc:
                # Cloud SDK errors quote ARNs and account ids: scrubbed, and the original
                # traceback dropped (``from None``) so they reach neither the log nor the UI.
                raise ScanFailed(
                    f"scan of account {account.name!r} failed: "
                    f"{type(exc).__name__}: {scrub_text(str(exc))}"
                ) from None
            with locks.writing(warehouse.engine(), part.describe("the raw scan")) as conn:
                queries.store_raw_scan(conn, account.name, scan)
            payload = scan.payload()
        else:
            payload = stored_scan(warehouse, part)
            if payload is None:
                raise Skip("no stored scan")
        detections = payload["detections"]
        with counting:
            scenarios.update(f"{d['resource_type']}/{d['detection_scenario']}" for d in detections)
        errors = payload.get("errors", [])
        if errors:
            context.log.warning(
                f"partial scan of {account.name!r}: {len(errors)} region/service error(s): "
                + "; ".join(f"{e['region']}/{e['service']}: {e['error_code']}" for e in errors)
            )
        return {
            "detections": len(detections),
            "resources_scanned": payload["resources_scanned"],
            "errors": len(errors),
            "spend_usd": round(payload["total_cost_monthly"], 2),
            "waste_usd": round(sum(d["cost_monthly"] for d in detections), 2),
        }

    # A live scan that failed can be retried today; a stored one has nothing to retry with.
    outcomes = each_account(
        context,
        run,
        "raw_cloud_scans",
        warehouse,
        one,
        concurrent=live,
        retry=lambda account: live,
        supersede=live,
    )
    return dg.MaterializeResult(
        metadata={
            "source": "live scan" if live else "stored raw scans",
            **outcomes.metadata(),
            "resources_scanned": int(outcomes.total("resources_scanned")),
            "detections": int(outcomes.total("detections")),
            "dagster/row_count": int(outcomes.total("detections")),
            "estimated_spend_monthly_usd": round(outcomes.total("spend_usd"), 2),
            "waste_monthly_usd": round(outcomes.total("waste_usd"), 2),
            "errors": int(outcomes.total("errors")),
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


def derive_each(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    anonymizer: AnonymizerResource,
    cloud: CloudResource,
    asset: str,
    work: Callable[[Derivation], dict[str, Any]],
) -> Outcomes:
    """``work`` on each account's stored scan of the run's day, one account after the other.

    An account without a stored scan that day is skipped, not failed: its raw scan failed (and is
    listed and retried as such) or it was not scanned that day (added later, say)."""
    run = shard_run(context, cloud, warehouse)
    key = anonymizer.key_bytes(warehouse)

    def one(account: Account) -> dict[str, Any]:
        part = ScanPartition(run.day, account)
        skip_if_erased(warehouse, part, key)
        scan = stored_scan(warehouse, part)
        if scan is None:
            raise Skip("no raw scan")
        collected_at = queries.as_datetime(scan["scanned_at"])
        return work(Derivation(part, key, account_hash(part, key), scan, collected_at))

    return each_account(context, run, asset, warehouse, one)


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
        "user_action is joined in from user_action_patterns. Rebuilt per account of the shard "
        "from the raw scan stored that day."
    ),
)
@scrubbed
def ml_training_data(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    anonymizer: AnonymizerResource,
    cloud: CloudResource,
) -> dg.MaterializeResult:
    table = schema.ml_training_data
    shown = [
        "resource_type",
        "detection_scenario",
        "confidence_level",
        "region_anonymized",
        "resource_age_days",
        "cost_monthly",
    ]
    shown_rows: dict[str, list[Any]] = {}  # the first rows loaded, for the preview

    def one(d: Derivation) -> dict[str, Any]:
        partition = sa.and_(table.c.scan_date == d.part.day, table.c.account_hash == d.account_hash)
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
        return {
            "rows": inserted,
            "replaced": deleted,
            "labelled": int(labels or 0),
            "waste_usd": round(cost, 2),
        }

    outcomes = derive_each(context, warehouse, anonymizer, cloud, table.name, one)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": int(outcomes.total("rows")),
            "rows_replaced": int(outcomes.total("replaced")),
            "rows_labelled": int(outcomes.total("labelled")),
            "waste_monthly_usd": round(outcomes.total("waste_usd"), 2),
            **outcomes.metadata(),
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
    table = schema.resource_lifecycle_events

    def one(d: Derivation) -> dict[str, Any]:
        account = d.part.account
        with locks.writing(warehouse.engine(), d.part.describe(table.name)) as conn:
            previous = queries.previous_raw_scan(
                conn, account.provider, account.cloud_id, d.part.day
            )
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
        return {
            "rows": inserted,
            "replaced": deleted,
            "detected": int(by_type.get("detected", 0)),
            "metrics_updated": int(by_type.get("metrics_updated", 0)),
        }

    outcomes = derive_each(context, warehouse, anonymizer, cloud, table.name, one)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": int(outcomes.total("rows")),
            "rows_replaced": int(outcomes.total("replaced")),
            "detected": int(outcomes.total("detected")),
            "metrics_updated": int(outcomes.total("metrics_updated")),
            **outcomes.metadata(),
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
    table = schema.cloudwatch_metrics_history
    metrics: Counter[str] = Counter()

    def one(d: Derivation) -> dict[str, Any]:
        rows = derive.metrics_history_rows(d.scan["detections"], d.training, d.collected_at)
        with locks.writing(warehouse.engine(), d.part.describe(table.name)) as conn:
            deleted, inserted = queries.replace_scan_partition(
                conn, table, d.part.day, d.account_hash, rows
            )
        if not rows.empty:
            metrics.update(rows["metric_name"].value_counts().to_dict())
        return {
            "rows": inserted,
            "replaced": deleted,
            "resources": int(rows["resource_hash"].nunique()) if not rows.empty else 0,
        }

    outcomes = derive_each(context, warehouse, anonymizer, cloud, table.name, one)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": int(outcomes.total("rows")),
            "rows_replaced": int(outcomes.total("replaced")),
            "resources_with_metrics": int(outcomes.total("resources")),
            "by_metric": counts_table(dict(metrics), "metric", "series"),
            **outcomes.metadata(),
        }
    )
