"""The history writer's insert: a whole batch of predictions in one multi-row INSERT statement.

Why not `connection.execute(insert(...), rows)`: SQLAlchemy then runs the driver's executemany,
which binds and steps one row at a time, and SQLAlchemy processes each row's parameters in Python
first. The writer thread holds the GIL for all of that and must win it back from the busy event
loop after every row's step, so a batch of a few hundred rows meant a few hundred GIL hand-overs
and ~26 µs of Python per row. One statement with all the rows' VALUES needs one hand-over and about
less CPU per row. On PostgreSQL, psycopg already pipelines an executemany, and this insert measured
no better there (writer_probe: 16 -> 19 µs per row), so `HistoryDatabase` uses it on SQLite, the
default backend; it works on both, and tests hold it to storing what SQLAlchemy stores on both.

Values are converted by the same bind processors SQLAlchemy itself would apply for the dialect,
so what is stored, and how it reads back, does not change. A row that is already stored (same
`uid`, after a lost commit acknowledgement) is skipped, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine, Table
from sqlalchemy.types import JSON

from hydrodiag.store.writer import Row

# Bound values per statement stay well below SQLite's 32,766 and PostgreSQL's 65,535.
MAX_PARAMETERS = 30_000
SUPPORTED_BACKENDS = ("sqlite", "postgresql")


class BulkInsert:
    """INSERT ... VALUES (...), (...) ON CONFLICT (`conflict_column`) DO NOTHING for `table`."""

    def __init__(self, engine: Engine, table: Table, conflict_column: str) -> None:
        dialect = engine.dialect
        if dialect.name not in SUPPORTED_BACKENDS:
            raise ValueError(f"no multi-row insert for the {dialect.name} backend")
        self.engine = engine
        self.columns = [c for c in table.columns if not (c.primary_key and c.autoincrement)]
        self.keys = [c.name for c in self.columns]
        self.processors: list[Callable[[Any], Any] | None] = [
            c.type.dialect_impl(dialect).bind_processor(dialect) for c in self.columns
        ]
        quote = dialect.identifier_preparer.quote
        marker = "?" if dialect.paramstyle == "qmark" else "%s"
        # PostgreSQL reads a JSON text parameter into a JSONB column only when told to.
        placeholders = [f"{marker}::jsonb" if dialect.name == "postgresql" and isinstance(c.type, JSON) else marker
                        for c in self.columns]
        self._row = "(" + ", ".join(placeholders) + ")"
        self._head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(k) for k in self.keys)}) VALUES "
        self._tail = f" ON CONFLICT ({quote(conflict_column)}) DO NOTHING"
        self.rows_per_statement = max(1, MAX_PARAMETERS // len(self.columns))
        self._statements: dict[int, str] = {}

    def __call__(self, rows: Sequence[Row]) -> None:
        """All `rows` in one transaction."""
        with self.engine.begin() as connection:
            for start in range(0, len(rows), self.rows_per_statement):
                chunk = rows[start : start + self.rows_per_statement]
                connection.exec_driver_sql(self._statement(len(chunk)), tuple(self._parameters(chunk)))

    def _statement(self, count: int) -> str:
        statement = self._statements.get(count)
        if statement is None:
            if len(self._statements) >= 64:  # batch sizes vary with load; keep the cache small
                self._statements.clear()
            statement = self._statements[count] = self._head + ", ".join([self._row] * count) + self._tail
        return statement

    def _parameters(self, rows: Sequence[Row]) -> list[Any]:
        keys, processors = self.keys, self.processors
        values: list[Any] = []
        for row in rows:
            values.extend([value if process is None else process(value)
                           for process, value in zip(processors, [row[k] for k in keys], strict=True)])
        return values
