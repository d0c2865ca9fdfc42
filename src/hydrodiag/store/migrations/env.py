"""Alembic environment. hydrodiag runs migrations itself (`store.schema.migrate`) and hands over an open
connection; the URL branch serves `alembic -x url=... upgrade head` run by an operator."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from hydrodiag.store.tables import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database with -x url=postgresql+psycopg://... or sqlite:///file.db")
    engine = create_engine(url)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
