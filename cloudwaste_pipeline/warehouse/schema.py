"""The warehouse tables (SQLAlchemy Core), one definition for PostgreSQL and SQLite alike.

Two stores:

- the ML store (default schema): the six tables of the architecture seed, anonymized, plus the
  roadmap's enrichment columns and the partition keys the pipeline rewrites by. This is what is
  exported and trained on.
- the raw store (schema ``raw``: a real schema on PostgreSQL, a separate attached file on
  SQLite): raw scans, the user-action outbox, quarantine and scan errors. It holds raw cloud and
  user ids, has a short retention and is never exported, so it is kept physically apart.

Conventions, the same on both engines:

- every timestamp is a *naive* ``DateTime()`` holding UTC. SQLite has no time zones and
  ``TIMESTAMP WITH TIME ZONE`` would make PostgreSQL hand back aware values, so one rule (strip
  the zone after converting to UTC) keeps comparisons and exports identical everywhere;
- JSON columns are ``JSONType``: JSONB on PostgreSQL (indexable, compact), JSON text on SQLite;
- ML rows have client-made UUID ids, so bulk loads (``COPY``) need no round trip for keys; raw
  tables use integer keys because they never leave the warehouse;
- defaults are Python-side (``default=``), not server defaults, so ``load.bulk_insert`` can fill
  them before a ``COPY`` and both engines store the same values;
- every index and constraint has an explicit or convention-made name, so migrations can refer to
  them and autogenerate comparisons are stable.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, date, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from cloudwaste_pipeline import settings

RAW_SCHEMA = "raw"

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
"""JSONB on PostgreSQL, JSON (text) elsewhere."""

SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""BIGINT on PostgreSQL; plain INTEGER on SQLite, the only type that can alias the rowid."""

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def utcnow() -> datetime:
    """The pipeline clock (``settings.now``, pinnable for the demo) as naive UTC."""
    return settings.now().astimezone(UTC).replace(tzinfo=None)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        return value.item()  # numpy scalars: json only knows Python numbers
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        return _finite(value.item())
    return value


def dumps_json(value: Any) -> str:
    """The one JSON serializer, for both engines and for ``COPY``, so a value stores the same.

    NaN and infinities are not JSON (PostgreSQL's jsonb rejects them, SQLite would keep a token
    no other reader accepts), so they are written as ``null``: a missing metric, which is what a
    NaN in a metrics summary means. orjson (which writes them as ``null`` itself) is ten times
    the standard library's speed on the small objects of a training row, four per row; the
    standard library takes what orjson refuses (integers beyond 64 bits).
    """
    try:
        return orjson.dumps(value, default=_json_default, option=_ORJSON_OPTIONS).decode()
    except orjson.JSONEncodeError:
        pass
    try:
        return _ENCODER.encode(value)
    except ValueError:
        return _ENCODER.encode(_finite(value))


_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
_ENCODER = json.JSONEncoder(default=_json_default, separators=(",", ":"), allow_nan=False)


def _id() -> sa.Column[uuid.UUID]:
    return sa.Column("id", sa.Uuid(), primary_key=True, default=uuid.uuid4)


def _hash(name: str, nullable: bool = False) -> sa.Column[str]:
    """A SHA-256 hex digest (anonymized id)."""
    return sa.Column(name, sa.String(64), nullable=nullable)


def _stamp(name: str) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(), nullable=False, default=utcnow)


# --- ML store --------------------------------------------------------------------------------

user_preferences = sa.Table(
    "user_preferences",
    metadata,
    _id(),
    # The seed keys this by user_id (a foreign key to users); here the user is only a hash.
    _hash("user_hash"),
    sa.Column("ml_data_collection_consent", sa.Boolean(), nullable=False, default=False),
    sa.Column("ml_consent_date", sa.DateTime()),
    sa.Column("anonymized_industry", sa.String(50)),
    sa.Column("anonymized_company_size", sa.String(20)),
    # An integer, where the seed has VARCHAR(10) '3': retention cleanup does arithmetic on it.
    sa.Column("data_retention_years", sa.Integer(), nullable=False, default=3),
    _stamp("created_at"),
    _stamp("updated_at"),
    sa.UniqueConstraint("user_hash"),
    sa.Index("idx_user_prefs_consent", "ml_data_collection_consent"),
)

