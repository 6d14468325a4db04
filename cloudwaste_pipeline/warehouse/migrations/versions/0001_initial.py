"""Initial schema: the six ML tables (seed 002 + roadmap 003 enrichment) and the raw store.

Revision ID: 0001
Revises:
Create Date: 2026-11-23 08:54:17.605235
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SCHEMA IF NOT EXISTS raw")
    op.create_table(
        "cloudwatch_metrics_history",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("resource_hash", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=50), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("metric_name", sa.String(length=100), nullable=False),
        sa.Column(
            "metric_values",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("aggregation_period", sa.String(length=20), nullable=False),
        sa.Column("start_date", sa.DateTime(), nullable=False),
        sa.Column("end_date", sa.DateTime(), nullable=False),
        sa.Column("collected_at", sa.DateTime(), nullable=False),
        sa.Column("account_hash", sa.String(length=64), nullable=False),
        sa.Column("scan_date", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cloudwatch_metrics_history")),
    )
    with op.batch_alter_table("cloudwatch_metrics_history", schema=None) as batch_op:
        batch_op.create_index("ix_cw_metrics_name", ["metric_name"], unique=False)
        batch_op.create_index(
            "ix_cw_metrics_partition", ["scan_date", "account_hash"], unique=False
        )
        batch_op.create_index("ix_cw_metrics_resource", ["resource_hash"], unique=False)
        batch_op.create_index("ix_cw_metrics_type", ["resource_type"], unique=False)

    op.create_table(
        "cost_trend_data",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_hash", sa.String(length=64), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("total_spend", sa.Float(), nullable=False),
        sa.Column("waste_detected", sa.Float(), nullable=False),
        sa.Column("waste_eliminated", sa.Float(), nullable=False),
        sa.Column("waste_percentage", sa.Float(), nullable=False),
        sa.Column(
            "top_waste_categories",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "regional_breakdown",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cost_trend_data")),
        sa.UniqueConstraint("account_hash", "month", name="uq_cost_trend_account_month"),
    )
    with op.batch_alter_table("cost_trend_data", schema=None) as batch_op:
        batch_op.create_index("ix_cost_trend_account", ["account_hash"], unique=False)
        batch_op.create_index("ix_cost_trend_month", ["month"], unique=False)
        batch_op.create_index("ix_cost_trend_provider", ["provider"], unique=False)
        batch_op.create_index("ix_cost_trend_waste_pct", ["waste_percentage"], unique=False)

    op.create_table(
        "ml_training_data",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_hash", sa.String(length=64), nullable=False),
        sa.Column("resource_hash", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=50), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("region_anonymized", sa.String(length=20), nullable=False),
        sa.Column("resource_age_days", sa.Integer(), nullable=False),
        sa.Column("detection_scenario", sa.String(length=50), nullable=False),
        sa.Column("confidence_level", sa.String(length=20), nullable=False),
        sa.Column(
            "metrics_summary",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("cost_monthly", sa.Float(), nullable=False),
        sa.Column("user_action", sa.String(length=30), nullable=True),
        sa.Column(
            "resource_config",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("detected_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("cost_source", sa.String(length=50), nullable=True),
        sa.Column("cost_real_monthly", sa.Float(), nullable=True),
        sa.Column("cost_variance_pct", sa.Float(), nullable=True),
        sa.Column("cost_real_reason", sa.String(length=200), nullable=True),
        sa.Column("parent_resource_hash", sa.String(length=64), nullable=True),
        sa.Column("parent_resource_type", sa.String(length=50), nullable=True),
        sa.Column("parent_resource_state", sa.String(length=30), nullable=True),
        sa.Column(
            "temporal_features",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "tags_anonymized",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("scan_date", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ml_training_data")),
    )
    with op.batch_alter_table("ml_training_data", schema=None) as batch_op:
        batch_op.create_index("ix_ml_training_account", ["account_hash"], unique=False)
        batch_op.create_index("ix_ml_training_confidence", ["confidence_level"], unique=False)
        batch_op.create_index("ix_ml_training_detected_at", ["detected_at"], unique=False)
        batch_op.create_index(
            "ix_ml_training_partition", ["scan_date", "account_hash"], unique=False
        )
        batch_op.create_index("ix_ml_training_provider", ["provider"], unique=False)
        batch_op.create_index("ix_ml_training_region", ["region_anonymized"], unique=False)
        batch_op.create_index("ix_ml_training_resource", ["resource_hash"], unique=False)
        batch_op.create_index("ix_ml_training_resource_type", ["resource_type"], unique=False)
        batch_op.create_index("ix_ml_training_scenario", ["detection_scenario"], unique=False)
        batch_op.create_index("ix_ml_training_user_action", ["user_action"], unique=False)

    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=50), nullable=False),
        sa.Column("source_ref", sa.String(length=200), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("quarantined_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
        sa.UniqueConstraint("source", "source_ref", name="uq_quarantine_source_ref"),
        schema="raw",
    )
    op.create_table(
        "raw_scans",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("account_id", sa.String(length=200), nullable=False),
        sa.Column("account_alias", sa.String(length=63), nullable=True),
        sa.Column("scan_date", sa.Date(), nullable=False),
        sa.Column("scanned_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raw_scans")),
        sa.UniqueConstraint("provider", "account_id", "scan_date", name="uq_raw_scans_day"),
        schema="raw",
    )
    with op.batch_alter_table("raw_scans", schema="raw") as batch_op:
        batch_op.create_index("ix_raw_scans_scan_date", ["scan_date"], unique=False)

    op.create_table(
        "resource_action_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=200), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("account_id", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("resource_id", sa.String(length=2000), nullable=False),
        sa.Column("action", sa.String(length=30), nullable=False),
        sa.Column("action_at", sa.DateTime(), nullable=False),
        sa.Column(
            "context",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_resource_action_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_resource_action_events_event_id")),
        schema="raw",
    )
    op.create_table(
        "scan_errors",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("account_id", sa.String(length=200), nullable=False),
        sa.Column("scan_date", sa.Date(), nullable=False),
        sa.Column("region", sa.String(length=50), nullable=True),
        sa.Column("service", sa.String(length=100), nullable=True),
        sa.Column("error_code", sa.String(length=100), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scan_errors")),
        schema="raw",
    )
    with op.batch_alter_table("scan_errors", schema="raw") as batch_op:
        batch_op.create_index(
            "ix_scan_errors_scan", ["provider", "account_id", "scan_date"], unique=False
        )

    op.create_table(
        "resource_lifecycle_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("resource_hash", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=30), nullable=False),
        sa.Column("resource_type", sa.String(length=50), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("region_anonymized", sa.String(length=20), nullable=True),
        sa.Column("age_at_event_days", sa.Integer(), nullable=True),
        sa.Column("cost_at_event", sa.Float(), nullable=True),
        sa.Column(
            "metrics_snapshot",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("event_timestamp", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("account_hash", sa.String(length=64), nullable=False),
        sa.Column("scan_date", sa.Date(), nullable=True),
        sa.Column("source_event_hash", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resource_lifecycle_events")),
        sa.UniqueConstraint("source_event_hash", "event_type", name="uq_lifecycle_source_event"),
    )
    with op.batch_alter_table("resource_lifecycle_events", schema=None) as batch_op:
        batch_op.create_index("ix_lifecycle_event_type", ["event_type"], unique=False)
        batch_op.create_index("ix_lifecycle_partition", ["scan_date", "account_hash"], unique=False)
        batch_op.create_index("ix_lifecycle_provider", ["provider"], unique=False)
        batch_op.create_index("ix_lifecycle_resource", ["resource_hash"], unique=False)
        batch_op.create_index("ix_lifecycle_resource_type", ["resource_type"], unique=False)
        batch_op.create_index("ix_lifecycle_timestamp", ["event_timestamp"], unique=False)

    op.create_table(
        "user_action_patterns",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event_hash", sa.String(length=64), nullable=False),
        sa.Column("user_hash", sa.String(length=64), nullable=False),
        sa.Column("account_hash", sa.String(length=64), nullable=False),
        sa.Column("resource_hash", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=50), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("region_anonymized", sa.String(length=20), nullable=True),
        sa.Column("detection_scenario", sa.String(length=50), nullable=False),
        sa.Column("confidence_level", sa.String(length=20), nullable=False),
        sa.Column("action_taken", sa.String(length=30), nullable=False),
        sa.Column("time_to_action_hours", sa.Integer(), nullable=False),
        sa.Column("cost_monthly", sa.Float(), nullable=False),
        sa.Column("cost_saved_monthly", sa.Float(), nullable=False),
        sa.Column("industry_anonymized", sa.String(length=50), nullable=True),
        sa.Column("company_size_bucket", sa.String(length=20), nullable=True),
        sa.Column("detected_at", sa.DateTime(), nullable=False),
        sa.Column("action_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_action_patterns")),
        sa.UniqueConstraint("event_hash", name=op.f("uq_user_action_patterns_event_hash")),
    )
    with op.batch_alter_table("user_action_patterns", schema=None) as batch_op:
        batch_op.create_index("ix_user_action_account", ["account_hash"], unique=False)
        batch_op.create_index("ix_user_action_action", ["action_taken"], unique=False)
        batch_op.create_index("ix_user_action_action_at", ["action_at"], unique=False)
        batch_op.create_index("ix_user_action_detected", ["detected_at"], unique=False)
        batch_op.create_index("ix_user_action_provider", ["provider"], unique=False)
        batch_op.create_index("ix_user_action_resource", ["resource_hash"], unique=False)
        batch_op.create_index("ix_user_action_resource_type", ["resource_type"], unique=False)
        batch_op.create_index("ix_user_action_scenario", ["detection_scenario"], unique=False)
        batch_op.create_index("ix_user_action_user", ["user_hash"], unique=False)

    op.create_table(
        "user_preferences",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_hash", sa.String(length=64), nullable=False),
        sa.Column("ml_data_collection_consent", sa.Boolean(), nullable=False),
        sa.Column("ml_consent_date", sa.DateTime(), nullable=True),
        sa.Column("anonymized_industry", sa.String(length=50), nullable=True),
        sa.Column("anonymized_company_size", sa.String(length=20), nullable=True),
        sa.Column("data_retention_years", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_preferences")),
        sa.UniqueConstraint("user_hash", name=op.f("uq_user_preferences_user_hash")),
    )
    with op.batch_alter_table("user_preferences", schema=None) as batch_op:
        batch_op.create_index("ix_user_prefs_consent", ["ml_data_collection_consent"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("user_preferences", schema=None) as batch_op:
        batch_op.drop_index("ix_user_prefs_consent")

    op.drop_table("user_preferences")
    with op.batch_alter_table("user_action_patterns", schema=None) as batch_op:
        batch_op.drop_index("ix_user_action_user")
        batch_op.drop_index("ix_user_action_scenario")
        batch_op.drop_index("ix_user_action_resource_type")
        batch_op.drop_index("ix_user_action_resource")
        batch_op.drop_index("ix_user_action_provider")
        batch_op.drop_index("ix_user_action_detected")
        batch_op.drop_index("ix_user_action_action_at")
        batch_op.drop_index("ix_user_action_action")
        batch_op.drop_index("ix_user_action_account")

    op.drop_table("user_action_patterns")
    with op.batch_alter_table("resource_lifecycle_events", schema=None) as batch_op:
        batch_op.drop_index("ix_lifecycle_timestamp")
        batch_op.drop_index("ix_lifecycle_resource_type")
        batch_op.drop_index("ix_lifecycle_resource")
        batch_op.drop_index("ix_lifecycle_provider")
        batch_op.drop_index("ix_lifecycle_partition")
        batch_op.drop_index("ix_lifecycle_event_type")

    op.drop_table("resource_lifecycle_events")
    with op.batch_alter_table("scan_errors", schema="raw") as batch_op:
        batch_op.drop_index("ix_scan_errors_scan")

    op.drop_table("scan_errors", schema="raw")
    op.drop_table("resource_action_events", schema="raw")
    with op.batch_alter_table("raw_scans", schema="raw") as batch_op:
        batch_op.drop_index("ix_raw_scans_scan_date")

    op.drop_table("raw_scans", schema="raw")
    op.drop_table("quarantine", schema="raw")
    with op.batch_alter_table("ml_training_data", schema=None) as batch_op:
        batch_op.drop_index("ix_ml_training_user_action")
        batch_op.drop_index("ix_ml_training_scenario")
        batch_op.drop_index("ix_ml_training_resource_type")
        batch_op.drop_index("ix_ml_training_resource")
        batch_op.drop_index("ix_ml_training_region")
        batch_op.drop_index("ix_ml_training_provider")
        batch_op.drop_index("ix_ml_training_partition")
        batch_op.drop_index("ix_ml_training_detected_at")
        batch_op.drop_index("ix_ml_training_confidence")
        batch_op.drop_index("ix_ml_training_account")

    op.drop_table("ml_training_data")
    with op.batch_alter_table("cost_trend_data", schema=None) as batch_op:
        batch_op.drop_index("ix_cost_trend_waste_pct")
        batch_op.drop_index("ix_cost_trend_provider")
        batch_op.drop_index("ix_cost_trend_month")
        batch_op.drop_index("ix_cost_trend_account")

    op.drop_table("cost_trend_data")
    with op.batch_alter_table("cloudwatch_metrics_history", schema=None) as batch_op:
        batch_op.drop_index("ix_cw_metrics_type")
        batch_op.drop_index("ix_cw_metrics_resource")
        batch_op.drop_index("ix_cw_metrics_partition")
        batch_op.drop_index("ix_cw_metrics_name")

    op.drop_table("cloudwatch_metrics_history")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP SCHEMA IF EXISTS raw")
