"""WORKERS > 1: one port, several processes that act as one server.

A registration, a binding or an activation answered by one worker holds for every later request,
whichever worker answers it; a worker that dies is replaced (serving what the others serve) while
its connections wait; SIGTERM stops them all cleanly; a taken port is refused at start."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import RunningServer, UciCycles, server_env, start_server, stop_server
from prometheus_client.parser import text_string_to_metric_families
from test_model_lifecycle import _copy_with_version

from hydrodiag.api.metrics import SHARE_INTERVAL_S
from hydrodiag.errors import PeerSyncError
from hydrodiag.inference.peers import NOT_UP, WorkerGroup
from hydrodiag.model.checkpoint import read_metadata

# Each request on a fresh connection: SO_REUSEPORT picks the worker by the connection's hash, so
# this many reach every worker of two with near certainty (a miss: 2 * 0.5**24).
FRESH_CONNECTIONS = 24


# -- the shared block ---------------------------------------------------------------------------

def test_generation_model_path_and_acknowledgements_cross_a_fork() -> None:
    group = WorkerGroup(2)
    first, second = group.peer(0), group.peer(1)
    assert first.generation() == 1 and first.model_path() is None
    assert first.lagging(5) == []  # a worker that is not up is not waited for

    pid = os.fork()
    if pid == 0:  # the other worker: acknowledges what it reads once the path is there
        deadline = time.monotonic() + 10
        while second.model_path() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        second.acknowledge(second.generation())
        os._exit(0 if second.model_path() == Path("/models/b.ckpt") else 1)
    generation = group.bump(Path("/models/b.ckpt"))
    assert asyncio.run(first.wait_for_peers(generation, 10.0)) == []
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert group.acknowledged(1) == generation

    group.mark_down(1)
    assert group.acknowledged(1) == NOT_UP and first.lagging(generation + 1) == []


def test_a_worker_dying_while_it_holds_the_lock_blocks_nobody() -> None:
    group = WorkerGroup(2)
    pid = os.fork()
    if pid == 0:
        group._locked().__enter__()  # dies holding it
        os._exit(0)
    os.waitpid(pid, 0)
    signal.alarm(10)  # a kept lock would hang the bump forever: fail the test instead
    try:
        assert group.bump(Path("/models/c.ckpt")) == 2
        assert group.model_path() == Path("/models/c.ckpt")
    finally:
        signal.alarm(0)


def test_metrics_slots_hold_each_workers_latest_exposition() -> None:
    group = WorkerGroup(2)
    first, second = group.peer(0), group.peer(1)
    second.share_metrics(b"# one\n")
    second.share_metrics(b"# two\n")
    assert first.others_metrics() == {1: b"# two\n"}
    assert second.others_metrics() == {}
    group.mark_down(1)
    assert first.others_metrics() == {}


def test_publish_names_the_worker_that_did_not_follow() -> None:
    group = WorkerGroup(3)
    group.acknowledge(1, 1)  # up, but never applies anything
    group.acknowledge(2, NOT_UP)
    peer = group.peer(0, timeout_s=0.05)
    with pytest.raises(PeerSyncError, match=r"worker\(s\) 1 did not apply it"):
        asyncio.run(peer.publish("registering topology 'x'"))


# -- a real server with two workers -------------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    directory = tmp_path_factory.mktemp("worker-models")
    base = read_metadata(model_path)["model_version"]
    shutil.copy(model_path, directory / "a.ckpt")
    second = f"{base}+workers"
    _copy_with_version(model_path, directory / "b.ckpt", second)
    return directory, base, second


@pytest.fixture(scope="module")
def server(model_dir: tuple[Path, str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(model_dir[0] / "a.ckpt", tmp_path_factory.mktemp("workers") / "server.log", WORKERS="2")
    try:
        yield running
    finally:
        stop_server(running)


def _fresh(server: RunningServer, method: str, path: str, count: int = FRESH_CONNECTIONS,
           **kwargs: object) -> list[httpx.Response]:
    """The same request on `count` new connections (by default: on every worker)."""
    responses = []
    for _ in range(count):
        with httpx.Client(base_url=server.base_url, timeout=60.0) as http:
            responses.append(http.request(method, path, **kwargs))  # type: ignore[arg-type]
    return responses


def _workers(server: RunningServer) -> list[psutil.Process]:
    return psutil.Process(server.process.pid).children()


def test_two_workers_answer_on_one_port(server: RunningServer) -> None:
    pids = {w.pid for w in _workers(server)}
    assert len(pids) == 2
    answered = {r.json()["worker"]["pid"] for r in _fresh(server, "GET", "/stats")}
    assert answered == pids, "both workers take connections"


def test_registration_and_binding_hold_on_every_worker(server: RunningServer, uci: UciCycles) -> None:
    with httpx.Client(base_url=server.base_url, timeout=60.0) as http:
        rig = http.get("/topologies/uci_test_rig").json()
        rig["id"] = "rig_copy_for_workers"
        assert http.post("/topologies", json=rig).status_code == 201
        assert http.put("/equipment/press-7", json={"topology_id": rig["id"]}).status_code == 200
    assert {r.status_code for r in _fresh(server, "GET", f"/topologies/{rig['id']}")} == {200}
    bound = _fresh(server, "GET", "/equipment/press-7")
    assert {(r.status_code, r.json().get("topology_id")) for r in bound} == {(200, rig["id"])}
    # The second registration of the id is a conflict on whichever worker answers.
    assert {r.status_code for r in _fresh(server, "POST", "/topologies", 4, json=rig)} == {409}
    body = uci.request("nominal", "press-7")
    body.pop("topology_id", None)
    predicted = _fresh(server, "POST", "/predict", json=body)
    assert {(r.status_code, r.json()["topology_id"]) for r in predicted} == {(200, rig["id"])}


def _stats_requests_counted(server: RunningServer) -> tuple[set[str], float]:
    [response] = _fresh(server, "GET", "/metrics", 1)
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    samples = [s for s in families["hydrodiag_http_requests"].samples
               if s.name.endswith("_total") and s.labels["route"] == "/stats"]
    return {s.labels["worker"] for s in families["hydrodiag_model_loaded"].samples}, sum(s.value for s in samples)


def test_any_worker_answers_metrics_for_all(server: RunningServer) -> None:
    """One scrape, whichever worker answers it, counts the requests of both."""
    time.sleep(SHARE_INTERVAL_S * 1.5)  # each worker shares its exposition once a second
    _, before = _stats_requests_counted(server)
    answered = {r.json()["worker"]["pid"] for r in _fresh(server, "GET", "/stats")}
    assert len(answered) == 2
    time.sleep(SHARE_INTERVAL_S * 1.5)
    for _ in range(4):
        workers, after = _stats_requests_counted(server)
        assert workers == {"0", "1"}
        assert after - before == FRESH_CONNECTIONS


def test_a_machine_trend_counts_the_points_every_worker_made(server: RunningServer, uci: UciCycles) -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    for hour in range(5):
        body = {**uci.request("nominal", "trend-7"), "timestamp": (start + timedelta(hours=hour)).isoformat()}
        assert _fresh(server, "POST", "/predict", 1, json=body)[0].status_code == 200
    time.sleep(2.0)  # rows reach the database within HISTORY_FLUSH_INTERVAL_MS; workers look once a second
    body = {**uci.request("nominal", "trend-7"), "timestamp": (start + timedelta(hours=5)).isoformat()}
    [answer] = _fresh(server, "POST", "/predict", 1, json=body)
    assert answer.json()["degradation"]["points_used"] == 6, "whichever worker answers sees all six"


def test_activation_reaches_every_worker_and_survives_a_worker_crash(
    server: RunningServer, model_dir: tuple[Path, str, str]
) -> None:
    _, base, second = model_dir
    with httpx.Client(base_url=server.base_url, timeout=60.0) as http:
        response = http.post(f"/models/{second}/activate")
        assert response.status_code == 200, response.text
    assert {r.json()["model_version"] for r in _fresh(server, "GET", "/ready")} == {second}
    assert {r.json()["previous"] for r in _fresh(server, "GET", "/models")} == {base}

    victim = _workers(server)[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    # Connections to the dead worker's socket wait in its backlog until the replacement takes them.
    answers = _fresh(server, "GET", "/ready")
    assert {(r.status_code, r.json().get("model_version")) for r in answers} == {(200, second)}
    pids = {w.pid for w in _workers(server)}
    assert len(pids) == 2 and victim.pid not in pids


def test_sigterm_stops_every_worker_with_status_0(model_path: Path, tmp_path: Path) -> None:
    running = start_server(model_path, tmp_path / "server.log", WORKERS="2")
    workers = _workers(running)
    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(timeout=60) == 0, running.log_tail()
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_a_taken_port_stops_the_start_with_one_line(model_path: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "hydrodiag.api", "--host", "127.0.0.1", "--port", str(port),
             "--model-path", str(model_path)],
            cwd=tmp_path, env=server_env(WORKERS="2"), capture_output=True, text=True, timeout=120,
        )
    assert result.returncode == 2
    assert "API_PORT" in result.stderr and str(port) in result.stderr
    assert "Traceback" not in result.stderr