ml_training_data = sa.Table(
    "ml_training_data",
    metadata,
    _id(),
    _hash("account_hash"),
    _hash("resource_hash"),
    sa.Column("resource_type", sa.String(50), nullable=False),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("region_anonymized", sa.String(20), nullable=False),
    sa.Column("resource_age_days", sa.Integer(), nullable=False),
    sa.Column("detection_scenario", sa.String(50), nullable=False),
    sa.Column("confidence_level", sa.String(20), nullable=False),
    sa.Column("metrics_summary", JSONType),
    sa.Column("cost_monthly", sa.Float(), nullable=False),
    sa.Column("user_action", sa.String(30)),  # NULL until the user acts: the training label
    sa.Column("resource_config", JSONType),
    sa.Column("detected_at", sa.DateTime(), nullable=False),
    _stamp("created_at"),
    # Enrichment (roadmap seed 003, phase 2).
    sa.Column("cost_source", sa.String(50)),
    sa.Column("cost_real_monthly", sa.Float()),
    sa.Column("cost_variance_pct", sa.Float()),
    sa.Column("cost_real_reason", sa.String(200)),
    _hash("parent_resource_hash", nullable=True),
    sa.Column("parent_resource_type", sa.String(50)),
    sa.Column("parent_resource_state", sa.String(30)),
    sa.Column("temporal_features", JSONType),
    sa.Column("tags_anonymized", JSONType),
    # The scan partition: a re-run deletes and rewrites exactly (scan_date, account_hash).
    sa.Column("scan_date", sa.Date(), nullable=False),
    # The seed also indexed resource_type, provider, region_anonymized, detection_scenario and
    # confidence_level: a handful of values each, so no query is selective on them (the planner
    # scans), while each cost every load a B-tree insert per row. Dropped by migration 0003.
    sa.Index("idx_ml_training_user_action", "user_action"),
    sa.Index("idx_ml_training_detected_at", "detected_at"),
    sa.Index("idx_ml_training_account", "account_hash"),
    sa.Index("idx_ml_training_partition", "scan_date", "account_hash"),
    sa.Index("idx_ml_training_resource", "resource_hash"),
)

resource_lifecycle_events = sa.Table(
    "resource_lifecycle_events",
    metadata,
    _id(),
    _hash("resource_hash"),
    # detected, status_changed, deleted, metrics_updated, ...
    sa.Column("event_type", sa.String(30), nullable=False),
    sa.Column("resource_type", sa.String(50), nullable=False),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("region_anonymized", sa.String(20)),
    sa.Column("age_at_event_days", sa.Integer()),
    sa.Column("cost_at_event", sa.Float()),
    sa.Column("metrics_snapshot", JSONType),
    sa.Column("event_timestamp", sa.DateTime(), nullable=False),
    _stamp("created_at"),
    _hash("account_hash"),
    # The scan partition; NULL for events derived from user actions, which belong to no scan.
    sa.Column("scan_date", sa.Date()),
    # The user-action event an action-derived row came from: makes re-delivery a no-op.
    _hash("source_event_hash", nullable=True),
    sa.Index("idx_lifecycle_resource", "resource_hash"),
    sa.Index("idx_lifecycle_event_type", "event_type"),
    sa.Index("idx_lifecycle_resource_type", "resource_type"),
    sa.Index("idx_lifecycle_timestamp", "event_timestamp"),
    sa.Index("idx_lifecycle_provider", "provider"),
    sa.Index("idx_lifecycle_partition", "scan_date", "account_hash"),
    # NULLs never collide (on both engines), so scan-derived rows are not constrained by it.
    sa.UniqueConstraint("source_event_hash", "event_type"),
)

