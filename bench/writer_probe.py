"""CPU the history writer spends per stored prediction, through the real `HistoryDatabase`.

The writer thread holds the GIL for most of its work, and the event loop needs that GIL, so every
microsecond it spends per row is taken from request handling under load (`make bench` shows it as the
`history-writer` column of "Server CPU per answered request"). This probe times `_insert_rows` on
batches shaped like the server's (one UCI prediction per row: 10 component healths, 9 probabilities)
with process CPU time, which other load on the machine changes far less than wall time.

    .venv/bin/python -m bench.writer_probe [--url postgresql://postgres@127.0.0.1:5432/test]
        [--batches 8] [--rows 500]

Without `--url` it writes a throw-away SQLite file. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete

from hydrodiag.store.sql import HistoryDatabase, safe_url
from hydrodiag.store.tables import predictions
from hydrodiag.store.writer import Row
from hydrodiag.taxonomy import ANOMALY_TYPES
from hydrodiag.topology.templates import TopologyRegistry

# Rows the probe stores carry this model version, and are deleted again before it returns.
PROBE_VERSION = "hydrodiag-writer-probe"


def prediction_rows(count: int) -> list[Row]:
    """Rows as `HistoryDatabase.append` hands them to the writer, for the UCI rig's components."""
    components = [c.id for c in TopologyRegistry().get("uci_test_rig").components]
    rows: list[Row] = []
    for i in range(count):
        now = datetime.now(UTC)
        rows.append({
            "uid": uuid.uuid4().hex, "equipment_id": f"rig_{i % 64}", "timestamp": now, "model_version": PROBE_VERSION,
            "topology_id": "uci_test_rig", "system_health": 0.8 + i % 7 / 100,
            "component_health": {c: 0.9 - j / 100 for j, c in enumerate(components)},
            "anomaly_probabilities": {a: 0.01 * (j + 1) for j, a in enumerate(ANOMALY_TYPES)},
            "latency_ms": 3.2, "request_id": f"probe-{i}", "recorded_at": now,
        })
    return rows


def measure(url: str, batches: int, rows: int) -> dict[str, Any]:
    database = HistoryDatabase(url)
    database.open()
    database.writer.close(1.0)  # the probe calls the insert itself, on this thread
    try:
        database._insert_rows(prediction_rows(rows))  # first batch: statement compilation, connection
        per_row = []
        for _ in range(batches):
            batch = prediction_rows(rows)
            started = time.process_time()
            database._insert_rows(batch)
            per_row.append((time.process_time() - started) / rows * 1e6)
    finally:
        with database.engine.begin() as connection:
            connection.execute(delete(predictions).where(predictions.c.model_version == PROBE_VERSION))
        database.engine.dispose()
    return {"probe": "history writer CPU per stored row", "database": safe_url(url), "rows_per_batch": rows,
            "batches": batches, "cpu_us_per_row_median": round(statistics.median(per_row), 1),
            "cpu_us_per_row_min": round(min(per_row), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="DATABASE_URL to write to (default: a temporary SQLite file)")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rows", type=int, default=500, help="rows per insert (the writer's HISTORY_WRITE_BATCH)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        url = args.url or f"sqlite:///{Path(scratch) / 'probe.db'}"
        print(json.dumps(measure(url, args.batches, args.rows)))


if __name__ == "__main__":
    main()
