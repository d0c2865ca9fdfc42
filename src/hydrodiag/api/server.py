"""Process entry point: validate configuration, then serve the app with uvicorn.

Configuration problems that would otherwise surface later (a bad variable, a missing or foreign
checkpoint, a device that does not exist) stop the process at once with one readable line on
stderr and exit status 2, before any heavy start-up work.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import uvicorn

from hydrodiag.malloc import keep_freed_memory
from hydrodiag.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from hydrodiag.api.app import ShutdownClock
    from hydrodiag.inference.peers import Peers

EXIT_CONFIG_ERROR = 2


def _fail(message: str) -> NoReturn:
    print(f"hydrodiag: {message}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG_ERROR)


def validated_settings(
    host: str | None = None, port: int | None = None, model_path: str | os.PathLike[str] | None = None
) -> Settings:
    """Settings from the environment with command-line overrides, checked enough to serve."""
    overrides = {"api_host": host, "api_port": port, "model_path": Path(model_path) if model_path else None}
    try:
        settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        _fail(str(exc))
    # Imported only now: torch takes seconds to import, and a typo in a variable should not wait.
    from hydrodiag.errors import CheckpointError, DeviceUnavailableError
    from hydrodiag.inference.manager import resolve_device
    from hydrodiag.model.checkpoint import read_metadata

    try:
        read_metadata(settings.model_path)
        resolve_device(settings.device)
    except CheckpointError as exc:
        _fail(f"MODEL_PATH: {exc}")
    except DeviceUnavailableError as exc:
        _fail(f"DEVICE: {exc}")
    return settings


def run_server(
    host: str | None = None, port: int | None = None, model_path: str | os.PathLike[str] | None = None
) -> None:
    settings = validated_settings(host, port, model_path)
    apply_process_settings(settings)
    if settings.workers > 1:
        from hydrodiag.api.workers import PortUnavailableError, run_workers

        try:
            status = run_workers(settings)
        except PortUnavailableError as exc:
            _fail(f"API_PORT: {exc}")
        raise SystemExit(status)
    exit_cleanly_after_signals()
    serve(settings)
    logging.getLogger(__name__).info("server stopped")


def apply_process_settings(settings: Settings) -> None:
    """What a serving process sets before it serves: logging, the allocator's thresholds, torch
    threads, the GIL switch interval and the garbage collector's (also used by bench/granian_app.py)."""
    import torch

    from hydrodiag.api.logconfig import configure_logging

    configure_logging(settings.log_level)
    keep_freed_memory(settings.malloc_keep_mb)
    threads = settings.resolved_torch_threads
    if threads is not None:
        torch.set_num_threads(threads)
    # The forward thread needs the GIL only to enter and leave a (traced) pass, but must wait up to a
    # whole switch interval for the busy event loop to hand it over: 5 ms by default, a pass's length.
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000.0)
    # After GC_FREEZE the collector's long-lived generation is small, so Python's rule (a full pass
    # once a quarter as many objects as it holds were promoted) fired every ~0.6 s under load, each
    # pass stopping the event loop ~7-20 ms. With 1000, cyclic garbage that outlives two young passes
    # waits about a minute at 2,000 req/s for a full pass instead of about a second.
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, settings.gc_gen2_threshold)


def serve(settings: Settings, sockets: list[socket.socket] | None = None, peers: Peers | None = None) -> None:
    """Run one server process until it is told to stop: on `sockets` when given (a worker of
    several), else on API_HOST:API_PORT."""
    from hydrodiag.api.app import create_app, prepare_before_serving
    from hydrodiag.api.logconfig import logging_config

    uvloop = importlib.util.find_spec("uvloop") is not None
    httptools = importlib.util.find_spec("httptools") is not None
    app = create_app(settings, peers=peers)
    if peers is not None:
        prepare_before_serving(app)
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        loop="uvloop" if uvloop else "asyncio",
        http="httptools" if httptools else "h11",
        log_config=logging_config(settings.log_level),
        access_log=settings.access_log_enabled,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_s)),
    )
    _Server(config, app.state.shutdown_clock).run(sockets=sockets)


class _Server(uvicorn.Server):
    """uvicorn's server, starting the shutdown clock the moment it begins shutting down, so that open
    requests, the batcher and the history flush share one SHUTDOWN_TIMEOUT_S."""

    def __init__(self, config: uvicorn.Config, clock: ShutdownClock) -> None:
        super().__init__(config)
        self.clock = clock

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.clock.start()
        await super().shutdown(sockets)


def exit_cleanly_after_signals() -> None:
    """uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal with the handler
    that was installed before it; a no-op handler there lets the process end with status 0 after a
    clean shutdown, which is what process supervisors read as success."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
