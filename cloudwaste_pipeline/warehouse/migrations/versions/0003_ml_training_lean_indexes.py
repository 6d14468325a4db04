"""ml_training_data loses its five low-cardinality indexes (seed 002 had them).

resource_type, provider, region_anonymized, detection_scenario and confidence_level hold a
handful of values each: no query here or in an analyst's notebook is selective on one of them
(the planner prefers a scan), while each index costs a B-tree insert per loaded row. Measured on
PostgreSQL with ``benchmarks/scale.py``: the note of the session that made this change.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

DROPPED = {
    "idx_ml_training_resource_type": "resource_type",
    "idx_ml_training_provider": "provider",
    "idx_ml_training_region": "region_anonymized",
    "idx_ml_training_scenario": "detection_scenario",
    "idx_ml_training_confidence": "confidence_level",
}


def upgrade() -> None:
    for name in DROPPED:
        op.drop_index(name, table_name="ml_training_data")


def downgrade() -> None:
    for name, column in DROPPED.items():
        op.create_index(name, "ml_training_data", [column])