cloudwatch_metrics_history = sa.Table(
    "cloudwatch_metrics_history",
    metadata,
    _id(),
    _hash("resource_hash"),
    sa.Column("resource_type", sa.String(50), nullable=False),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("metric_name", sa.String(100), nullable=False),
    sa.Column("metric_values", JSONType, nullable=False),  # the time series
    sa.Column("aggregation_period", sa.String(20), nullable=False),  # hourly, daily, weekly
    sa.Column("start_date", sa.DateTime(), nullable=False),
    sa.Column("end_date", sa.DateTime(), nullable=False),
    _stamp("collected_at"),
    _hash("account_hash"),
    sa.Column("scan_date", sa.Date(), nullable=False),
    sa.Index("idx_cw_metrics_resource", "resource_hash"),
    sa.Index("idx_cw_metrics_type", "resource_type"),
    sa.Index("idx_cw_metrics_name", "metric_name"),
    sa.Index("idx_cw_metrics_partition", "scan_date", "account_hash"),
)

user_action_patterns = sa.Table(
    "user_action_patterns",
    metadata,
    _id(),
    _hash("user_hash"),
    _hash("account_hash"),
    _hash("resource_hash"),
    sa.Column("resource_type", sa.String(50), nullable=False),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("region_anonymized", sa.String(20)),
    sa.Column("detection_scenario", sa.String(50), nullable=False),
    sa.Column("confidence_level", sa.String(20), nullable=False),
    sa.Column("action_taken", sa.String(30), nullable=False),  # deleted, ignored, kept
    sa.Column("time_to_action_hours", sa.Integer(), nullable=False),
    sa.Column("cost_monthly", sa.Float(), nullable=False),
    sa.Column("cost_saved_monthly", sa.Float(), nullable=False),
    sa.Column("industry_anonymized", sa.String(50)),
    sa.Column("company_size_bucket", sa.String(20)),
    sa.Column("detected_at", sa.DateTime(), nullable=False),
    sa.Column("action_at", sa.DateTime(), nullable=False),
    _stamp("created_at"),
    # The outbox event this row came from (hashed): the idempotency key of the action sensor.
    _hash("event_hash"),
    sa.UniqueConstraint("event_hash"),
    sa.Index("idx_user_action_user", "user_hash"),
    sa.Index("idx_user_action_resource_type", "resource_type"),
    sa.Index("idx_user_action_scenario", "detection_scenario"),
    sa.Index("idx_user_action_action", "action_taken"),
    sa.Index("idx_user_action_detected", "detected_at"),
    sa.Index("idx_user_action_action_at", "action_at"),
    sa.Index("idx_user_action_provider", "provider"),
    sa.Index("idx_user_action_account", "account_hash"),
    sa.Index("idx_user_action_resource", "resource_hash"),
)

cost_trend_data = sa.Table(
    "cost_trend_data",
    metadata,
    _id(),
    _hash("account_hash"),
    sa.Column("month", sa.String(7), nullable=False),  # YYYY-MM
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("total_spend", sa.Float(), nullable=False),
    sa.Column("waste_detected", sa.Float(), nullable=False),
    sa.Column("waste_eliminated", sa.Float(), nullable=False),
    sa.Column("waste_percentage", sa.Float(), nullable=False),
    sa.Column("top_waste_categories", JSONType, nullable=False),
    sa.Column("regional_breakdown", JSONType),
    _stamp("created_at"),
    _stamp("updated_at"),
    # One row per account and month: the monthly aggregate is replaced, never appended.
    sa.UniqueConstraint("account_hash", "month"),
    sa.Index("idx_cost_trend_account", "account_hash"),
    sa.Index("idx_cost_trend_month", "month"),
    sa.Index("idx_cost_trend_provider", "provider"),
    sa.Index("idx_cost_trend_waste_pct", "waste_percentage"),
)

