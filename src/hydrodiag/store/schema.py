"""Schema migrations: Alembic, imported only when a database is behind the newest revision.

Alembic and the template engine it brings stay resident once imported (~11 MB, a few per cent of
the server's memory), and a server restarted on its own database never needs them. So the revision
a database is at is read with SQLAlchemy and compared with `HEAD_REVISION`, the newest migration in
`migrations/versions/` (tests/test_schema.py holds the two equal); only a database behind it, or a
new one, loads Alembic to upgrade.
"""

from __future__ import annotations

from importlib import resources

from sqlalchemy import Connection, Engine, inspect, text

HEAD_REVISION = "0002_equipment_row_index"
VERSION_TABLE = "alembic_version"  # Alembic's default


def current_revision(connection: Connection) -> str | None:
    """The revision Alembic recorded in this database; None for a database it never migrated."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    revisions = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    return revisions[0] if len(revisions) == 1 else None  # none or several heads: let Alembic decide


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent)."""
    with engine.begin() as connection:
        if current_revision(connection) == HEAD_REVISION:
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(resources.files("hydrodiag.store") / "migrations"))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
