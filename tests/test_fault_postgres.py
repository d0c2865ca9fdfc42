"""Bounded fault test: a real uvicorn server writing history to the real PostgreSQL under sustained
concurrent load, with the database stopped and started again in the middle.

Afterwards every successful prediction is in the database exactly once (rows == successes, same
request ids), nothing was dropped, and the only non-2xx answers were 503 from backpressure.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest
from conftest import UciCycles, start_server, stop_server
from pg import cluster_version, count_rows, ensure_running, pg_ctl, query_column, require_postgres, scratch_database

LOAD_SECONDS = 20.0
CONCURRENCY = 12
# Paced, so that the load spans the outage on a fast machine too and stays bounded (<= 800 requests).
MAX_RATE_PER_S = 40.0
MAX_REQUESTS = int(LOAD_SECONDS * MAX_RATE_PER_S)
OUTAGE_AT_S, OUTAGE_S = 5.0, 5.0


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} missing")


@pytest.mark.slow
async def test_history_survives_a_database_restart_under_load(model_path: Path, uci: UciCycles,
                                                              tmp_path: Path) -> None:
    if cluster_version() is None:
        pytest.skip("pg_ctlcluster or /etc/postgresql is missing: cannot stop and start the database")
    require_postgres()
    with scratch_database("hd_fault") as url:
        server = start_server(model_path, tmp_path / "server.log", DATABASE_URL=url, MAX_QUEUE_SIZE="48",
                              HISTORY_RETRY_MAX_S="0.5", HISTORY_FLUSH_INTERVAL_MS="50")
        bodies = [orjson.dumps(uci.request(label, f"fault-{label}"))
                  for label in ("nominal", "cooler_reduced", "cooler_failing")]
        statuses: Counter[int] = Counter()
        ok_ids: list[str] = []
        bad_bodies: list[str] = []
        sent = 0
        timeline: list[str] = []
        try:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60.0,
                                         limits=httpx.Limits(max_connections=CONCURRENCY)) as http:
                deadline = time.monotonic() + LOAD_SECONDS

                async def worker(index: int) -> None:
                    nonlocal sent
                    while time.monotonic() < deadline and sent < MAX_REQUESTS:
                        began = time.monotonic()
                        sent += 1
                        rid = f"fault-{uuid.uuid4().hex}"
                        response = await http.post("/predict", content=bodies[sent % len(bodies)],
                                                   headers={"Content-Type": "application/json", "X-Request-ID": rid})
                        statuses[response.status_code] += 1
                        if response.status_code == 200:
                            assert response.json()["request_id"] == rid
                            ok_ids.append(rid)
                        else:
                            bad_bodies.append(response.text[:300])
                        await asyncio.sleep(max(0.0, CONCURRENCY / MAX_RATE_PER_S - (time.monotonic() - began)))

                began = time.monotonic()

                async def outage() -> None:
                    await asyncio.sleep(OUTAGE_AT_S)
                    try:
                        await asyncio.to_thread(pg_ctl, "stop")
                        timeline.append(f"stopped at {time.monotonic() - began:.1f}s after {sent} requests")
                        await asyncio.sleep(OUTAGE_S)
                    finally:
                        await asyncio.to_thread(pg_ctl, "start")
                        timeline.append(f"started at {time.monotonic() - began:.1f}s after {sent} requests")

                await asyncio.gather(outage(), *(worker(i) for i in range(CONCURRENCY)))
                # Every buffered row reaches the database once it is back.
                flush_deadline = time.monotonic() + 60.0
                while True:
                    metrics = (await http.get("/metrics")).text
                    if _metric(metrics, "hydrodiag_history_buffer_rows") == 0 or time.monotonic() > flush_deadline:
                        break
                    await asyncio.sleep(0.25)
        finally:
            ensure_running()
            stop_server(server)

        assert set(statuses) <= {200, 503}, (statuses, bad_bodies[:3], server.log_tail())
        assert all("queue is full" in body for body in bad_bodies), bad_bodies[:3]
        assert statuses[200] > 0
        assert _metric(metrics, "hydrodiag_history_rows_dropped_total") == 0
        # The outage really hit the writer: some batch writes failed and were retried.
        assert _metric(metrics, "hydrodiag_history_write_failures_total") > 0, (timeline, server.log_tail())
        rows = count_rows(url, "SELECT count(*) FROM predictions")
        stored = query_column(url, "SELECT request_id FROM predictions")
        print(f"\nfault test: {sent} requests, statuses {dict(statuses)}, {rows} history rows, "
              f"{int(_metric(metrics, 'hydrodiag_history_write_failures_total'))} failed batch writes; "
              + "; ".join(timeline))
        assert rows == statuses[200]
        assert sorted(stored) == sorted(ok_ids)
