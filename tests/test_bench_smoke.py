"""The benchmark harness runs end to end in smoke mode and writes well-formed JSON.

No timing is asserted anywhere: performance is measured by `make bench`, never by a test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# BENCH_SMOKE_MODEL lets a developer run this before the trained checkpoint exists.
CHECKPOINT = Path(os.environ.get("BENCH_SMOKE_MODEL", REPO / "models" / "default.ckpt"))
DATA = REPO.parent / "shared" / "data" / "uci_hydraulic_1hz"


@pytest.mark.slow
def test_bench_smoke_writes_well_formed_json(tmp_path: Path) -> None:
    if not CHECKPOINT.exists():
        pytest.skip(f"no trained checkpoint at {CHECKPOINT} (make train)")
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (apt-get install -y wrk); the harness needs it for HTTP load")
    if not (DATA / "PS1.txt").exists():
        pytest.skip(f"UCI data not found at {DATA}")
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--smoke",
            "--model-path",
            str(CHECKPOINT),
            "--data",
            str(DATA),
            "--out-json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads(out.read_text())

    assert results["smoke"] is True
    assert "error" not in results
    for key in ("machine", "pinning", "payloads", "model", "servers", "summary", "wall_s"):
        assert key in results, key
    assert results["payloads"][0]["name"] == "uci_cycle"
    assert results["payloads"][0]["sensors"] == 17

    load = results["model"]["load"]
    assert {"load_s", "warmup_s", "num_parameters"} <= set(load)
    assert results["model"]["runs"], "model-only runs missing"
    for run in results["model"]["runs"]:
        assert {"batch_size", "latency_ms_p50", "forward_ms_p50", "samples_per_s"} <= set(run)

    hydrodiag = results["servers"]["hydrodiag"]
    assert hydrodiag["check"]["ok"] is True
    levels = hydrodiag["payloads"]["uci_cycle"]["levels"]
    assert levels, "no closed-loop level measured"
    for run in levels.values():
        assert run["requests"] > 0
        assert {"p50", "p95", "p99"} <= set(run["latency_ms"])
        cpu = run["server_cpu"]  # where the server's CPU went, by its named threads
        assert {"main", "forward_0"} <= set(cpu["us_per_request"]), cpu
        assert cpu["total_us_per_request"] >= cpu["us_per_request"]["main"] > 0
    assert {"offered_rps", "achieved_rps", "latency_ms"} <= set(hydrodiag["open_loop"])
    assert hydrodiag["batch32"]["requests"] > 0
    assert hydrodiag["memory_ready"]["rss_mb"] > 0

    summary = results["summary"]
    assert [row["metric"] for row in summary["spec_table"]] == [
        "Single prediction",
        "Batch (32)",
        "Throughput",
        "Model load time",
        "Warmup time",
    ]
    assert all("met" in target and "gap" in target for target in summary["targets"])
