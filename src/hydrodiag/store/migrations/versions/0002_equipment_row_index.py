"""Index predictions by (equipment_id, id): with several workers, each reads the rows the others
stored for a machine since the last id it saw, without scanning the machine's whole history.

Revision ID: 0002_equipment_row_index
Revises: 0001_history
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0002_equipment_row_index"
down_revision = "0001_history"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_predictions_equipment_row", "predictions", ["equipment_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_predictions_equipment_row", table_name="predictions")
