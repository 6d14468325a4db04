"""Shard runs: one account's failure is a row, not a failed run.

- ``raw.account_failures``: per (day, account alias, asset) the last error (type and scrubbed
  message), the attempts, when to retry and when it was resolved. A run scans a shard of many
  accounts; one account's failure is recorded here and retried by ``failed_accounts_sensor``,
  never failing or rolling back the others.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

RAW = "raw"


def upgrade() -> None:
    op.create_table(
        "account_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("scan_date", sa.Date(), nullable=False),
        sa.Column("account_alias", sa.String(length=63), nullable=False),
        sa.Column("asset", sa.String(length=64), nullable=False),
        sa.Column("error_type", sa.String(length=100), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_failed_at", sa.DateTime(), nullable=False),
        sa.Column("last_failed_at", sa.DateTime(), nullable=False),
        sa.Column("retry_at", sa.DateTime(), nullable=True),
        sa.Column("resolved_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_failures")),
        sa.UniqueConstraint(
            "scan_date",
            "account_alias",
            "asset",
            name=op.f("uq_account_failures_scan_date_account_alias_asset"),
        ),
        schema=RAW,
    )
    op.create_index(
        "idx_account_failures_open",
        "account_failures",
        ["resolved_at", "retry_at"],
        schema=RAW,
    )


def downgrade() -> None:
    op.drop_index("idx_account_failures_open", table_name="account_failures", schema=RAW)
    op.drop_table("account_failures", schema=RAW)
