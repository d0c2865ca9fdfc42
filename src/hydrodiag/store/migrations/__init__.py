"""Alembic migrations of the history database, shipped inside the package and run at start."""
