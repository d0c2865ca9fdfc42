"""FastAPI application factory.

The model loads in the background after start-up: /health answers at once (liveness) and /ready
turns 200 only when the model is loaded and warmed up and the history database is migrated (with
its registered topologies and bindings loaded), which is what an orchestrator or a load balancer
waits for. A failed model load is logged, reported by /health (503) and /ready, and never retried
silently; an unreachable database is retried in the background.

Shutdown (uvicorn's SIGTERM handling stops accepting and waits for open requests first): finish
what the batcher still holds, then flush the history buffer, then close the database. The three
share one SHUTDOWN_TIMEOUT_S budget, counted from SIGTERM (`ShutdownClock`), so a supervisor's grace
period only needs to exceed it by the flush's one-second floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.telemetry import TelemetryConfig

from hydrodiag import __version__
from hydrodiag.api.errors import REQUEST_ID_HEADER, install_error_handlers
from hydrodiag.api.fast_lane import PredictFastLane
from hydrodiag.api.metrics import HttpMetrics, MetricsMiddleware
from hydrodiag.api.metrics import router as metrics_router
from hydrodiag.api.middleware import RequestContextMiddleware
from hydrodiag.api.oip import router as oip_router
from hydrodiag.api.routes import router
from hydrodiag.api.routes_history import router as history_router
from hydrodiag.api.routes_models import router as models_router
from hydrodiag.api.security import API_KEY_HEADER, SecurityMiddleware
from hydrodiag.errors import CheckpointError, HydrodiagError, StorageUnavailableError, TopologyError
from hydrodiag.inference.engine import InferenceEngine
from hydrodiag.inference.lifecycle import ModelLifecycle
from hydrodiag.inference.peers import Peers
from hydrodiag.settings import Settings, get_settings
from hydrodiag.store.sql import HistoryDatabase, WriterConfig
from hydrodiag.topology.schema import Topology

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "Diagnoses hydraulic machines from a window of sensor readings with a temporal graph neural network: "
    "system and per-component health, the probabilities of 9 anomaly types, and the degradation trend of "
    "each machine."
)
STORE_RETRY_MAX_S = 5.0
# WORKERS > 1: how often a worker looks for changes made by the others (a shared-memory read).
PEER_POLL_S = 0.02
PEER_RETRY_S = 1.0
# WORKERS > 1: how often a worker takes in the predictions the others stored for a machine it serves
# (one indexed query per machine at most this often), so that trends are fitted on all of them.
SHARED_HISTORY_REFRESH_S = 1.0
# FASTAPI_TELEMETRY=false: FastAPI otherwise asks OpenTelemetry for its three providers on every
# request (~2 % of the event loop's time per prediction), to find them unconfigured.
_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


async def _load_model(app: FastAPI, engine: InferenceEngine, settings: Settings) -> None:
    try:
        await engine.start()
    except asyncio.CancelledError:
        raise
    except CheckpointError as exc:
        # Responses name the file, never the server's directories (the log has the full path).
        app.state.load_error = f"checkpoint '{Path(exc.path).name}': {exc.problem}"
        logger.error("model failed to load: %s", exc)
    except HydrodiagError as exc:
        app.state.load_error = str(exc)
        logger.error("model failed to load: %s", exc)
    except Exception as exc:  # anything else is a bug, but the process must still report it
        app.state.load_error = f"{type(exc).__name__} while loading the model (see the server log)"
        logger.exception("model failed to load")
    else:
        _model_ready(engine, settings)


def _model_ready(engine: InferenceEngine, settings: Settings) -> None:
    served = engine.model
    if served is not None:
        logger.info("ready: model %s version %s on %s", served.path, served.model_version, served.device)
    if settings.gc_freeze:
        # What is alive now (modules, the model, caches) lives as long as the process; frozen, the
        # collector's full passes no longer walk it while requests wait.
        gc.collect()
        gc.freeze()


def prepare_before_serving(app: FastAPI) -> None:
    """Load the model and the registrations before the server takes its first connection. For a
    worker of several (WORKERS > 1): requests wait in its socket's backlog meanwhile, instead of
    meeting a worker that answers 503 or does not know a binding yet. What fails here is retried
    by the lifespan, as at a single server's start."""
    engine: InferenceEngine = app.state.engine
    history: HistoryDatabase | None = app.state.history
    try:
        engine.load()
    except Exception as exc:  # the lifespan loads again and reports the error on /ready
        logger.warning("model not loaded before serving (%s: %s)", type(exc).__name__, exc)
    if history is not None:
        try:
            history.open()
            _apply_registrations(engine, *_read_registrations(history))
            app.state.store_ready = True
        except StorageUnavailableError:
            pass


