"""User actions: the labels the model learns from.

``user_action_patterns`` is append-only and keyed by the (hashed) event id: each run takes the
outbox events that are due (see ``warehouse.outbox``), so a re-run or a replayed batch never
duplicates a row, and it is never rebuilt from the outbox (which, holding raw ids, expires).

Each event ends stored, quarantined with its reason, held for a later try, or dropped (an erased
subject). An event that breaks processing is quarantined with the error's type, never allowed to
block the events after it: a batch that raises is retried event by event, and the events of a
run that died are processed one by one by the next.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from cloudwaste_pipeline import settings
from cloudwaste_pipeline.defs.errors import scrubbed
from cloudwaste_pipeline.defs.metadata import counts_table, preview
from cloudwaste_pipeline.defs.resources import AnonymizerResource, WarehouseResource
from cloudwaste_pipeline.privacy import derive, erasure
from cloudwaste_pipeline.privacy.anonymize import hash_event, hash_id, hash_user, scrub_text
from cloudwaste_pipeline.warehouse import outbox, queries, schema
from cloudwaste_pipeline.warehouse.load import insert_new

GROUP = "actions"
CONFLICT = "event id already stored with another user, resource or action"


class ActionBatchConfig(dg.Config):
    """Which due outbox events a run takes (default: all, oldest first, up to ``max_events``;
    the sensor launches again while due events remain), and how long an event whose resource
    has not been detected yet is held before it is quarantined."""

    min_seq: int = 0
    max_seq: int | None = None
    hold_hours: float = 72.0
    max_events: int = 100_000


@dataclass
class Outcome:
    """What processing did to the events it was given (summed over a run's units)."""

    read: int = 0
    already_processed: int = 0
    dropped: int = 0
    inserted: int = 0
    held: int = 0
    quarantined: int = 0
    failed: int = 0
    relabelled: int = 0
    trends_updated: int = 0
    rows: list[pd.DataFrame] = field(default_factory=list)

    def add(self, other: "Outcome") -> None:
        for name in self.__dataclass_fields__:
            if name != "rows":
                setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rows.extend(other.rows)

    def stored(self) -> pd.DataFrame:
        frames = [r for r in self.rows if not r.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def expired_holds(held: pd.DataFrame, now: datetime, hold_hours: float) -> pd.DataFrame:
    """Held events that arrived more than ``hold_hours`` ago: their scan is not just late."""
    if held.empty:
        return held
    cutoff = now.replace(tzinfo=None) - timedelta(hours=hold_hours)
    return held[pd.to_datetime(held["received_at"]) < cutoff]


def transient(exc: BaseException) -> bool:
    """A database that went away or is locked: the run fails and is retried, nothing is
    quarantined for it."""
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) or bool(
        getattr(exc, "connection_invalidated", False)
    )


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


def split_done(
    conn: sa.Connection, events: pd.DataFrame, key: bytes
) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple[dict, str]]]:
    """(events already processed, events to process, conflicting duplicates with their reason).

    Already processed: quarantined before, or stored under their event id with the same user,
    resource and action (a re-delivery, or a row stored before the outbox kept its state). An
    event id stored with other content is a conflicting duplicate: quarantined, not dropped.
    """
    hashes = [hash_event(str(e), key) for e in events["event_id"]]
    stored = outbox.stored_actions(conn, hashes).set_index("event_hash")
    quarantined = outbox.already_quarantined(conn, events)
    done: list[int] = []
    taken: list[int] = []
    conflicts: list[tuple[dict, str]] = []
    for position, (event, event_hash) in enumerate(
        zip(events.to_dict("records"), hashes, strict=True)
    ):
        if int(event["seq"]) in quarantined:
            done.append(position)
        elif event_hash in stored.index:
            same = stored.loc[event_hash]
            if (
                same["user_hash"] == hash_user(str(event["user_id"]), key)
                and same["resource_hash"]
                == hash_id("resource", str(event["provider"]), str(event["resource_id"]), key)
                and same["action_taken"] == event["action"]
            ):
                done.append(position)
            else:
                conflicts.append((event, CONFLICT))
                taken.append(position)
    taken += done
    return events.iloc[done], events.drop(index=events.index[taken]), conflicts


