"""User actions: the labels the model learns from.

``user_action_patterns`` is append-only and keyed by the (hashed) event id: each run takes the
outbox events it has not stored yet, so a re-run or a replayed batch never duplicates a row, and
it is never rebuilt from the outbox (which, holding raw ids, expires).
"""

import json
from datetime import datetime, timedelta

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.defs.metadata import counts_table, preview
from cloudwaste_pipeline.defs.resources import AnonymizerResource, WarehouseResource
from cloudwaste_pipeline.privacy import derive, erasure
from cloudwaste_pipeline.privacy.anonymize import hash_event, hash_id
from cloudwaste_pipeline.warehouse import queries, schema
from cloudwaste_pipeline.warehouse.load import insert_new

GROUP = "actions"


class ActionBatchConfig(dg.Config):
    """The outbox range a sensor run covers (default: every pending event), and how long an
    event whose resource has not been detected yet is held before it is quarantined."""

    min_seq: int = 0
    max_seq: int | None = None
    hold_hours: float = 72.0


def expired_holds(held: pd.DataFrame, now: datetime, hold_hours: float) -> pd.DataFrame:
    """Held events that arrived more than ``hold_hours`` ago: their scan is not just late."""
    if held.empty:
        return held
    cutoff = now.replace(tzinfo=None) - timedelta(hours=hold_hours)
    return held[pd.to_datetime(held["received_at"]) < cutoff]


def pending_events(conn: sa.Connection, config: ActionBatchConfig, key: bytes) -> pd.DataFrame:
    """Outbox events in range not yet stored nor quarantined (held events are retried)."""
    events = schema.resource_action_events
    query = sa.select(events).where(events.c.seq >= config.min_seq).order_by(events.c.seq)
    if config.max_seq is not None:
        query = query.where(events.c.seq <= config.max_seq)
    frame = queries.frame(conn, query)
    if frame.empty:
        return frame
    stored = {
        r.event_hash for r in conn.execute(sa.select(schema.user_action_patterns.c.event_hash))
    }
    quarantined = {
        r.source_ref
        for r in conn.execute(
            sa.select(schema.quarantine.c.source_ref).where(
                schema.quarantine.c.source == "user_action"
            )
        )
    }
    keep = [
        hash_event(str(e), key) not in stored and str(e) not in quarantined
        for e in frame["event_id"]
    ]
    return frame[keep].reset_index(drop=True)


def detection_context(conn: sa.Connection, resource_hashes: list[str]) -> pd.DataFrame:
    """Per resource: first detection time, and the latest scenario, confidence and cost."""
    if not resource_hashes:
        return pd.DataFrame()
    ml = schema.ml_training_data
    columns = (
        ml.c.resource_hash,
        ml.c.resource_type,
        ml.c.region_anonymized,
        ml.c.detection_scenario,
        ml.c.confidence_level,
        ml.c.cost_monthly,
        ml.c.detected_at,
    )
    found = []
    for hashes in queries.in_chunks(resource_hashes):
        chunk = queries.frame(conn, sa.select(*columns).where(ml.c.resource_hash.in_(hashes)))
        if not chunk.empty:
            found.append(chunk)
    rows = pd.concat(found) if found else pd.DataFrame()
    if rows.empty:
        return pd.DataFrame(columns=["resource_hash", "detected_at"])
    rows = rows.sort_values("detected_at")
    first = rows.groupby("resource_hash")["detected_at"].min()
    latest = rows.groupby("resource_hash").tail(1).set_index("resource_hash")
    latest["detected_at"] = first
    return latest.reset_index().drop(columns=["provider"], errors="ignore")


def user_preferences(conn: sa.Connection) -> pd.DataFrame:
    prefs = schema.user_preferences
    return queries.frame(
        conn,
        sa.select(
            prefs.c.user_hash,
            prefs.c.anonymized_industry.label("industry_anonymized"),
            prefs.c.anonymized_company_size.label("company_size_bucket"),
        ),
    )


