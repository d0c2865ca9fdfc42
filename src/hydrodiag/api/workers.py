"""WORKERS > 1: a supervisor process and that many forked server processes on one port.

Why processes: one event loop spends ~0.6 ms of Python per request (HTTP, validation, response),
so one process saturates one core however fast the model is; N processes use N cores.

- Each worker has its own listening socket on the same port (SO_REUSEPORT: the kernel spreads new
  connections evenly) and its own event loop, batcher and model. The supervisor binds the sockets
  and keeps them open, so connections that arrive while a worker restarts wait in its backlog
  instead of being refused.
- Workers are forked after torch and the app's modules are imported, so they share those pages.
- A worker that exits is restarted. One that exits with the configuration-error status, or keeps
  dying within seconds of its start, stops the whole server (exit status 1) instead of looping.
- SIGTERM / SIGINT reach every worker, which drains and flushes as a single server does
  (SHUTDOWN_TIMEOUT_S); the supervisor exits 0 when they all exited 0.
- What the workers share (topologies, bindings, the served model) is kept in step through
  `inference/peers.py`. Counters, /metrics, /stats, the per-key rate limit and each machine's
  trend cache are per worker (docs/OPERATIONS.md, "Several workers").
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from types import FrameType

from sqlalchemy.exc import SQLAlchemyError

# Imported here, in the supervisor, so that the forked workers share the app's modules' pages.
import hydrodiag.api.app  # noqa: F401
from hydrodiag.api.server import EXIT_CONFIG_ERROR, exit_cleanly_after_signals, serve
from hydrodiag.inference.peers import WorkerGroup
from hydrodiag.settings import Settings
from hydrodiag.store.schema import migrate
from hydrodiag.store.sql import create_db_engine

logger = logging.getLogger(__name__)

LISTEN_BACKLOG = 2048
# A worker that dies this soon after its start, this many times in a row, is not restarted again.
CRASH_WINDOW_S = 10.0
MAX_QUICK_RESTARTS = 3
_PR_SET_PDEATHSIG = 1


class PortUnavailableError(Exception):
    pass


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets sharing host:port. The port is first bound alone, without
    SO_REUSEPORT, so that a port another server (another hydrodiag too) listens on is refused
    instead of silently shared with it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    except OSError as exc:
        raise PortUnavailableError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    finally:
        probe.close()
    sockets = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sockets.append(sock)
    return sockets


def run_workers(settings: Settings) -> int:
    """Serve with `settings.workers` processes until SIGTERM/SIGINT; the supervisor's exit status.
    Raises PortUnavailableError before starting anything if the port is taken."""
    sockets = bind_sockets(settings.api_host, settings.api_port, settings.workers)  # PortUnavailableError
    _migrate_once(settings)
    return Supervisor(settings, sockets, WorkerGroup(settings.workers)).run()


def _migrate_once(settings: Settings) -> None:
    """Bring the history schema up to date before the workers start, so that they do not race to
    create it; a database that is down now is left to the workers, which retry until it answers."""
    engine = create_db_engine(settings.resolved_database_url)
    try:
        migrate(engine)
    except SQLAlchemyError as exc:
        logger.warning("history schema not migrated before the workers start (%s); they retry",
                       str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    finally:
        engine.dispose()  # no connection crosses the fork


@dataclass
class Supervisor:
    settings: Settings
    sockets: list[socket.socket]
    group: WorkerGroup
    children: dict[int, int] = field(default_factory=dict)  # pid -> slot
    started: dict[int, float] = field(default_factory=dict)  # slot -> monotonic start
    quick_deaths: dict[int, int] = field(default_factory=dict)  # slot -> deaths in a row within CRASH_WINDOW_S
    stopping: bool = False
    failed: bool = False

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        port = self.sockets[0].getsockname()[1]
        logger.info("serving on %s:%d with %d workers (supervisor pid %d)", self.settings.api_host, port,
                    self.group.workers, os.getpid())
        for slot in range(self.group.workers):
            self._start(slot)
        while self.children:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            slot = self.children.pop(pid, -1)
            if slot >= 0:
                self._exited(slot, pid, os.waitstatus_to_exitcode(status))
        self._close_sockets()
        logger.info("all workers stopped")
        return 1 if self.failed else 0

    def _exited(self, slot: int, pid: int, code: int) -> None:
        self.group.mark_down(slot)
        if self.stopping:
            if code != 0:
                logger.error("worker %d (pid %d) stopped with status %d", slot, pid, code)
                self.failed = True
            return
        quick = time.monotonic() - self.started[slot] < CRASH_WINDOW_S
        self.quick_deaths[slot] = self.quick_deaths.get(slot, 0) + 1 if quick else 0
        logger.error("worker %d (pid %d) exited with status %d", slot, pid, code)
        if code == EXIT_CONFIG_ERROR or self.quick_deaths[slot] > MAX_QUICK_RESTARTS:
            logger.error("worker %d cannot stay up; stopping the server", slot)
            self.failed = True
            self._stop_all()
            return
        self._start(slot)

    def _start(self, slot: int) -> None:
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:
            for sig in (signal.SIGTERM, signal.SIGINT):  # not the supervisor's handler, not even briefly
                signal.signal(sig, signal.SIG_IGN)
            self.children.clear()
            os._exit(self._worker(slot, supervisor))
        self.children[pid] = slot
        self.started[slot] = time.monotonic()
        if self.stopping:  # a signal came between the fork and the line above
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _worker(self, slot: int, supervisor: int) -> int:
        """The forked child: one server process on its socket. Never returns to the supervisor's loop."""
        try:
            exit_cleanly_after_signals()
            _die_with_parent()
            if os.getppid() != supervisor:  # it died before the line above could take effect
                return 1
            for index, sock in enumerate(self.sockets):
                if index != slot:
                    sock.close()
            settings = self.settings
            activated = self.group.model_path()
            if activated is not None:  # a restarted worker serves what the others serve
                settings = settings.model_copy(update={"model_path": activated})
            logger.info("worker %d started (pid %d)", slot, os.getpid())
            serve(settings, sockets=[self.sockets[slot]],
                  peers=self.group.peer(slot, settings.peer_sync_timeout_s))
            return 0
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            logger.exception("worker %d failed", slot)
            return 1
        finally:
            logging.shutdown()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            logger.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.children))
        self._stop_all()

    def _stop_all(self) -> None:
        self.stopping = True
        self._close_sockets()  # new connections are refused once the workers close theirs too
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _close_sockets(self) -> None:
        for sock in self.sockets:
            sock.close()


def _die_with_parent() -> None:
    """Linux: the kernel sends this worker SIGTERM if the supervisor dies (even by SIGKILL), so no
    orphaned worker keeps the port."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
