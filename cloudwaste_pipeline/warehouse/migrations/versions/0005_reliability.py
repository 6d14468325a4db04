"""Reliability: the warehouse knows its anonymization key; the outbox knows what is processed.

- ``anonymization_keys`` (ML store): one row per key epoch, with a keyed fingerprint (never the
  key), so a run with another key stops before writing instead of mixing two hash spaces.
- ``raw.resource_action_events`` gains ``processed_at``, ``attempts`` and ``next_attempt_at``:
  the action sensor launches a run while unprocessed rows exist (not only when the highest
  sequence grows), and a held event waits with a back-off instead of being retried every tick.
  Existing rows start unprocessed; the next action run marks those already stored.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

RAW = "raw"


def upgrade() -> None:
    op.create_table(
        "anonymization_keys",
        sa.Column("epoch", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=50), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("epoch", name=op.f("pk_anonymization_keys")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_anonymization_keys_fingerprint")),
    )
    for column in (
        sa.Column("processed_at", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
    ):
        op.add_column("resource_action_events", column, schema=RAW)
    op.create_index(
        "idx_outbox_pending",
        "resource_action_events",
        ["processed_at", "next_attempt_at"],
        schema=RAW,
    )


def downgrade() -> None:
    op.drop_index("idx_outbox_pending", table_name="resource_action_events", schema=RAW)
    for name in ("next_attempt_at", "attempts", "processed_at"):
        op.drop_column("resource_action_events", name, schema=RAW)
    op.drop_table("anonymization_keys")
