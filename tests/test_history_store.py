"""The history database on SQLite files and on the real PostgreSQL: migration, buffered writes,
retry after a real write failure, counted overflow, queries, and the trend surviving a restart."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pg import scratch_database

from hydrodiag.errors import ConflictError
from hydrodiag.settings import load_settings
from hydrodiag.store.history import HistoryStore
from hydrodiag.store.sql import HistoryDatabase, WriterConfig

FAST = WriterConfig(buffer_size=1000, batch_size=50, flush_interval_s=0.02, retry_max_s=0.2)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _append(db: HistoryDatabase, equipment: str, i: int, health: float = 0.9) -> None:
    db.append(equipment, T0 + timedelta(minutes=i), "v-test", health, {"pump": health}, {"leakage": 0.1}, 2.5,
              request_id=f"{equipment}-{i}", topology_id="uci_test_rig")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.db'}"
    else:
        with scratch_database("hd_store") as url:
            yield load_settings(database_url=url).resolved_database_url


def test_write_query_and_restart(database_url: str) -> None:
    db = HistoryDatabase(database_url, writer=FAST, cache_points=8)
    db.open()
    assert isinstance(db, HistoryStore)
    for i in range(12):
        _append(db, "press-1", i, 0.9 - i * 0.01)
    _append(db, "press-2", 0)
    assert db.flush(10)
    page = db.query("press-1", T0 + timedelta(minutes=2), T0 + timedelta(minutes=10), limit=3, offset=3)
    assert page.total == 8
    assert [r.request_id for r in page.items] == ["press-1-5", "press-1-6", "press-1-7"]
    assert page.items[0].timestamp == T0 + timedelta(minutes=5)
    assert page.items[0].component_health == {"pump": pytest.approx(0.85)}
    db.save_topology("custom_rig", {"id": "custom_rig", "components": [{"id": "pump", "type": "pump"}]})
    with pytest.raises(ConflictError):
        db.save_topology("custom_rig", {"id": "custom_rig", "components": []})
    db.bind_equipment("press-1", "uci_test_rig")
    db.bind_equipment("press-1", "custom_rig")
    assert db.close(10)

    # A new process: migration is idempotent, and the trend's recent points come from the database.
    again = HistoryDatabase(database_url, writer=FAST, cache_points=8)
    again.open()
    recent = again.recent("press-1")
    assert [p.request_id for p in recent] == [f"press-1-{i}" for i in range(4, 12)]
    assert again.load_bindings() == {"press-1": "custom_rig"}
    assert [t["id"] for t in again.load_topologies()] == ["custom_rig"]
    assert again.count_predictions() == 13
    again.close(10)


def test_failed_writes_are_retried_and_overflow_is_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "history.db"
    db = HistoryDatabase(f"sqlite:///{path}", writer=WriterConfig(buffer_size=5, batch_size=2,
                                                                  flush_interval_s=0.02, retry_max_s=0.1))
    db.open()
    # A real failure of the database: the table disappears under the writer (as in a botched migration).
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE predictions RENAME TO predictions_away")
    for i in range(7):
        _append(db, "rig", i)
    deadline = time.monotonic() + 10
    while db.writer.write_failures < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = db.writer.stats()
    assert stats["write_failures"] >= 2 and stats["buffered"] == 5 and stats["dropped"] == 2
    assert stats["last_error"] and "predictions" in stats["last_error"]
    assert any("history buffer full" in r.getMessage() for r in caplog.records)
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE predictions_away RENAME TO predictions")
    assert db.flush(10)
    assert db.count_predictions() == 5
    assert db.close(5)


def test_rows_are_written_without_anyone_asking(tmp_path: Path) -> None:
    """A few rows (far fewer than a batch) reach the database within the flush interval on their own."""
    db = HistoryDatabase(f"sqlite:///{tmp_path / 'h.db'}", writer=WriterConfig(batch_size=500, flush_interval_s=0.05))
    db.open()
    _append(db, "quiet", 0)
    deadline = time.monotonic() + 5
    while db.writer.written < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert db.writer.written == 1 and db.count_predictions() == 1
    assert db.close(5)


REFRESH_S = 0.5


def _eventually(condition: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_workers_sharing_a_database_fit_trends_on_every_stored_point(database_url: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """WORKERS > 1: two processes (here two stores) predicting for the same machine each take in
    the rows the other stored, in the background every refresh, without counting their own twice --
    and a prediction for a machine already known never waits for the database."""
    first = HistoryDatabase(database_url, writer=FAST, cache_points=64, refresh_s=REFRESH_S)
    second = HistoryDatabase(database_url, writer=FAST, cache_points=64, refresh_s=REFRESH_S)
    first.open()
    second.open()
    try:
        for i in range(6):
            _append(first if i % 2 else second, "press-9", i, 0.9 - i * 0.01)
        assert first.flush(10) and second.flush(10)
        for db in (first, second):
            assert _eventually(lambda db=db: len(db.trend_series("press-9", "v-test")[0]) == 6)
            healths = db.trend_series("press-9", "v-test")[1]
            assert sorted(healths.tolist()) == pytest.approx(sorted(0.9 - i * 0.01 for i in range(6)))

        connect = second.engine.connect
        callers: list[str] = []

        def recording_connect(*args: Any, **kwargs: Any) -> Any:
            callers.append(threading.current_thread().name)
            return connect(*args, **kwargs)

        monkeypatch.setattr(second.engine, "connect", recording_connect)
        time.sleep(1.5 * REFRESH_S)  # a refresh is due: still none on the request path
        assert len(second.trend_series("press-9", "v-test")[0]) == 6
        assert threading.current_thread().name not in callers  # only the refresh thread queried
        monkeypatch.undo()
        _append(first, "press-9", 6, 0.8)
        assert first.flush(10)
        for db in (first, second):
            assert _eventually(lambda db=db: len(db.trend_series("press-9", "v-test")[0]) == 7)
        time.sleep(2 * REFRESH_S)  # later rounds add nothing twice
        assert len(first.trend_series("press-9", "v-test")[0]) == len(second.trend_series("press-9", "v-test")[0]) == 7
    finally:
        first.close(10)
        second.close(10)


def test_bulk_insert_stores_what_sqlalchemys_executemany_stores(database_url: str) -> None:
    """The writer's one-statement insert (used on SQLite) against SQLAlchemy's own executemany, on
    both backends: the same values read back, rows already stored are skipped, and a batch larger
    than one statement's parameter budget goes in several statements of one transaction."""
    from sqlalchemy import insert, select

    from hydrodiag.store.bulk_insert import BulkInsert
    from hydrodiag.store.tables import predictions

    db = HistoryDatabase(database_url, writer=FAST)
    db.open()
    db.writer.close(1.0)  # this test inserts on its own thread

    def rows(prefix: str, count: int) -> list[dict[str, Any]]:
        return [{"uid": f"{prefix}{i:05d}", "equipment_id": f"{prefix}-eq", "timestamp": T0 + timedelta(seconds=i),
                 "model_version": "v-bulk", "topology_id": None if i % 3 else "uci_test_rig",
                 "system_health": 0.5 + i / 10_000, "component_health": {"pump": 0.25, "valve": i / 7},
                 "anomaly_probabilities": {"leakage": 1e-7 * i}, "latency_ms": 1.5,
                 "request_id": None if i % 2 else f"r{i}", "recorded_at": T0 + timedelta(hours=1, microseconds=i)}
                for i in range(count)]

    def stored(prefix: str) -> list[tuple[Any, ...]]:
        columns = [c for c in predictions.c if c.name not in ("id", "uid", "equipment_id")]
        with db.engine.connect() as conn:
            result = conn.execute(select(*columns).where(predictions.c.equipment_id == f"{prefix}-eq")
                                  .order_by(predictions.c.uid))
            return [tuple(row) for row in result]

    bulk = BulkInsert(db.engine, predictions, conflict_column="uid")
    bulk.rows_per_statement = 40  # several statements for the 100 rows below
    with db.engine.begin() as conn:
        conn.execute(insert(predictions), rows("a", 100))
    bulk(rows("b", 100))
    bulk(rows("b", 100)[50:])  # a retried batch: its rows are already there
    assert stored("a") == stored("b") and len(stored("b")) == 100
    db.close(1.0)
