"""Starting, health-waiting, measuring and always stopping the servers under test.

Every server runs in its own process group (start_new_session), so stopping it also stops the
workers it forked (LitServe's inference workers, uvicorn reloaders). Servers still running when
the harness exits -- normally, on an exception, or on SIGINT/SIGTERM -- are stopped by an atexit
hook; nothing outlives a run.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.loadgen import taskset_prefix

_RUNNING: list[Server] = []


@dataclass
class ServerSpec:
    name: str
    command: list[str]
    port: int
    ready_path: str = "/health"
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    start_timeout_s: float = 120.0
    describe: str = ""


class Server:
    def __init__(self, spec: ServerSpec, cpu: str | None, log_dir: Path) -> None:
        self.spec = spec
        self.cpu = cpu
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{spec.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None
        self.memory_ready: dict[str, float] = {}
        self.paused = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.spec.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        command = [*taskset_prefix(self.cpu), *self.spec.command]
        env = {**os.environ, **self.spec.env}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                command,
                env=env,
                cwd=self.spec.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _RUNNING.append(self)
        started = time.monotonic()
        deadline = started + self.spec.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.name} exited with {self.proc.returncode} during start-up; log tail:\n{self.log_tail()}"
                )
            if http_ok(self.url + self.spec.ready_path, timeout=2.0):
                self.startup_s = time.monotonic() - started
                time.sleep(0.5)  # let start-up work that follows readiness settle before measuring memory
                self.memory_ready = self.memory()
                return
            time.sleep(0.25)
        raise RuntimeError(
            f"{self.spec.name} not ready on {self.spec.ready_path} within "
            f"{self.spec.start_timeout_s:.0f}s; log tail:\n{self.log_tail()}"
        )

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def pause(self) -> None:
        """Freeze the whole process group (SIGSTOP): an idle server must not take the server core's CPU
        while another is measured (LitServe's workers poll their queues even when idle)."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False
        time.sleep(0.2)  # timers and polls that fired during the pause run now, not in the measurement

    @contextlib.contextmanager
    def active(self) -> Iterator[Server]:
        """Resumed for the block, paused again afterwards (also when the block fails)."""
        self.resume()
        try:
            yield self
        finally:
            self.pause()

    def stop(self, grace_s: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.paused:
            self._signal(signal.SIGCONT)  # a stopped process would not act on SIGTERM
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace_s)
        # The group may hold workers that outlive their parent: make sure all of it is gone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        if self in _RUNNING:
            _RUNNING.remove(self)

    def memory(self) -> dict[str, float]:
        """RSS in MiB of the server process and of its whole process tree, and the tree's PSS: forked
        workers share pages (torch's libraries, what the parent imported), which RSS counts once per
        process and PSS divides among them. The tree's file-backed part (psutil's `shared`: mapped
        library pages) is kept apart: it is the part that moves with the host's page cache."""
        try:
            main = psutil.Process(self.pid)
            procs = [main, *main.children(recursive=True)]
            info = [p.memory_info() for p in procs]
            rss = [m.rss for m in info]
            pss = [getattr(p.memory_full_info(), "pss", 0) for p in procs]
        except psutil.Error:
            return {}
        return {
            "rss_mb": round(rss[0] / 2**20, 1),
            "tree_rss_mb": round(sum(rss) / 2**20, 1),
            "tree_pss_mb": round(sum(pss) / 2**20, 1),
            "tree_rss_file_mb": round(sum(getattr(m, "shared", 0) for m in info) / 2**20, 1),
            "processes": len(procs),
        }

    def thread_cpu_s(self) -> dict[str, float]:
        """CPU seconds used so far by the server's process tree, by thread: `main` is each process's
        first thread (a Python server's event loop), other threads go by the name the server gave
        them at the operating-system level (hydrodiag names its forward and history threads), and
        threads without one of their own are `other`."""
        totals: dict[str, float] = {}
        try:
            main = psutil.Process(self.pid)
            for proc in [main, *main.children(recursive=True)]:
                process_name = proc.name()
                for thread in proc.threads():
                    label = "main" if thread.id == proc.pid else _os_thread_name(proc.pid, thread.id, process_name)
                    totals[label] = totals.get(label, 0.0) + thread.user_time + thread.system_time
        except psutil.Error:
            return {}
        return totals

    def batching(self) -> dict[str, Any] | None:
        """Forward passes and items per pass, from the BENCH_BATCHES lines a competitor logs."""
        last: dict[str, tuple[int, int]] = {}
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("BENCH_BATCHES "):
                fields = dict(part.split("=", 1) for part in line.split()[1:])
                last[fields["pid"]] = (int(fields["batches"]), int(fields["items"]))
        batches, items = sum(b for b, _ in last.values()), sum(i for _, i in last.values())
        if not batches:
            return None
        return {
            "workers": len(last),
            "batches": batches,
            "items": items,
            "mean_batch_size": round(items / batches, 2),
            "note": "counted every 50 passes per worker, so the last < 50 passes are missing",
        }

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _os_thread_name(pid: int, tid: int, process_name: str) -> str:
    try:
        name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        return "other"
    return "other" if not name or name == process_name[:15] else name


def http_ok(url: str, timeout: float = 5.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def get_json(url: str, timeout: float = 5.0) -> Any | None:
    """The JSON of a 200 answer, else None."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status != 200:
                return None
            return json.loads(response.read() or b"null")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def post_json(url: str, body: bytes, timeout: float = 30.0) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:500].decode(errors="replace")


@contextlib.contextmanager
def all_running(specs: list[ServerSpec], cpu: str | None, log_dir: Path, log: Any = print) -> Iterator[list[Server]]:
    """Start the servers one after the other, each paused once ready; stop them all at the end."""
    servers: list[Server] = []
    try:
        for spec in specs:
            log(f"starting {spec.name}: {spec.describe}")
            server = Server(spec, cpu, log_dir)
            servers.append(server)
            server.start()
            log(f"  ready in {server.startup_s:.1f}s, RSS {server.memory_ready.get('tree_rss_mb')} MB")
            server.pause()
        yield servers
    finally:
        for server in servers:
            server.stop()


def stop_all() -> None:
    for server in list(_RUNNING):
        server.stop(grace_s=3.0)


def _on_signal(signum: int, _frame: object) -> None:
    stop_all()
    raise SystemExit(128 + signum)


atexit.register(stop_all)


def install_signal_handlers() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
