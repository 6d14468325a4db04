"""The warehouse tables (SQLAlchemy Core), for PostgreSQL and SQLite alike.

Two stores:
- the ML store (default schema): the six tables of the architecture seed, anonymized, plus the
  roadmap's enrichment columns; this is what is exported and trained on;
- the raw store (schema ``raw``: a schema on PostgreSQL, an attached file on SQLite): raw scans,
  the user-action outbox, quarantine and scan errors. It holds raw ids, has short retention and
  is never exported.

Conventions: every timestamp is naive UTC (``DateTime()``), one rule on both engines; JSON is
JSONB on PostgreSQL; ids of ML rows are UUIDs made client-side, so bulk loads need no round trip.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

RAW_SCHEMA = "raw"
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
SeqType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

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
    return datetime.now(UTC).replace(tzinfo=None)


def _id() -> sa.Column:
    return sa.Column("id", sa.Uuid(), primary_key=True, default=uuid.uuid4)


def _created() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(), nullable=False, default=utcnow)


def _hash(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(64), nullable=nullable)


user_preferences = sa.Table(
    "user_preferences",
    metadata,
    _id(),
    sa.Column("user_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("ml_data_collection_consent", sa.Boolean(), nullable=False, default=False),
    sa.Column("ml_consent_date", sa.DateTime()),
    sa.Column("anonymized_industry", sa.String(50)),
    sa.Column("anonymized_company_size", sa.String(20)),
    # An integer (the seed has VARCHAR '3'): retention arithmetic needs a number.
    sa.Column("data_retention_years", sa.Integer(), nullable=False, default=3),
    _created(),
    sa.Column("updated_at", sa.DateTime(), nullable=False, default=utcnow),
    sa.Index("ix_user_prefs_consent", "ml_data_collection_consent"),
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
    sa.Column("user_action", sa.String(30)),
    sa.Column("resource_config", JSONType),
    sa.Column("detected_at", sa.DateTime(), nullable=False),
    _created(),
    # Enrichment (roadmap seed 003).
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
    sa.Index("ix_ml_training_resource_type", "resource_type"),
    sa.Index("ix_ml_training_provider", "provider"),
    sa.Index("ix_ml_training_region", "region_anonymized"),
    sa.Index("ix_ml_training_scenario", "detection_scenario"),
    sa.Index("ix_ml_training_confidence", "confidence_level"),
    sa.Index("ix_ml_training_user_action", "user_action"),
    sa.Index("ix_ml_training_detected_at", "detected_at"),
    sa.Index("ix_ml_training_account", "account_hash"),
    sa.Index("ix_ml_training_partition", "scan_date", "account_hash"),
    sa.Index("ix_ml_training_resource", "resource_hash"),
)

resource_lifecycle_events = sa.Table(
    "resource_lifecycle_events",
    metadata,
    _id(),
    _hash("resource_hash"),
    sa.Column("event_type", sa.String(30), nullable=False),
    sa.Column("resource_type", sa.String(50), nullable=False),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("region_anonymized", sa.String(20)),
    sa.Column("age_at_event_days", sa.Integer()),
    sa.Column("cost_at_event", sa.Float()),
    sa.Column("metrics_snapshot", JSONType),
    sa.Column("event_timestamp", sa.DateTime(), nullable=False),
    _created(),
    _hash("account_hash"),
    sa.Column("scan_date", sa.Date()),  # NULL for events that come from user actions
    _hash("source_event_hash", nullable=True),
    sa.Index("ix_lifecycle_resource", "resource_hash"),
    sa.Index("ix_lifecycle_event_type", "event_type"),
    sa.Index("ix_lifecycle_resource_type", "resource_type"),
    sa.Index("ix_lifecycle_timestamp", "event_timestamp"),
    sa.Index("ix_lifecycle_provider", "provider"),
    sa.Index("ix_lifecycle_partition", "scan_date", "account_hash"),
    sa.UniqueConstraint("source_event_hash", "event_type", name="uq_lifecycle_source_event"),
)

cloudwatch_metrics_history = sa.Table(
    "cloudwatch_metrics_history",
    metadata,
    _id(),
    _hash("resource_hash"),
    sa.Column("resource_type", sa.String(50), nullable=False),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("metric_name", sa.String(100), nullable=False),
    sa.Column("metric_values", JSONType, nullable=False),
    sa.Column("aggregation_period", sa.String(20), nullable=False),
    sa.Column("start_date", sa.DateTime(), nullable=False),
    sa.Column("end_date", sa.DateTime(), nullable=False),
    sa.Column("collected_at", sa.DateTime(), nullable=False, default=utcnow),
    _hash("account_hash"),
    sa.Column("scan_date", sa.Date(), nullable=False),
    sa.Index("ix_cw_metrics_resource", "resource_hash"),
    sa.Index("ix_cw_metrics_type", "resource_type"),
    sa.Index("ix_cw_metrics_name", "metric_name"),
    sa.Index("ix_cw_metrics_partition", "scan_date", "account_hash"),
)

user_action_patterns = sa.Table(
    "user_action_patterns",
    metadata,
    _id(),
    sa.Column("event_hash", sa.String(64), nullable=False, unique=True),
    _hash("user_hash"),
    _hash("account_hash"),
    _hash("resource_hash"),
    sa.Column("resource_type", sa.String(50), nullable=False),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("region_anonymized", sa.String(20)),
    sa.Column("detection_scenario", sa.String(50), nullable=False),
    sa.Column("confidence_level", sa.String(20), nullable=False),
    sa.Column("action_taken", sa.String(30), nullable=False),
    sa.Column("time_to_action_hours", sa.Integer(), nullable=False),
    sa.Column("cost_monthly", sa.Float(), nullable=False),
    sa.Column("cost_saved_monthly", sa.Float(), nullable=False),
    sa.Column("industry_anonymized", sa.String(50)),
    sa.Column("company_size_bucket", sa.String(20)),
    sa.Column("detected_at", sa.DateTime(), nullable=False),
    sa.Column("action_at", sa.DateTime(), nullable=False),
    _created(),
    sa.Index("ix_user_action_user", "user_hash"),
    sa.Index("ix_user_action_resource_type", "resource_type"),
    sa.Index("ix_user_action_scenario", "detection_scenario"),
    sa.Index("ix_user_action_action", "action_taken"),
    sa.Index("ix_user_action_detected", "detected_at"),
    sa.Index("ix_user_action_action_at", "action_at"),
    sa.Index("ix_user_action_provider", "provider"),
    sa.Index("ix_user_action_account", "account_hash"),
    sa.Index("ix_user_action_resource", "resource_hash"),
)

cost_trend_data = sa.Table(
    "cost_trend_data",
    metadata,
    _id(),
    _hash("account_hash"),
    sa.Column("month", sa.String(7), nullable=False),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("total_spend", sa.Float(), nullable=False),
    sa.Column("waste_detected", sa.Float(), nullable=False),
    sa.Column("waste_eliminated", sa.Float(), nullable=False),
    sa.Column("waste_percentage", sa.Float(), nullable=False),
    sa.Column("top_waste_categories", JSONType, nullable=False),
    sa.Column("regional_breakdown", JSONType),
    _created(),
    sa.Column("updated_at", sa.DateTime(), nullable=False, default=utcnow),
    sa.Index("ix_cost_trend_account", "account_hash"),
    sa.Index("ix_cost_trend_month", "month"),
    sa.Index("ix_cost_trend_provider", "provider"),
    sa.Index("ix_cost_trend_waste_pct", "waste_percentage"),
    sa.UniqueConstraint("account_hash", "month", name="uq_cost_trend_account_month"),
)

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
    sa.UniqueConstraint("provider", "account_id", "scan_date", name="uq_raw_scans_day"),
    sa.Index("ix_raw_scans_scan_date", "scan_date"),
    schema=RAW_SCHEMA,
)

resource_action_events = sa.Table(
    "resource_action_events",
    metadata,
    sa.Column("seq", SeqType, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(200), nullable=False, unique=True),
    sa.Column("user_id", sa.String(200), nullable=False),
    sa.Column("account_id", sa.String(200), nullable=False),
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("resource_id", sa.String(2000), nullable=False),
    sa.Column("action", sa.String(30), nullable=False),
    sa.Column("action_at", sa.DateTime(), nullable=False),
    sa.Column("context", JSONType),
    sa.Column("received_at", sa.DateTime(), nullable=False, default=utcnow),
    schema=RAW_SCHEMA,
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(50), nullable=False),
    sa.Column("source_ref", sa.String(200), nullable=False),
    sa.Column("payload", JSONType),
    sa.Column("reason", sa.String(1000), nullable=False),
    sa.Column("quarantined_at", sa.DateTime(), nullable=False, default=utcnow),
    sa.UniqueConstraint("source", "source_ref", name="uq_quarantine_source_ref"),
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
    sa.Column("service", sa.String(100)),
    sa.Column("error_code", sa.String(100)),
    sa.Column("message", sa.Text()),
    sa.Index("ix_scan_errors_scan", "provider", "account_id", "scan_date"),
    schema=RAW_SCHEMA,
)

ML_TABLES = (
    user_preferences,
    ml_training_data,
    resource_lifecycle_events,
    cloudwatch_metrics_history,
    user_action_patterns,
    cost_trend_data,
)
RAW_TABLES = (raw_scans, resource_action_events, quarantine, scan_errors)