def _read_registrations(database: HistoryDatabase) -> tuple[list[dict[str, Any]], dict[str, str]]:
    return database.load_topologies(), database.load_bindings()


def _apply_registrations(engine: InferenceEngine, definitions: list[dict[str, Any]], bindings: dict[str, str]) -> None:
    known = set(engine.registry.ids())
    for definition in definitions:
        if definition.get("id") in known:
            continue  # registered topologies are immutable
        try:
            engine.registry.register(Topology.model_validate(definition))
        except (ValueError, TopologyError) as exc:
            logger.error("stored topology %s is invalid and was skipped: %s", definition.get("id"), exc)
    engine.bindings.update(bindings)


async def _open_store(app: FastAPI, database: HistoryDatabase, engine: InferenceEngine) -> None:
    """Migrate, then load registered topologies and bindings; retried until the database answers."""
    delay = 0.5
    while True:
        try:
            await asyncio.to_thread(database.open)
            definitions, bindings = await asyncio.to_thread(_read_registrations, database)
            break
        except StorageUnavailableError:
            logger.warning("history database %s unreachable; retrying in %.1fs", database.display_url, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, STORE_RETRY_MAX_S)
    _apply_registrations(engine, definitions, bindings)
    app.state.store_ready = True
    logger.info("history: %d registered topologies, %d equipment bindings", len(definitions), len(bindings))


async def _follow_peers(app: FastAPI, peers: Peers, database: HistoryDatabase | None,
                        lifecycle: ModelLifecycle) -> None:
    """WORKERS > 1: apply what the other workers changed (registrations, bindings, the served model),
    then acknowledge the generation read before applying it. Starts once this worker is ready."""
    while not (lifecycle.engine.is_loaded and app.state.store_ready):
        await asyncio.sleep(PEER_POLL_S)
    applied = 0
    while True:
        generation = peers.generation()
        if generation != applied:
            try:
                if database is not None:
                    definitions, bindings = await asyncio.to_thread(_read_registrations, database)
                    _apply_registrations(lifecycle.engine, definitions, bindings)
                path = peers.model_path()
                if path is not None:
                    await lifecycle.follow(path)
            except asyncio.CancelledError:
                raise
            except Exception:  # retried at the next poll; the worker that changed it waits (or times out)
                logger.exception("worker %d could not apply generation %d of the shared state", peers.slot,
                                 generation)
                await asyncio.sleep(PEER_RETRY_S)
                continue
            applied = generation
            peers.acknowledge(generation)
        await asyncio.sleep(PEER_POLL_S)


# Buffered history rows get at least this long to reach the database even when draining requests
# spent the whole budget: a second over is cheaper than predictions missing from the history.
MIN_HISTORY_FLUSH_S = 1.0


@dataclass
class ShutdownClock:
    """One budget for the whole shutdown, started by whoever sees it begin (the server on SIGTERM;
    else the lifespan, when it is asked to stop)."""

    budget_s: float
    deadline: float | None = None

    def start(self) -> None:
        if self.deadline is None:
            self.deadline = time.monotonic() + self.budget_s

    def remaining(self, floor: float = 0.0) -> float:
        self.start()
        assert self.deadline is not None
        return max(floor, self.deadline - time.monotonic())


