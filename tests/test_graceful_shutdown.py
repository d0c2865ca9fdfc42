"""SIGTERM on a real server process: requests already received are all answered, the history buffer
is flushed, the process exits 0; a restart on the same database keeps trend, topologies, bindings."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import orjson
from conftest import UciCycles, start_server, stop_server
from pg import TcpProxy, scratch_database

CONNECTIONS = 12
ITEMS_PER_BATCH = 8


def _in_progress(metrics: str, route: str) -> float:
    prefix = f'hydrodiag_http_requests_in_progress{{method="POST",route="{route}"}} '
    return next((float(line[len(prefix):]) for line in metrics.splitlines() if line.startswith(prefix)), 0.0)


async def test_sigterm_finishes_work_flushes_history_and_exits_0(model_path: Path, uci: UciCycles,
                                                                 tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # A long flush interval keeps rows in the buffer until shutdown has to flush them.
    env = {"DATA_DIR": str(data_dir), "HISTORY_FLUSH_INTERVAL_MS": "30000", "HISTORY_WRITE_BATCH": "100000",
           "LOG_LEVEL": "INFO"}
    server = start_server(model_path, tmp_path / "first.log", **env)
    topology = {"id": "shutdown_rig", "components": [{"id": "pump", "type": "pump"}],
                "sensors": [{"name": "p", "component": "pump", "quantity": "pressure"}]}
    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            assert http.post("/topologies", json=topology).status_code == 201
            assert http.put("/equipment/bound-1", json={"topology_id": "shutdown_rig"}).status_code == 200
        bodies = [orjson.dumps({"requests": [uci.request("nominal", f"shut-{c}") for _ in range(ITEMS_PER_BATCH)]})
                  for c in range(CONNECTIONS)]
        host, port = server.base_url.removeprefix("http://").split(":")
        connections = [await asyncio.open_connection(host, int(port)) for _ in bodies]
        for (_, writer), body in zip(connections, bodies, strict=True):
            writer.write(f"POST /predict/batch HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await asyncio.gather(*(writer.drain() for _, writer in connections))
        # SIGTERM once the server holds every request (received, not yet answered or just answered).
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                metrics = (await http.get("/metrics")).text
                done = metrics.count('route="/predict/batch",status="200"}')
                in_flight = _in_progress(metrics, "/predict/batch")
                if in_flight >= CONNECTIONS or done:
                    break
                await asyncio.sleep(0.02)
        server.process.send_signal(signal.SIGTERM)
        print(f"\nSIGTERM with {in_flight:.0f} batch requests in flight, {done} answered")

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
            raw = await reader.read()
            writer.close()
            return int(raw.split(b" ", 2)[1])

        statuses = await asyncio.gather(*(answer(r, w) for r, w in connections))
        code = await asyncio.to_thread(server.process.wait, 60)
    finally:
        stop_server(server)
    log = server.log_tail(20000)
    assert statuses == [200] * CONNECTIONS, log
    assert code == 0, log
    assert "history flushed (complete)" in log
    with sqlite3.connect(data_dir / "hydrodiag.db") as conn:
        rows = conn.execute("SELECT count(*) FROM predictions WHERE equipment_id LIKE 'shut-%'").fetchone()[0]
    assert rows == CONNECTIONS * ITEMS_PER_BATCH

    # Restart on the same database: the trend continues, topology and binding are still there.
    again = start_server(model_path, tmp_path / "second.log", DATA_DIR=str(data_dir))
    try:
        with httpx.Client(base_url=again.base_url, timeout=60) as http:
            answer_ = http.post("/predict", json=uci.request("nominal", "shut-0")).json()
            assert answer_["degradation"]["points_used"] == ITEMS_PER_BATCH + 1
            assert http.get("/topologies/shutdown_rig").status_code == 200
            bound = http.post("/predict", json={"equipment_id": "bound-1", "sensor_data": {"p": [1.0, 2.0, 3.0]}})
            assert bound.status_code == 200 and bound.json()["topology_id"] == "shutdown_rig"
            assert http.get("/equipment/shut-0/history").json()["total"] == ITEMS_PER_BATCH + 1
    finally:
        stop_server(again)


SHUTDOWN_BUDGET_S = 4


async def test_shutdown_phases_share_one_budget(model_path: Path, uci: UciCycles, tmp_path: Path) -> None:
    """A request that never finishes arriving holds uvicorn's drain for the whole SHUTDOWN_TIMEOUT_S;
    the history flush then gets only its one-second floor, not a budget of its own, so the process
    is gone in about SHUTDOWN_TIMEOUT_S + 1 s and a supervisor's grace period can be sized on that."""
    with scratch_database("hydrodiag_shutdown") as url:
        proxy = TcpProxy()
        env = {"DATABASE_URL": proxy.url(url), "SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_BUDGET_S),
               "HISTORY_FLUSH_INTERVAL_MS": "30000", "HISTORY_WRITE_BATCH": "100000", "HISTORY_RETRY_MAX_S": "0.2",
               "LOG_LEVEL": "INFO"}
        server = start_server(model_path, tmp_path / "server.log", **env)
        try:
            with httpx.Client(base_url=server.base_url, timeout=60) as http:
                for i in range(3):
                    assert http.post("/predict", json=uci.request("nominal", f"budget-{i}")).status_code == 200
            proxy.cut()  # the buffered rows can no longer reach the database
            host, port = server.base_url.removeprefix("http://").split(":")
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                         "Content-Length: 100000\r\n\r\n{\"equipment_id\": ".encode())
            await writer.drain()
            await asyncio.sleep(0.3)
            began = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(server.process.wait, 60)
            took = time.monotonic() - began
            writer.close()
        finally:
            stop_server(server)
            proxy.cut()
    log = server.log_tail(20000)
    assert code == 0, log
    assert "history flushed (INCOMPLETE)" in log, log
    # Three budgets in a row (drain, batcher, flush) took more than 2 x SHUTDOWN_TIMEOUT_S here.
    assert took < SHUTDOWN_BUDGET_S + 2.5, f"shutdown took {took:.1f} s\n{log}"
