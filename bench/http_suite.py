"""The end-to-end HTTP measurements of one running server (the same for every server under test)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import run_open_loop, run_wrk, taskset_prefix
from bench.servers import Server, get_json, post_json


@dataclass(frozen=True)
class HttpPlan:
    levels: tuple[int, ...] = (1, 4, 16, 64)
    secondary_levels: tuple[int, ...] = (1, 16)  # for payloads other than the first
    duration_s: float = 8.0
    warmup_s: float = 3.0
    open_loop_s: float = 8.0
    batch_duration_s: float = 5.0
    client_cpu: str | None = None
    open_loop_fraction: float = 0.5


def saturation(levels: dict[str, Any]) -> float:
    return max((run["ok_rps"] for run in levels.values()), default=0.0)


def cpu_per_request(before: dict[str, float], after: dict[str, float], run: dict[str, Any]) -> dict[str, Any]:
    """The server's CPU per answered request during one run, in microseconds by thread and in total,
    and how many cores it kept busy on average: what a level costs, beside what it achieved."""
    answered = run["requests"] - run["non_2xx"] - run["errors"]["timeout"]
    used = {label: after[label] - before.get(label, 0.0) for label in after}
    if answered <= 0 or not used or run["duration_s"] <= 0:
        return {}
    return {
        "us_per_request": {label: round(1e6 * s / answered, 1) for label, s in sorted(used.items()) if s > 0},
        "total_us_per_request": round(1e6 * sum(used.values()) / answered, 1),
        "cores_busy": round(sum(used.values()) / run["duration_s"], 2),
    }


def check_answer(server: Server, single_bodies: Path, path: str = "/predict") -> dict[str, Any]:
    """POST one body and check the answer is a 200 with a health score (the servers really infer)."""
    body = single_bodies.read_bytes().splitlines()[0]
    status, answer = post_json(server.url + path, body)
    ok = status == 200 and isinstance(answer, dict) and "health" in answer
    return {
        "status": status,
        "ok": ok,
        "health_score": answer.get("health", {}).get("score") if ok else None,
        "response_bytes": len(json.dumps(answer)) if ok else None,
        "error": None if ok else str(answer)[:300],
    }


def _log_run(log: Any, server: str, label: str, run: dict[str, Any]) -> None:
    log(
        f"  {server:<14} {label:<22} {run['ok_rps']:>8.1f} req/s  p50 {run['latency_ms']['p50']:>7.2f}  "
        f"p99 {run['latency_ms']['p99']:>8.2f} ms" + (f"  non-2xx {run['non_2xx']}" if run["non_2xx"] else "")
    )


def measure_all(
    servers: list[Server], payloads: dict[str, dict[str, Path]], plan: HttpPlan, log: Any = print
) -> dict[str, dict[str, Any]]:
    """Every measurement of every server, interleaved: for each payload and level the servers run back
    to back (order rotated), the idle ones frozen. Background load that drifts during the run then
    hits all servers alike instead of whichever happened to run in a busy minute.

    The first server (hydrodiag) also gets the batch endpoint; the open-loop rate is a fraction of
    its saturation, the same absolute rate for every server.
    """
    first = next(iter(payloads))
    results: dict[str, dict[str, Any]] = {}
    for server in servers:
        with server.active():
            check = check_answer(server, payloads[first]["single"])
            if not check["ok"]:
                raise RuntimeError(f"{server.spec.name} answered {check} to a valid request")
            run_wrk(server.url, payloads[first]["single"], "/predict", 16, plan.warmup_s, cpu=plan.client_cpu)
        results[server.spec.name] = {
            "describe": server.spec.describe,
            "startup_s": round(server.startup_s or 0.0, 3),
            "memory_ready": server.memory_ready,
            "check": check,
            "payloads": {},
        }
    steps = [(name, c) for name in payloads for c in (plan.levels if name == first else plan.secondary_levels)]
    for i, (name, connections) in enumerate(steps):
        shift = i % len(servers)
        for server in servers[shift:] + servers[:shift]:
            with server.active():
                before = server.thread_cpu_s()
                run = run_wrk(
                    server.url, payloads[name]["single"], "/predict", connections, plan.duration_s, cpu=plan.client_cpu
                )
                run["server_cpu"] = cpu_per_request(before, server.thread_cpu_s(), run)
            entry = results[server.spec.name]["payloads"].setdefault(name, {"levels": {}})
            entry["levels"][str(connections)] = run
            _log_run(log, server.spec.name, f"{name} c={connections}", run)
    for server in servers:
        result = results[server.spec.name]
        for entry in result["payloads"].values():
            entry["saturation_rps"] = saturation(entry["levels"])
        result["memory_after_load"] = server.memory()
        result["batching"] = server.batching()
    main = servers[0]
    with main.active():
        run = run_wrk(
            main.url,
            payloads[first]["batch"],
            "/predict/batch",
            1,
            plan.batch_duration_s,
            cpu=plan.client_cpu,
            request_timeout_s=30,
        )
    results[main.spec.name]["batch32"] = run
    _log_run(log, main.spec.name, "POST /predict/batch x32", run)
    rate = plan.open_loop_fraction * results[main.spec.name]["payloads"][first]["saturation_rps"]
    for server in servers if rate > 0 else []:
        with server.active():
            run = run_open_loop(
                server.url, payloads[first]["single"], "/predict", rate, plan.open_loop_s, cpu=plan.client_cpu
            )
        results[server.spec.name]["open_loop"] = run
        log(
            f"  {server.spec.name:<14} open loop {rate:.0f} req/s offered: {run['achieved_rps']:.0f} done, "
            f"p50 {run['latency_ms']['p50']:.2f}  p99 {run['latency_ms']['p99']:.2f} ms, failed {run['failed']}"
        )
    return results


def hydrodiag_stats(server: Server) -> dict[str, Any] | None:
    stats = get_json(server.url + "/stats")
    return stats if isinstance(stats, dict) else None


def profile_safely(server: Server, single_bodies: Path, plan: HttpPlan, out_dir: Path) -> dict[str, Any]:
    """`profile`, whose failure is reported in the results instead of failing the run."""
    try:
        return profile(server, single_bodies, plan, out_dir)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def profile(
    server: Server,
    single_bodies: Path,
    plan: HttpPlan,
    out_dir: Path,
    seconds: float = 10.0,
    connections: int = 16,
) -> dict[str, Any]:
    """py-spy record of the server under `connections` clients (after the measurements: it perturbs them).

    Writes collapsed stacks (flamegraph.pl / speedscope input) and returns the top frames.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / f"{server.spec.name}-c{connections}.pyspy.txt"
    spy_bin = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy_bin).exists():
        return {"error": "py-spy is not installed (.venv/bin/pip install py-spy)"}
    command = [
        spy_bin,
        "record",
        "--pid",
        str(server.pid),
        "--duration",
        str(round(seconds)),
        "--rate",
        "200",
        "--threads",
        "--subprocesses",
        "--format",
        "raw",
        "-o",
        str(raw),
    ]
    # The profiler runs on the client core, so it does not take CPU from the server it samples.
    spy = subprocess.Popen(
        [*taskset_prefix(plan.client_cpu), *command], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    time.sleep(1.0)
    try:
        run = run_wrk(server.url, single_bodies, "/predict", connections, seconds - 2, cpu=plan.client_cpu)
    finally:
        try:
            spy.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            spy.kill()
    return {
        "collapsed_stacks": str(raw),
        "under_profiler_rps": run["ok_rps"],
        "connections": connections,
        "top": _trimmed(top_frames(raw)) if raw.exists() else {},
    }


def _trimmed(top: dict[str, Any]) -> dict[str, Any]:
    """Stage shares computed on the full table; only the head of the inclusive table is kept."""
    return {**top, "stages_pct": stage_shares(top), "inclusive_pct": top["inclusive_pct"][:40]}


def _frame(raw: str) -> str:
    """'func (pkg/module.py:123)' -> 'func (pkg/module.py)'."""
    name, _, where = raw.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


# Leaf frames of a thread blocked in C (py-spy's idle detection misses some of them, e.g. idle
# workers of asyncio.to_thread's executor): such samples are waiting, not work, and are dropped.
IDLE_LEAVES = (
    "_worker (concurrent/futures/thread.py)",
    "Condition.wait (threading.py)",
    "Event.wait (threading.py)",
    "Thread.join (threading.py)",
)


def top_frames(collapsed: Path, limit: int = 30) -> dict[str, Any]:
    """On-CPU sample shares: per thread, per function as leaf (`self`) and anywhere on the stack."""
    threads: dict[str, int] = {}
    self_count: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        parts = stack.split(";")
        if _frame(parts[-1]) in IDLE_LEAVES:
            continue
        total += count
        thread = next((p.partition(": ")[2] or p for p in parts if p.startswith("thread (")), "?")
        threads[thread] = threads.get(thread, 0) + count
        frames = [_frame(p) for p in parts if not p.startswith(("process ", "thread ("))]
        if frames:
            self_count[frames[-1]] = self_count.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count

    def share(table: dict[str, int], n: int = limit) -> list[tuple[str, float]]:
        ranked = sorted(table.items(), key=lambda kv: -kv[1])[:n]
        return [(name, round(100.0 * c / max(total, 1), 1)) for name, c in ranked]

    return {
        "samples": total,
        "threads_pct": share(threads, 10),
        "self_pct": share(self_count),
        "inclusive_pct": share(inclusive, 10 * limit),
    }


# Stages of a hydrodiag request, as the function names py-spy reports (inclusive share of samples).
STAGES = (
    ("HTTP server + framework + handler (event loop)", "RequestResponseCycle.run_asgi"),
    ("JSON body decode (Starlette Request.json, stdlib json)", "Request.json"),
    ("request validation (pydantic, FastAPI)", "_validate_value_with_model_field"),
    ("POST /predict fast lane, all of it (api.fast_lane, plain ASGI)", "PredictFastLane.__call__"),
    ("JSON body parse + validation (pydantic-core, fast lane or JsonBodyRoute)", "BaseModel.model_validate_json"),
    ("preprocess: topology, validation, resampling, graph (event loop)", "Preprocessor.prepare"),
    ("response building: history, trend, plain response data", "InferenceEngine._respond"),
    ("response serialisation (FastAPI serialize_response)", "serialize_response"),
    ("response serialisation (model_dump_json, JsonBodyRoute)", "BaseModel.model_dump_json"),
    ("response serialisation (orjson, api.routes.response_json)", "response_json"),
    ("request id (uuid4, middleware)", "uuid4"),
    ("request id (prefix + counter, hydrodiag.ids)", "UniqueIds.uuid_shaped"),
    ("logging (access log)", "Logger.info"),
    ("forward thread, all of it", "_WorkItem.run"),
    ("collate (torch_geometric Batch.from_data_list)", "Batch.from_data_list"),
    ("collate (hydrodiag.inference.collate)", "collate"),
    ("model forward (ServedModel.__call__)", "ServedModel.__call__"),
    ("  temporal encoder", "TemporalEncoder.forward"),
    ("  GATv2 layers", "GATv2Conv.forward"),
    ("split output", "split_output"),
)


def stage_shares(top: dict[str, Any]) -> list[tuple[str, float]]:
    inclusive: dict[str, float] = {}
    for name, pct in top.get("inclusive_pct", []):  # sorted: the first of a name is its largest
        inclusive.setdefault(name.split(" (")[0], pct)
    return [(label, inclusive[key]) for label, key in STAGES if key in inclusive]
