"""The history database: predictions, registered topologies and equipment bindings (SQLAlchemy 2).

SQLite file by default, PostgreSQL (psycopg 3) when DATABASE_URL says so. The schema is migrated
with Alembic at start (`open`, `store.schema`). Prediction rows go through a `BufferedWriter`, so the request path
never waits for the database; the degradation trend reads the recent points of a machine from an
in-memory read-through cache, seeded from the database the first time this process sees the
machine, so the trend survives a restart. Every SQLAlchemy failure leaves this module as
`StorageUnavailableError` (or `ConflictError`), never as a driver exception.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from sqlalchemy import Engine, create_engine, event, func, insert, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from hydrodiag.errors import ConflictError, StorageUnavailableError
from hydrodiag.ids import unique_ids
from hydrodiag.os_threads import name_os_thread
from hydrodiag.store.bulk_insert import BulkInsert
from hydrodiag.store.history import HealthPoint, InMemoryHistoryStore
from hydrodiag.store.schema import migrate
from hydrodiag.store.tables import equipment, predictions, topologies
from hydrodiag.store.writer import BufferedWriter, Row

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3
# After a failed trend read, skip reads this long: an unreachable host would otherwise cost a
# connect timeout on the request path for every machine seen for the first time.
READ_PAUSE_AFTER_FAILURE_S = 5.0
# Uids of own rows remembered per machine until read back from the database (refresh_s > 0).
OWN_UIDS_KEPT = 10_000
# Rows other processes stored, read per query when taking them in (refresh_s > 0); more are read in
# further queries of the same round.
REFRESH_ROWS_PER_QUERY = 5_000


@dataclass(frozen=True)
class WriterConfig:
    buffer_size: int = 10_000
    batch_size: int = 500
    flush_interval_s: float = 0.1
    retry_max_s: float = 5.0


@dataclass(frozen=True)
class HistoryRecord:
    equipment_id: str
    timestamp: datetime
    model_version: str
    topology_id: str | None
    system_health: float
    component_health: dict[str, float]
    anomaly_probabilities: dict[str, float]
    latency_ms: float
    request_id: str | None


@dataclass(frozen=True)
class HistoryPage:
    items: list[HistoryRecord]
    total: int
    limit: int
    offset: int


def safe_url(url: str) -> str:
    """The URL for logs and messages: the password never leaves the process."""
    return make_url(url).render_as_string(hide_password=True)


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json_text(value: Any) -> str:
    # The writer thread encodes two JSON columns per stored prediction while holding the GIL the event
    # loop needs; stdlib json was 40 % of that thread's CPU per row, orjson a fraction of it.
    return orjson.dumps(value).decode()


# JSON columns (predictions' health and probabilities, topology definitions) on every backend.
_JSON_CODEC: dict[str, Any] = {"json_serializer": _json_text, "json_deserializer": orjson.loads}


def create_db_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            from pathlib import Path

            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **_JSON_CODEC)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL: the writer thread and readers do not block each other.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    # pre_ping replaces connections that died with a database restart instead of failing a query.
    return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4, pool_timeout=5,
                         connect_args={"connect_timeout": CONNECT_TIMEOUT_S}, **_JSON_CODEC)


class HistoryDatabase:
    """Implements the `HistoryStore` protocol for the inference core, plus the queries of the API."""

    def __init__(self, url: str, *, writer: WriterConfig | None = None, cache_points: int = 256,
                 cache_equipment: int = 10_000, refresh_s: float = 0.0) -> None:
        """`refresh_s` > 0 (WORKERS > 1: other processes write the same machines' predictions): every
        `refresh_s`, a background thread takes the rows other processes stored into the cached points
        of the machines this process knows (one query for all machines, off the request path)."""
        self.url = url
        self.display_url = safe_url(url)
        self.engine = create_db_engine(url)
        self.backend = self.engine.dialect.name
        # SQLite's executemany hands the GIL back and forth once per row; psycopg pipelines its
        # executemany, and the one-statement insert measured no better there (store/bulk_insert.py).
        self._bulk_insert = (BulkInsert(self.engine, predictions, conflict_column="uid")
                             if self.backend == "sqlite" else None)
        cfg = writer or WriterConfig()
        self.writer = BufferedWriter(self._insert_rows, capacity=cfg.buffer_size, batch_size=cfg.batch_size,
                                     flush_interval_s=cfg.flush_interval_s, retry_max_s=cfg.retry_max_s)
        self.cache = InMemoryHistoryStore(cache_points, cache_equipment)
        self.cache_points = cache_points
        self.schema_ready = False
        self._reads_paused_until = 0.0
        self.refresh_s = refresh_s
        # equipment -> the highest row id its cached points were seeded with (rows up to it are in)
        self._synced: dict[str, int] = {}
        self._seen_id: int | None = None  # the highest row id taken in (refresh_s > 0; None: not read yet)
        self._refresher: threading.Thread | None = None
        self._stop_refreshing = threading.Event()
        # `_own` and `_synced` are changed by the request path and by the refresh thread.
        self._shared = threading.Lock()
        # equipment -> uids of the rows this process appended and has not yet read back (ordered set)
        self._own: dict[str, dict[str, None]] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> None:
        """Migrate the schema and start the writer; raises StorageUnavailableError if unreachable."""
        try:
            migrate(self.engine)
        except SQLAlchemyError as exc:
            raise self._unavailable("migrating the schema", exc) from None
        self.schema_ready = True
        self.writer.start()
        if self.refresh_s and self._refresher is None:
            # Rows stored before now reach the cache with the first-sight seed of their machine.
            self._seen_id = self._highest_id()
            self._refresher = threading.Thread(target=self._refresh_every_interval, daemon=True,
                                               name="hydrodiag-history-refresh")
            self._refresher.start()
        logger.info("history database ready: %s", self.display_url)

    def flush(self, timeout_s: float) -> bool:
        return self.writer.flush(timeout_s)

    def close(self, timeout_s: float = 30.0) -> bool:
        """Write every buffered row (retrying up to `timeout_s`), then release connections."""
        self._stop_refreshing.set()
        if self._refresher is not None:
            self._refresher.join(timeout_s)
        complete = self.writer.close(timeout_s) if self.schema_ready else self.writer.size == 0
        if not self.schema_ready and self.writer.size:
            logger.error("history database never became reachable; %d row(s) not written", self.writer.size)
        self.engine.dispose()
        return complete

    def _unavailable(self, action: str, exc: Exception) -> StorageUnavailableError:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        logger.warning("history database %s: %s failed: %s", self.display_url, action, first)
        return StorageUnavailableError(f"history database unavailable while {action}; retry later")

    # -- HistoryStore protocol (request path) ----------------------------------------------------

    def append(
        self, equipment_id: str, timestamp: datetime, model_version: str, system_health: float,
        component_health: dict[str, float], anomalies: dict[str, float], latency_ms: float, *,
        request_id: str | None = None, topology_id: str | None = None,
    ) -> None:
        self._ensure_cached(equipment_id)
        point = HealthPoint(timestamp=_utc(timestamp), model_version=model_version,
                            system_health=float(system_health), component_health=dict(component_health),
                            anomalies=dict(anomalies), latency_ms=float(latency_ms), request_id=request_id,
                            topology_id=topology_id)
        self.cache.add(equipment_id, point)
        uid = unique_ids.hex()
        if self.refresh_s:
            with self._shared:
                own = self._own.setdefault(equipment_id, {})
                own[uid] = None
                if len(own) > OWN_UIDS_KEPT:  # rows that never came back (database down): forget the oldest
                    del own[next(iter(own))]
        self.writer.put({
            "uid": uid, "equipment_id": equipment_id, "timestamp": point.timestamp,
            "model_version": model_version, "topology_id": topology_id, "system_health": point.system_health,
            "component_health": point.component_health, "anomaly_probabilities": point.anomalies,
            "latency_ms": point.latency_ms, "request_id": request_id, "recorded_at": datetime.now(UTC),
        })

    def recent(self, equipment_id: str, limit: int | None = None) -> list[HealthPoint]:
        self._ensure_cached(equipment_id)
        return self.cache.recent(equipment_id, limit)

    def trend_series(self, equipment_id: str, model_version: str,
                     limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        self._ensure_cached(equipment_id)
        return self.cache.trend_series(equipment_id, model_version, limit)

    def _ensure_cached(self, equipment_id: str) -> None:
        """Seed the cache with the machine's latest stored points, once per machine and process.

        One indexed query the first time a machine is seen. If the database is down then, the
        trend starts from what this process sees (logged) rather than failing the prediction.
        """
        if self.cache.contains(equipment_id):
            return
        points: list[HealthPoint] = []
        if self._readable():
            query = (select(predictions).where(predictions.c.equipment_id == equipment_id)
                     .order_by(predictions.c.timestamp.desc(), predictions.c.id.desc()).limit(self.cache_points))
            try:
                with self.engine.connect() as conn:
                    rows = conn.execute(query).mappings().all()
                points = [_point(row) for row in reversed(rows)]
                with self._shared:
                    self._synced[equipment_id] = max((row["id"] for row in rows), default=0)
            except SQLAlchemyError as exc:
                self._read_failed(f"history of {equipment_id} not read; its trend starts from new points", exc)
        self.cache.seed(equipment_id, points)

    def _highest_id(self) -> int | None:
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(select(func.max(predictions.c.id))).scalar() or 0)
        except SQLAlchemyError as exc:
            self._read_failed("the newest stored row not read (retried at the next refresh)", exc)
            return None

    def _refresh_every_interval(self) -> None:
        name_os_thread()
        while not self._stop_refreshing.wait(self.refresh_s):
            try:
                self.take_in_others()
            except Exception:  # a trend a second late is better than no trend from other workers
                logger.exception("taking in the rows of other workers failed")

    def take_in_others(self) -> int:
        """Add to the cached points of the machines this process knows the rows other processes
        stored since the last call: one indexed query for all machines (more for a backlog), run by
        the refresh thread every `refresh_s`. Rows this process appended are in the cache already and
        are skipped; so are rows of machines the cache does not hold (their first-sight seed reads
        them). Returns the number of points added."""
        added = 0
        if self._seen_id is None and self._readable():
            self._seen_id = self._highest_id()
        while self._seen_id is not None and self._readable():
            query = (select(predictions).where(predictions.c.id > self._seen_id)
                     .order_by(predictions.c.id).limit(REFRESH_ROWS_PER_QUERY))
            try:
                with self.engine.connect() as conn:
                    rows = conn.execute(query).mappings().all()
            except SQLAlchemyError as exc:
                self._read_failed("rows stored by other workers not read", exc)
                break
            for row in rows:
                equipment_id = row["equipment_id"]
                with self._shared:
                    own = self._own.get(equipment_id, {})
                    mine = row["uid"] in own
                    if mine:  # read back: no longer needs remembering
                        del own[row["uid"]]
                    seeded_up_to = self._synced.get(equipment_id, 0)
                if not mine and row["id"] > seeded_up_to and self.cache.contains(equipment_id):
                    self.cache.add(equipment_id, _point(row))
                    added += 1
            if rows:
                self._seen_id = rows[-1]["id"]
            if len(rows) < REFRESH_ROWS_PER_QUERY:
                break
        with self._shared:
            if len(self._synced) > 2 * self.cache.max_equipment:  # machines the cache has forgotten
                self._synced = {k: v for k, v in self._synced.items() if self.cache.contains(k)}
                self._own = {k: v for k, v in self._own.items() if k in self._synced}
        return added

    def _readable(self) -> bool:
        healthy = self.writer.last_error is None and time.monotonic() >= self._reads_paused_until
        return self.schema_ready and healthy

    def _read_failed(self, what: str, exc: SQLAlchemyError) -> None:
        self._reads_paused_until = time.monotonic() + READ_PAUSE_AFTER_FAILURE_S
        logger.warning("%s (%s)", what, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def _insert_rows(self, rows: list[Row]) -> None:
        """Writer thread: one transaction per batch; rows already stored (same uid) are skipped."""
        if not self.schema_ready:
            migrate(self.engine)
            self.schema_ready = True
        if self._bulk_insert is not None:
            self._bulk_insert(rows)
            return
        statement: Any = (postgresql.insert(predictions).on_conflict_do_nothing(index_elements=["uid"])
                          if self.backend == "postgresql" else insert(predictions))
        with self.engine.begin() as conn:
            conn.execute(statement, rows)

    # -- queries of the API ----------------------------------------------------------------------

    def query(self, equipment_id: str, start: datetime | None, end: datetime | None, limit: int,
              offset: int) -> HistoryPage:
        """Stored predictions of a machine in [start, end), oldest first."""
        condition = predictions.c.equipment_id == equipment_id
        if start is not None:
            condition &= predictions.c.timestamp >= _utc(start)
        if end is not None:
            condition &= predictions.c.timestamp < _utc(end)
        rows_query = (select(predictions).where(condition)
                      .order_by(predictions.c.timestamp, predictions.c.id).limit(limit).offset(offset))
        try:
            with self.engine.connect() as conn:
                total = int(conn.execute(select(func.count()).select_from(predictions).where(condition))
                            .scalar_one())
                rows = conn.execute(rows_query).mappings().all()
        except SQLAlchemyError as exc:
            raise self._unavailable("reading history", exc) from None
        items = [HistoryRecord(
            equipment_id=row["equipment_id"], timestamp=_utc(row["timestamp"]), model_version=row["model_version"],
            topology_id=row["topology_id"], system_health=row["system_health"],
            component_health=dict(row["component_health"]), anomaly_probabilities=dict(row["anomaly_probabilities"]),
            latency_ms=row["latency_ms"], request_id=row["request_id"]) for row in rows]
        return HistoryPage(items=items, total=total, limit=limit, offset=offset)

    def count_predictions(self) -> int:
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(select(func.count()).select_from(predictions)).scalar_one())
        except SQLAlchemyError as exc:
            raise self._unavailable("counting predictions", exc) from None

    def save_topology(self, topology_id: str, definition: dict[str, Any]) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(topologies).values(id=topology_id, definition=definition,
                                                       created_at=datetime.now(UTC)))
        except IntegrityError:
            raise ConflictError(f"topology '{topology_id}' is already registered") from None
        except SQLAlchemyError as exc:
            raise self._unavailable("registering a topology", exc) from None

    def load_topologies(self) -> list[dict[str, Any]]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(topologies.c.definition).order_by(topologies.c.id)).all()
        except SQLAlchemyError as exc:
            raise self._unavailable("reading topologies", exc) from None
        return [dict(row[0]) for row in rows]

    def bind_equipment(self, equipment_id: str, topology_id: str) -> None:
        now = datetime.now(UTC)
        try:
            with self.engine.begin() as conn:
                updated = conn.execute(equipment.update().where(equipment.c.id == equipment_id)
                                       .values(topology_id=topology_id, updated_at=now)).rowcount
                if not updated:
                    conn.execute(insert(equipment).values(id=equipment_id, topology_id=topology_id, updated_at=now))
        except SQLAlchemyError as exc:
            raise self._unavailable("binding equipment", exc) from None

    def load_bindings(self) -> dict[str, str]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(equipment.c.id, equipment.c.topology_id)).all()
        except SQLAlchemyError as exc:
            raise self._unavailable("reading equipment bindings", exc) from None
        return {str(row[0]): str(row[1]) for row in rows}

    def stats(self) -> dict[str, Any]:
        return {"backend": self.backend, "schema_ready": self.schema_ready, **self.writer.stats()}


def _point(row: Any) -> HealthPoint:
    return HealthPoint(timestamp=_utc(row["timestamp"]), model_version=row["model_version"],
                       system_health=float(row["system_health"]), component_health=dict(row["component_health"]),
                       anomalies=dict(row["anomaly_probabilities"]), latency_ms=float(row["latency_ms"]),
                       request_id=row["request_id"], topology_id=row["topology_id"])
