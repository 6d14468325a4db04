"""Model outputs: resource anomaly scores and cost forecasts (ML schema, hashes only).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "resource_anomaly_scores",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("resource_hash", sa.String(length=64), nullable=False),
        sa.Column("account_hash", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=50), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("anomaly_score", sa.Float(), nullable=False),
        sa.Column("is_anomaly", sa.Boolean(), nullable=False),
        sa.Column("main_driver", sa.String(length=150), nullable=False),
        sa.Column("features", JSON, nullable=False),
        sa.Column("window_end", sa.DateTime(), nullable=True),
        sa.Column("scored_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resource_anomaly_scores")),
        sa.UniqueConstraint("resource_hash", name=op.f("uq_resource_anomaly_scores_resource_hash")),
    )
    op.create_index("idx_anomaly_account", "resource_anomaly_scores", ["account_hash"])
    op.create_index("idx_anomaly_score", "resource_anomaly_scores", ["anomaly_score"])
    op.create_table(
        "cost_forecasts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("account_hash", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("metric", sa.String(length=30), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("horizon", sa.Integer(), nullable=False),
        sa.Column("forecast", sa.Float(), nullable=False),
        sa.Column("lower", sa.Float(), nullable=False),
        sa.Column("upper", sa.Float(), nullable=False),
        sa.Column("interval_level", sa.Float(), nullable=False),
        sa.Column("trend_per_month", sa.Float(), nullable=False),
        sa.Column("history_months", sa.Integer(), nullable=False),
        sa.Column("last_month", sa.String(length=7), nullable=False),
        sa.Column("generated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cost_forecasts")),
        sa.UniqueConstraint(
            "account_hash",
            "metric",
            "month",
            name=op.f("uq_cost_forecasts_account_hash_metric_month"),
        ),
    )


def downgrade() -> None:
    op.drop_table("cost_forecasts")
    op.drop_index("idx_anomaly_score", table_name="resource_anomaly_scores")
    op.drop_index("idx_anomaly_account", table_name="resource_anomaly_scores")
    op.drop_table("resource_anomaly_scores")