@dg.asset(
    group_name=GROUP,
    kinds={"pandas", "postgres", "sqlite"},
    owners=["team:data-platform"],
    deps=["ml_training_data"],
    description=(
        "Append-only log of user decisions (deleted / ignored / kept) on detections, keyed by "
        "event id, with hashed user/account/resource. Updates ml_training_data.user_action and "
        "adds status_changed / deleted lifecycle events. Fed by user_action_sensor."
    ),
)
def user_action_patterns(
    context: dg.AssetExecutionContext,
    config: ActionBatchConfig,
    warehouse: WarehouseResource,
    anonymizer: AnonymizerResource,
) -> dg.MaterializeResult:
    key = anonymizer.key_bytes(warehouse)
    created_at = settings.now()
    with warehouse.engine().begin() as conn:
        pending = pending_events(conn, config, key)
        events = erasure.drop_erased_events(conn, pending, key)
        records = events.to_dict("records")
        reasons = [derive.validate_action_event(e) for e in records]
        bad = [(e, r) for e, r in zip(records, reasons, strict=True) if r]
        good = events[[r is None for r in reasons]] if not events.empty else events
        quarantined = quarantine_events(conn, bad, created_at)
        hashes = [
            hash_id("resource", p, r, key)
            for p, r in zip(good["provider"], good["resource_id"], strict=True)
        ]
        rows, held = derive.action_rows(
            good, detection_context(conn, hashes), user_preferences(conn), key, created_at
        )
        expired = expired_holds(held, created_at, config.hold_hours)
        reason = f"resource not detected within {config.hold_hours:g} h of the event's arrival"
        quarantined += quarantine_events(
            conn, [(e, reason) for e in expired.to_dict("records")], created_at
        )
        held = held.drop(index=expired.index)
        inserted = (
            insert_new(conn, schema.user_action_patterns, rows, ["event_hash"])
            if not rows.empty
            else 0
        )
        lifecycle = derive.action_lifecycle_rows(rows)
        if not lifecycle.empty:
            insert_new(
                conn,
                schema.resource_lifecycle_events,
                lifecycle,
                ["source_event_hash", "event_type"],
            )
        relabelled = trends_updated = 0
        if not rows.empty:
            ml = schema.ml_training_data
            relabelled = sum(
                queries.apply_labels(conn, ml.c.resource_hash.in_(chunk))
                for chunk in queries.in_chunks(rows["resource_hash"])
            )
            months = {
                (a, pd.Timestamp(t).strftime("%Y-%m"))
                for a, t in zip(rows["account_hash"], rows["action_at"], strict=True)
            }
            trends_updated = queries.refresh_waste_eliminated(
                conn, months, created_at.replace(tzinfo=None)
            )
    actions = rows["action_taken"].value_counts().to_dict() if not rows.empty else {}
    if len(held):
        context.log.info(f"{len(held)} event(s) held: their resource has not been detected yet")
    return dg.MaterializeResult(
        metadata={
            "events_read": len(pending),
            "events_of_erased_subjects_dropped": len(pending) - len(events),
            "dagster/row_count": inserted,
            "rows_inserted": inserted,
            "events_held": len(held),
            "events_quarantined": quarantined,
            "training_rows_relabelled": relabelled,
            "cost_trend_rows_updated": trends_updated,
            "by_action": counts_table(actions, "action", "events"),
            "preview": preview(
                rows,
                [
                    "resource_type",
                    "detection_scenario",
                    "action_taken",
                    "time_to_action_hours",
                    "cost_saved_monthly",
                ],
            ),
        }
    )


def quarantine_events(
    conn: sa.Connection, bad: list[tuple[dict, str]], quarantined_at: datetime
) -> int:
    """Bad events are kept with their reason in the raw store, never dropped and never fatal."""
    if not bad:
        return 0
    frame = pd.DataFrame(
        [
            {
                "source": "user_action",
                "source_ref": str(event.get("event_id") or f"seq:{event.get('seq')}"),
                "payload": json.loads(json.dumps(event, default=str)),
                "reason": reason,
                "quarantined_at": quarantined_at.replace(tzinfo=None),
            }
            for event, reason in bad
        ]
    )
    return insert_new(conn, schema.quarantine, frame, ["source", "source_ref"])