erasure_tombstones = sa.Table(
    "erasure_tombstones",
    metadata,
    _id(),
    # Only the subject's hash: the tombstone must not itself keep what was erased. With the key,
    # a known id can still be checked against it, which is what the pipeline needs to do.
    sa.Column("kind", sa.String(20), nullable=False),  # user, account
    _hash("subject_hash"),
    sa.Column("reason", sa.String(200)),
    _stamp("requested_at"),
    # One tombstone per subject: erasing twice keeps the first request's date.
    sa.UniqueConstraint("kind", "subject_hash"),
)
"""GDPR erasures: the scan derivation, the action batch and the cost trends skip these subjects,
so a re-materialization cannot bring their rows back (see ``privacy/erasure.py``)."""

anonymization_keys = sa.Table(
    "anonymization_keys",
    metadata,
    # Epoch 1 is the key the warehouse was first written with; a rotation adds the next epoch.
    sa.Column("epoch", sa.Integer(), primary_key=True, autoincrement=False),
    # A keyed fingerprint of the key (never the key): every writer compares its own against the
    # current epoch's before writing, so two hash spaces can never be mixed in one warehouse.
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("method", sa.String(50), nullable=False),  # initial, rekey-hmac-of-hash
    _stamp("created_at"),
    sa.UniqueConstraint("fingerprint"),
)
"""The anonymization key's history (see ``privacy/keyring.py``)."""

# --- model outputs (anonymized; rebuilt whole by their asset) -----------------------------------

resource_anomaly_scores = sa.Table(
    "resource_anomaly_scores",
    metadata,
    _id(),
    _hash("resource_hash"),
    _hash("account_hash"),
    sa.Column("resource_type", sa.String(50), nullable=False),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("anomaly_score", sa.Float(), nullable=False),  # 0-100, Isolation Forest
    sa.Column("is_anomaly", sa.Boolean(), nullable=False),
    sa.Column("main_driver", sa.String(150), nullable=False),  # e.g. "VolumeReadOps spike"
    sa.Column("features", JSONType, nullable=False),
    sa.Column("window_end", sa.DateTime()),  # the last day of the series scored
    _stamp("scored_at"),
    # The current score of each resource: a materialization replaces the table's rows.
    sa.UniqueConstraint("resource_hash"),
    sa.Index("idx_anomaly_account", "account_hash"),
    sa.Index("idx_anomaly_score", "anomaly_score"),
)
"""``resource_anomaly_model``'s scores (see ``ml/anomaly.py``)."""

cost_forecasts = sa.Table(
    "cost_forecasts",
    metadata,
    _id(),
    _hash("account_hash"),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("metric", sa.String(30), nullable=False),  # total_spend, waste_detected
    sa.Column("month", sa.String(7), nullable=False),  # YYYY-MM forecast
    sa.Column("horizon", sa.Integer(), nullable=False),  # months after last_month
    sa.Column("forecast", sa.Float(), nullable=False),  # USD per month
    sa.Column("lower", sa.Float(), nullable=False),
    sa.Column("upper", sa.Float(), nullable=False),
    sa.Column("interval_level", sa.Float(), nullable=False),  # e.g. 0.9
    sa.Column("trend_per_month", sa.Float(), nullable=False),
    sa.Column("history_months", sa.Integer(), nullable=False),
    sa.Column("last_month", sa.String(7), nullable=False),
    _stamp("generated_at"),
    # The current forecast: a materialization replaces the table's rows.
    sa.UniqueConstraint("account_hash", "metric", "month"),
)
"""``cost_forecast``'s rows (see ``ml/forecast.py``)."""

MODEL_TABLES: tuple[sa.Table, ...] = (resource_anomaly_scores, cost_forecasts)
"""Model outputs keyed by account: erased with the account, rebuilt whole by their assets."""

# --- raw store (raw ids; never exported) -----------------------------------------------------