def process_events(
    conn: sa.Connection,
    events: pd.DataFrame,
    key: bytes,
    now: datetime,
    hold_hours: float,
) -> Outcome:
    """One unit of work, in the caller's transaction: every event given ends stored,
    quarantined, held, or dropped, its outbox row marked to match."""
    out = Outcome(read=len(events))
    done, pending, conflicts = split_done(conn, events, key)
    out.already_processed = len(done)
    remaining = erasure.drop_erased_events(conn, pending, key)
    out.dropped = len(pending) - len(remaining)
    records = remaining.to_dict("records")
    reasons = [derive.validate_action_event(e) for e in records]
    bad = conflicts + [(e, r) for e, r in zip(records, reasons, strict=True) if r]
    good = remaining[[r is None for r in reasons]] if not remaining.empty else remaining
    hashes = [
        hash_id("resource", p, r, key)
        for p, r in zip(good["provider"], good["resource_id"], strict=True)
    ]
    rows, held = derive.action_rows(
        good, detection_context(conn, hashes), user_preferences(conn), key, now
    )
    expired = expired_holds(held, now, hold_hours)
    reason = f"resource not detected within {hold_hours:g} h of the event's arrival"
    bad += [(e, reason) for e in expired.to_dict("records")]
    held = held.drop(index=expired.index)
    out.quarantined = outbox.quarantine(conn, bad, now)
    out.held = len(held)
    outbox.hold(conn, held, now, hold_hours)
    if not rows.empty:
        out.inserted = insert_new(conn, schema.user_action_patterns, rows, ["event_hash"])
        lifecycle = derive.action_lifecycle_rows(rows)
        insert_new(
            conn,
            schema.resource_lifecycle_events,
            lifecycle,
            ["source_event_hash", "event_type"],
        )
        ml = schema.ml_training_data
        out.relabelled = sum(
            queries.apply_labels(conn, ml.c.resource_hash.in_(chunk))
            for chunk in queries.in_chunks(rows["resource_hash"])
        )
        months = {
            (a, pd.Timestamp(t).strftime("%Y-%m"))
            for a, t in zip(rows["account_hash"], rows["action_at"], strict=True)
        }
        out.trends_updated = queries.refresh_waste_eliminated(
            conn, months, now.replace(tzinfo=None)
        )
        out.rows.append(rows)
    finished = [
        *done["seq"],
        *(e["seq"] for e, _ in bad),
        *good.drop(index=held.index.union(expired.index))["seq"],
    ]
    outbox.mark_processed(conn, finished, now)
    return out


def quarantine_failed(
    engine: sa.Engine, event: pd.DataFrame, exc: BaseException, now: datetime
) -> Outcome:
    """An event whose processing raised: kept with the error's type (its message may quote
    the event's raw ids), and done with."""
    reason = f"processing failed: {scrub_text(type(exc).__name__)}"
    with engine.begin() as conn:
        quarantined = outbox.quarantine(conn, [(event.to_dict("records")[0], reason)], now)
        outbox.mark_processed(conn, event["seq"], now)
    return Outcome(read=1, quarantined=quarantined, failed=1)


def run_batch(
    context: dg.AssetExecutionContext,
    engine: sa.Engine,
    config: ActionBatchConfig,
    key: bytes,
    now: datetime,
) -> Outcome:
    """Claim due events (committed on its own), then process them: together while that works,
    one by one (each its own transaction) for the events of a failed batch or of a run that
    died; an event that raises alone is quarantined."""
    with engine.begin() as conn:
        claim = outbox.claim(conn, now, config.min_seq, config.max_seq, config.max_events)
    with engine.connect() as conn:
        events, unreadable = outbox.read_events(conn, claim.seqs)
    total = Outcome()
    if unreadable:
        with engine.begin() as conn:
            bad = [(u, f"unreadable outbox row: {u.pop('_error')}") for u in unreadable]
            total.add(Outcome(read=len(bad), quarantined=outbox.quarantine(conn, bad, now)))
            outbox.mark_processed(conn, (u["seq"] for u, _ in bad), now)
    stuck = events["seq"].isin(claim.stuck)
    if stuck.any():
        reason = f"processing did not finish in {outbox.GIVE_UP_AFTER} runs (the run stopped)"
        with engine.begin() as conn:
            bad = [(e, reason) for e in events[stuck].to_dict("records")]
            total.add(Outcome(read=len(bad), quarantined=outbox.quarantine(conn, bad, now)))
            outbox.mark_processed(conn, events.loc[stuck, "seq"], now)
    suspect = events["seq"].isin(claim.suspects)
    batch, alone = events[~suspect & ~stuck], events[suspect]
    if not batch.empty:
        try:
            with engine.begin() as conn:
                total.add(process_events(conn, batch, key, now, config.hold_hours))
        except Exception as exc:
            if transient(exc):
                raise
            context.log.warning(
                f"a batch of {len(batch)} event(s) failed ({type(exc).__name__}): "
                "processing them one by one"
            )
            alone = pd.concat([batch, alone]).sort_values("seq")
    if len(alone):
        context.log.info(f"processing {len(alone)} event(s) one by one")
    for position in range(len(alone)):
        event = alone.iloc[[position]]
        try:
            with engine.begin() as conn:
                total.add(process_events(conn, event, key, now, config.hold_hours))
        except Exception as exc:
            if transient(exc):
                raise
            total.add(quarantine_failed(engine, event, exc, now))
    return total


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
@scrubbed
def user_action_patterns(
    context: dg.AssetExecutionContext,
    config: ActionBatchConfig,
    warehouse: WarehouseResource,
    anonymizer: AnonymizerResource,
) -> dg.MaterializeResult:
    out = run_batch(
        context, warehouse.engine(), config, anonymizer.key_bytes(warehouse), settings.now()
    )
    rows = out.stored()
    actions = rows["action_taken"].value_counts().to_dict() if not rows.empty else {}
    if out.held:
        context.log.info(f"{out.held} event(s) held: their resource has not been detected yet")
    return dg.MaterializeResult(
        metadata={
            "events_read": out.read,
            "events_already_processed": out.already_processed,
            "events_of_erased_subjects_dropped": out.dropped,
            "dagster/row_count": out.inserted,
            "rows_inserted": out.inserted,
            "events_held": out.held,
            "events_quarantined": out.quarantined,
            "events_failed_processing": out.failed,
            "training_rows_relabelled": out.relabelled,
            "cost_trend_rows_updated": out.trends_updated,
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
