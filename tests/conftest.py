"""Shared fixtures: the shipped checkpoint, real UCI cycles, a real server, a shared ModelManager.

Tests use the trained checkpoint at models/default.ckpt (HYDRODIAG_TEST_MODEL may point at
another trained one) and skip, saying why, when it or the UCI data is absent. The HTTP tests talk
to a real `python -m hydrodiag.api` process on 127.0.0.1 -- uvicorn with uvloop and httptools,
exactly as deployed -- started once per session.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from hydrodiag.inference.manager import ModelManager
from hydrodiag.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO_ROOT / "models" / "default.ckpt"
UCI_SENSORS = ("PS1", "PS2", "PS3", "PS4", "PS5", "PS6", "EPS1", "FS1", "FS2",
               "TS1", "TS2", "TS3", "TS4", "VS1", "CE", "CP", "SE")

# Limits the test server runs with, small enough that "too long" and "too many" payloads stay small.
SERVER_ENV = {
    "MAX_SERIES_LENGTH": "5000",
    "MAX_SENSORS": "32",
    "MAX_BATCH_ITEMS": "16",
    "BATCH_SIZE": "32",
    "MAX_QUEUE_SIZE": "256",
    "DEVICE": "cpu",
    "LOG_LEVEL": "WARNING",
    "CORS_ORIGINS": "http://dashboard.example",
    "TORCH_THREADS": "1",
}
SERVER_START_TIMEOUT_S = 180.0


def checkpoint_under_test() -> Path:
    override = os.environ.get("HYDRODIAG_TEST_MODEL")
    return Path(override) if override else DEFAULT_CHECKPOINT


def uci_data_dir() -> Path | None:
    candidates = []
    if os.environ.get("HYDRODIAG_DATA"):
        base = Path(os.environ["HYDRODIAG_DATA"])
        candidates += [base / "uci_hydraulic_1hz", base]
    candidates.append(REPO_ROOT.parent / "shared" / "data" / "uci_hydraulic_1hz")
    for candidate in candidates:
        if (candidate / "profile.txt").is_file() and (candidate / "PS1.txt").is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def model_path() -> Path:
    path = checkpoint_under_test()
    if not path.is_file():
        pytest.skip(f"trained checkpoint {path} is absent; produce it with `make train` (tests never use "
                    "untrained weights)")
    return path


@dataclass
class UciCycles:
    """A few real cycles of the UCI rig: profile rows and the 60 one-second values of each sensor."""

    rows: dict[str, int]  # label -> cycle index
    profile: dict[int, tuple[float, ...]]
    values: dict[int, dict[str, list[float]]]

    def sensor_data(self, label: str) -> dict[str, list[float]]:
        return self.values[self.rows[label]]

    def request(self, label: str, equipment_id: str, **extra: Any) -> dict[str, Any]:
        return {"equipment_id": equipment_id, "sensor_data": self.sensor_data(label),
                "topology_id": "uci_test_rig", **extra}


# cooler %, valve %, pump leakage, accumulator bar; the rig's nominal state is 100/100/0/130.
_WANTED = {
    "nominal": (100.0, 100.0, 0.0, 130.0),
    "cooler_reduced": (20.0, 100.0, 0.0, 130.0),
    "cooler_failing": (3.0, 100.0, 0.0, 130.0),
}


def _load_uci(directory: Path) -> UciCycles:
    profile = np.loadtxt(directory / "profile.txt", ndmin=2)
    rows: dict[str, int] = {}
    for label, condition in _WANTED.items():
        match = np.all(profile[:, :4] == np.array(condition), axis=1)
        stable = np.flatnonzero(match & (profile[:, 4] == 0))
        candidates = stable if stable.size else np.flatnonzero(match)
        if not candidates.size:
            raise RuntimeError(f"no UCI cycle with condition {condition}")
        rows[label] = int(candidates[len(candidates) // 2])  # mid-block: far from condition changes
    wanted = set(rows.values())
    values: dict[int, dict[str, list[float]]] = {row: {} for row in wanted}
    for sensor in UCI_SENSORS:
        with open(directory / f"{sensor}.txt", encoding="ascii") as handle:
            for index, line in enumerate(handle):
                if index in wanted:
                    values[index][sensor] = [float(x) for x in line.split("\t")]
    return UciCycles(rows=rows, profile={r: tuple(profile[r]) for r in wanted}, values=values)


@pytest.fixture(scope="session")
def uci() -> UciCycles:
    directory = uci_data_dir()
    if directory is None:
        pytest.skip("UCI data not found: set HYDRODIAG_DATA or place it at ../shared/data/uci_hydraulic_1hz")
    return _load_uci(directory)


@pytest.fixture(scope="session")
def manager(model_path: Path) -> ModelManager:
    """One manager for all engine tests, so the checkpoint is read and warmed up once."""
    return ModelManager(capacity=4)


def engine_settings(model_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"model_path": model_path, "device": "cpu", "max_series_length": 5000,
                              "max_sensors": 32, "max_batch_items": 16}
    values.update(overrides)
    return load_settings(**values)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "API_HOST", "API_PORT")}
    env.update(SERVER_ENV)
    # Each server gets its own history database, never the repository's data/ folder.
    env["DATA_DIR"] = tempfile.mkdtemp(prefix="hydrodiag-test-")
    env.pop("DATABASE_URL", None)
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class RunningServer:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def start_server(model: Path, log_path: Path, wait_ready: bool = True, **env: str) -> RunningServer:
    port = free_port()
    log = open(log_path, "wb")  # noqa: SIM115 -- the server writes to it for its whole life
    process = subprocess.Popen(
        [sys.executable, "-m", "hydrodiag.api", "--host", "127.0.0.1", "--port", str(port), "--model-path",
         str(model)],
        cwd=REPO_ROOT, env=server_env(**env), stdout=log, stderr=subprocess.STDOUT,
    )
    log.close()
    server = RunningServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if not wait_ready:  # listening is enough: the caller looks at start-up itself
                httpx.get(server.base_url + "/health", timeout=2.0)
                return server
            if httpx.get(server.base_url + "/ready", timeout=2.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"server not ready after {SERVER_START_TIMEOUT_S:.0f}s:\n{server.log_tail()}")


def stop_server(server: RunningServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)


@pytest.fixture(scope="session")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(model_path, tmp_path_factory.mktemp("server") / "server.log")
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture(scope="session")
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120.0) as http:
        yield http


async def post_simultaneously(base_url: str, path: str, bodies: list[bytes]) -> list[tuple[int, Any]]:
    """POST each body on its own connection, all written before any response is read.

    A general-purpose client spends milliseconds of CPU per request, so its "concurrent" requests
    reach the server one by one on a busy machine; writing pre-built requests on open sockets makes
    them arrive together, which is what a concurrency test means.
    """
    host, port = base_url.removeprefix("http://").split(":")
    connections = [await asyncio.open_connection(host, int(port)) for _ in bodies]
    for (_, writer), body in zip(connections, bodies, strict=True):
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    await asyncio.gather(*(writer.drain() for _, writer in connections))

    async def read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, Any]:
        raw = await reader.read()  # Connection: close -> the server ends the stream
        writer.close()
        head, _, payload = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return status, orjson.loads(payload)

    return list(await asyncio.gather(*(read(reader, writer) for reader, writer in connections)))


def assert_no_stack_trace(response: httpx.Response) -> None:
    text = response.text
    for marker in ("Traceback", 'File "', "site-packages"):
        assert marker not in text, f"{response.status_code} body leaks internals ({marker!r}): {text[:500]}"