raw_scans = sa.Table(
    "raw_scans",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("account_id", sa.String(200), nullable=False),
    sa.Column("account_alias", sa.String(63)),
    sa.Column("scan_date", sa.Date(), nullable=False),
    sa.Column("scanned_at", sa.DateTime(), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("payload", JSONType, nullable=False),
    # One scan per account and day: a re-scan replaces the day.
    sa.UniqueConstraint("provider", "account_id", "scan_date"),
    sa.Index("idx_raw_scans_scan_date", "scan_date"),
    schema=RAW_SCHEMA,
)

resource_action_events = sa.Table(
    "resource_action_events",
    metadata,
    # The sensor's cursor. AUTOINCREMENT on SQLite so a number is never reused after the newest
    # rows are deleted (a plain rowid would hand out max+1 again, behind the cursor).
    sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(200), nullable=False),
    sa.Column("user_id", sa.String(200), nullable=False),
    sa.Column("account_id", sa.String(200), nullable=False),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("resource_id", sa.String(2000), nullable=False),
    sa.Column("action", sa.String(30), nullable=False),
    sa.Column("action_at", sa.DateTime(), nullable=False),
    sa.Column("context", JSONType),
    _stamp("received_at"),
    # Set when the event is stored, quarantined or dropped (erased subject): the sensor launches
    # a run while unprocessed rows exist, whatever their sequence number. Other writers insert
    # without these columns, hence the server defaults.
    sa.Column("processed_at", sa.DateTime()),
    sa.Column("attempts", sa.Integer(), nullable=False, default=0, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime()),  # a held event waits for its resource's scan
    sa.UniqueConstraint("event_id"),
    sa.Index("idx_outbox_pending", "processed_at", "next_attempt_at"),
    schema=RAW_SCHEMA,
    sqlite_autoincrement=True,
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(50), nullable=False),
    sa.Column("source_ref", sa.String(200), nullable=False),
    sa.Column("payload", JSONType),
    sa.Column("reason", sa.String(1000), nullable=False),
    _stamp("quarantined_at"),
    sa.UniqueConstraint("source", "source_ref"),
    schema=RAW_SCHEMA,
)

scan_errors = sa.Table(
    "scan_errors",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("account_id", sa.String(200), nullable=False),
    sa.Column("scan_date", sa.Date(), nullable=False),
    sa.Column("region", sa.String(50)),
    sa.Column("service", sa.String(50)),
    sa.Column("error_code", sa.String(100)),
    sa.Column("message", sa.Text()),
    sa.Index("idx_scan_errors_scan", "provider", "account_id", "scan_date"),
    schema=RAW_SCHEMA,
)

ML_TABLES: tuple[sa.Table, ...] = (
    user_preferences,
    ml_training_data,
    resource_lifecycle_events,
    cloudwatch_metrics_history,
    user_action_patterns,
    cost_trend_data,
)
"""The six ML tables, in the architecture seed's order."""

ROW_TIME: dict[str, str] = {
    "ml_training_data": "detected_at",
    "resource_lifecycle_events": "event_timestamp",
    "cloudwatch_metrics_history": "end_date",
    "user_action_patterns": "action_at",
}
"""The timestamp column that dates a row of an ML table (its retention, its date window)."""

account_failures = sa.Table(
    "account_failures",
    metadata,
    # A surrogate key: retention deletes in batches by one key column.
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("scan_date", sa.Date(), nullable=False),
    sa.Column("account_alias", sa.String(63), nullable=False),
    sa.Column("asset", sa.String(64), nullable=False),
    sa.Column("error_type", sa.String(100), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("first_failed_at", sa.DateTime(), nullable=False),
    sa.Column("last_failed_at", sa.DateTime(), nullable=False),
    sa.Column("retry_at", sa.DateTime()),
    sa.Column("resolved_at", sa.DateTime()),
    sa.UniqueConstraint("scan_date", "account_alias", "asset"),
    sa.Index("idx_account_failures_open", "resolved_at", "retry_at"),
    schema=RAW_SCHEMA,
)
"""One account's failure in a shard run, by alias (never a raw id), so one account never fails
the others: listed by the ``no_failed_accounts`` check, retried by ``failed_accounts_sensor``,
``resolved_at`` set when a later attempt succeeds. ``scan_date`` is the month's first day for
``cost_trend_data``."""

RAW_TABLES: tuple[sa.Table, ...] = (
    raw_scans,
    resource_action_events,
    quarantine,
    scan_errors,
    account_failures,
)
"""The raw store: raw ids, short retention, never exported."""
