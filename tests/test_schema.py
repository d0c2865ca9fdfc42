"""Schema migrations: a new or older database reaches the newest revision; a current one is left
alone without loading Alembic into the serving process (issue 4: memory)."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from hydrodiag.store.schema import HEAD_REVISION, current_revision, migrate
from hydrodiag.store.sql import create_db_engine


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("hydrodiag.store") / "migrations"))
    return config


def test_head_revision_is_the_newest_migration_shipped() -> None:
    assert ScriptDirectory.from_config(_alembic_config()).get_heads() == [HEAD_REVISION]


def test_a_new_database_gets_every_table_and_the_head_revision(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'new.db'}")
    migrate(engine)
    with engine.connect() as connection:
        assert current_revision(connection) == HEAD_REVISION
        assert {"predictions", "topologies", "equipment"} <= set(inspect(connection).get_table_names())
    migrate(engine)  # idempotent
    engine.dispose()


def test_a_database_at_an_older_revision_is_upgraded(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = _alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001_history")
    with engine.connect() as connection:
        assert current_revision(connection) == "0001_history"
    migrate(engine)
    with engine.connect() as connection:
        assert current_revision(connection) == HEAD_REVISION
    engine.dispose()


def test_a_current_database_is_opened_without_importing_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'current.db'}"
    engine = create_db_engine(url)
    migrate(engine)
    engine.dispose()
    code = ("import sys; from hydrodiag.store.sql import HistoryDatabase; db = HistoryDatabase(sys.argv[1]); "
            "db.open(); db.close(5.0); print(db.schema_ready, 'alembic' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "True False"