def history_database(settings: Settings) -> HistoryDatabase:
    return HistoryDatabase(
        settings.resolved_database_url,
        writer=WriterConfig(buffer_size=settings.history_buffer_size, batch_size=settings.history_write_batch,
                            flush_interval_s=settings.history_flush_interval_ms / 1000.0,
                            retry_max_s=settings.history_retry_max_s),
        cache_points=settings.history_max_points, cache_equipment=settings.history_max_equipment,
        refresh_s=SHARED_HISTORY_REFRESH_S if settings.workers > 1 else 0.0,
    )


def create_app(settings: Settings | None = None, engine: InferenceEngine | None = None,
               history: HistoryDatabase | None = None, peers: Peers | None = None) -> FastAPI:
    """The app serving `engine`. Without an engine, the app builds one from `settings` together with
    the history database (DATABASE_URL, else SQLite under DATA_DIR) and owns both. `peers`: the
    other worker processes of the same server (WORKERS > 1), kept in step with this one."""
    settings = settings or get_settings()
    owns_engine = engine is None
    if owns_engine and history is None:
        history = history_database(settings)
    served_engine = engine or InferenceEngine(settings=settings, history=history, auto_start=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = []
        if not served_engine.is_loaded:
            tasks.append(asyncio.create_task(_load_model(app, served_engine, settings), name="hydrodiag-model-load"))
        elif owns_engine:
            _model_ready(served_engine, settings)
        if history is not None and not app.state.store_ready:
            tasks.append(asyncio.create_task(_open_store(app, history, served_engine), name="hydrodiag-store"))
        if peers is not None:
            tasks.append(asyncio.create_task(_follow_peers(app, peers, history, app.state.lifecycle),
                                             name="hydrodiag-peers"))
            tasks.append(asyncio.create_task(app.state.metrics.share(), name="hydrodiag-metrics-share"))
        try:
            yield
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            clock: ShutdownClock = app.state.shutdown_clock
            if owns_engine:
                await served_engine.close(drain_timeout_s=clock.remaining())
            if history is not None:
                complete = await asyncio.to_thread(history.close, clock.remaining(floor=MIN_HISTORY_FLUSH_S))
                logger.info("history flushed (%s); shutdown complete", "complete" if complete else "INCOMPLETE")

    app = FastAPI(title="hydrodiag", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  telemetry=None if settings.fastapi_telemetry else _NO_TELEMETRY)
    app.state.engine = served_engine
    app.state.settings = settings
    app.state.load_error = None
    app.state.history = history
    app.state.shutdown_clock = ShutdownClock(settings.shutdown_timeout_s)
    app.state.store_ready = history is None
    app.state.peers = peers
    app.state.lifecycle = ModelLifecycle(served_engine, settings.resolved_model_dir, peers)
    app.state.metrics = HttpMetrics(served_engine, history, peers)
    install_error_handlers(app)
    # Middleware: the last added is the outermost. Request context > metrics > CORS > security >
    # the /predict fast lane, so refusals carry request ids and CORS headers and are counted, a
    # preflight needs no key, and the fast lane's answers pass every one of them.
    app.add_middleware(PredictFastLane, state=app.state, exception_handlers=app.exception_handlers)
    app.add_middleware(SecurityMiddleware, api_keys=settings.api_keys, max_body_bytes=settings.max_body_bytes,
                       rate_limit_per_minute=settings.rate_limit_per_minute)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            # Keys travel in headers, so cookies are not needed; settings refuse '*' with credentials.
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=["GET", "POST", "PUT"],
            allow_headers=["Content-Type", "Authorization", API_KEY_HEADER, REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After"],
        )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics, routes=app.router.routes)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(router)
    app.include_router(history_router)
    app.include_router(models_router)
    app.include_router(oip_router)
    app.include_router(metrics_router)
    return app
