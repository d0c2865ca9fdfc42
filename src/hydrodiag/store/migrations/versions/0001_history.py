"""History: predictions, registered topologies, equipment -> topology bindings.

Revision ID: 0001_history
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001_history"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("uid", sa.String(32), nullable=False),
        sa.Column("equipment_id", sa.String(128), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("topology_id", sa.String(64), nullable=True),
        sa.Column("system_health", sa.Float(), nullable=False),
        sa.Column("component_health", Json, nullable=False),
        sa.Column("anomaly_probabilities", Json, nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("request_id", sa.String(160), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("uid", name="uq_predictions_uid"),
    )
    op.create_index("ix_predictions_equipment_time", "predictions", ["equipment_id", "timestamp"])
    op.create_table(
        "topologies",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("definition", Json, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "equipment",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("topology_id", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("equipment")
    op.drop_table("topologies")
    op.drop_index("ix_predictions_equipment_time", table_name="predictions")
    op.drop_table("predictions")
