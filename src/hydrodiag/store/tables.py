"""The history database's tables (SQLAlchemy Core). The schema itself is created and changed only
by the Alembic migrations in `store/migrations/`; these definitions are what the code reads and
writes, and what `alembic revision --autogenerate` compares against."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, DateTime, Float, Index, Integer, MetaData, String, Table
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

# JSONB on PostgreSQL (indexable, compact); plain JSON text elsewhere.
Json = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY, so the 64-bit id is INTEGER there.
Id = BigInteger().with_variant(Integer(), "sqlite")

predictions = Table(
    "predictions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    # Made by the service for each prediction: a retried batch insert after a lost commit
    # acknowledgement is then ignored instead of counted twice.
    Column("uid", String(32), nullable=False, unique=True),
    Column("equipment_id", String(128), nullable=False),
    Column("timestamp", DateTime(timezone=True), nullable=False),
    Column("model_version", String(128), nullable=False),
    Column("topology_id", String(64), nullable=True),
    Column("system_health", Float, nullable=False),
    Column("component_health", Json, nullable=False),
    Column("anomaly_probabilities", Json, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("request_id", String(160), nullable=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Index("ix_predictions_equipment_time", "equipment_id", "timestamp"),
    Index("ix_predictions_equipment_row", "equipment_id", "id"),
)

topologies = Table(
    "topologies",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("definition", Json, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

equipment = Table(
    "equipment",
    metadata,
    Column("id", String(128), primary_key=True),
    # No foreign key: an equipment may be bound to a shipped template, which lives in files, not here.
    Column("topology_id", String(64), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
