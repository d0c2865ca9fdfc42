"""`make bench`: hydrodiag, plain FastAPI and LitServe on the same model and payload, in one run.

    python -m bench.run [--model-path models/default.ckpt] [--data ../shared/data/uci_hydraulic_1hz]
    python -m bench.run --smoke --out-json /tmp/smoke.json      # seconds; what CI runs

Steps: payloads -> model-only benchmark (own process) -> for each server: start pinned to the
server core(s), wait for readiness, closed-loop wrk levels, batch endpoint, open loop at 50 % of
hydrodiag's saturation, memory -> stop. Writes bench/results/latest.json and docs/BENCHMARKS.md.
Every subprocess has a timeout and every server is stopped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench import http_suite, report
from bench.competitors.envs import LITSERVE, PLAIN_FASTAPI, EnvSpec, ensure_env
from bench.loadgen import ensure_wrk
from bench.payloads import load_payloads, write_bodies
from bench.servers import ServerSpec, all_running, install_signal_handlers, stop_all

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
TMP = RESULTS / "tmp"
MARKER = "BENCH_JSON "
# Settings hydrodiag reads from the environment that change how it serves; recorded with the results.
HYDRODIAG_ENV = (
    "WORKERS",
    "DEVICE",
    "BATCH_SIZE",
    "MAX_WAIT_MS",
    "MAX_QUEUE_SIZE",
    "USE_DYNAMIC_BATCHING",
    "USE_COMPILE",
    "COMPILE_MODE",
    "TORCH_THREADS",
    "LOG_LEVEL",
    "GC_FREEZE",
    "ACCESS_LOG",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "DATA_DIR",
    "JIT_TRACE",
    "GIL_SWITCH_INTERVAL_MS",
)


def fresh_history_databases() -> bool:
    """Whether the harness gives each hydrodiag configuration an empty history database of its own
    (unless the environment chose where history goes)."""
    return not {"DATA_DIR", "DATABASE_URL"} & set(os.environ)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")), [])
    import torch

    return {
        "cpu_model": model,
        "nproc": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "avx512": any(f.startswith("avx512") for f in flags),
        "avx2": "avx2" in flags,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
    }


def background_load(seconds: float = 1.0) -> dict[str, Any]:
    """CPU used by other processes over `seconds`: tells a quiet machine from a busy one."""
    own = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
    procs = [p for p in psutil.process_iter(["name", "cmdline"]) if p.pid not in own]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
    time.sleep(seconds)
    busy = []
    for p in procs:
        try:
            words = [Path(w).name for w in (p.info["cmdline"] or [p.info["name"]])[:3]]
            busy.append((p.cpu_percent(None), " ".join(words)[:60]))
        except psutil.Error:
            continue
    busy.sort(reverse=True)
    total = sum(c for c, _ in busy)
    return {
        "other_processes_cpu_pct": round(total, 1),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "top": [f"{name} {cpu:.0f}%" for cpu, name in busy[:3] if cpu >= 5],
    }


def cpu_split(pin: bool, servers_share_client_core: bool) -> tuple[str | None, str | None]:
    """(client cpu, server cpus): the load generator gets the first core; the servers every core
    (sharing the client's, as a server on a small machine would) or only the others."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    server = cpus if servers_share_client_core else cpus[1:]
    return str(cpus[0]), ",".join(str(c) for c in server)


def run_model_bench(model_path: Path, bodies: list[Path], smoke: bool) -> dict[str, Any]:
    threads = "1" if smoke or (os.cpu_count() or 1) < 2 else f"1,{min(os.cpu_count() or 2, 2)}"
    command = [
        sys.executable,
        "-m",
        "bench.model_bench",
        "--model-path",
        str(model_path),
        "--bodies",
        *map(str, bodies),
        "--threads",
        threads,
        "--batch-sizes",
        "1,8" if smoke else "1,8,32,128",
        "--min-time",
        "0.2" if smoke else "1.0",
    ]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"model benchmark failed (rc {proc.returncode}): {proc.stderr[-1500:]}")
    return dict(json.loads(line[len(MARKER) :]))


def server_specs(
    model_path: Path, envs: dict[str, Path], litserve_timeout: float, workers_variant: int = 0
) -> list[ServerSpec]:
    """hydrodiag first (as configured by the environment), then hydrodiag with WORKERS=`workers_variant`
    when that is above 1, then the competitors whose environments exist."""

    def hydrodiag(name: str, env: dict[str, str], describe: str) -> ServerSpec:
        port = free_port()
        command = [str(Path(sys.executable).parent / "hydrodiag"), "serve", "--host", "127.0.0.1", "--port",
                   str(port), "--model-path", str(model_path)]
        if fresh_history_databases():
            # Each configuration starts from an empty history database of its own, as a fresh install
            # does, rather than from whatever earlier runs left in the repository's data/.
            data_dir = TMP / "data" / name
            shutil.rmtree(data_dir, ignore_errors=True)
            env = {**env, "DATA_DIR": str(data_dir)}
        return ServerSpec(name, command, port, ready_path="/ready", env=env, cwd=REPO, describe=describe)

    specs = [hydrodiag("hydrodiag", {}, "hydrodiag serve (as shipped: settings from the environment)")]
    if workers_variant > 1:
        specs.append(hydrodiag(
            f"hydrodiag_workers{workers_variant}", {"WORKERS": str(workers_variant)},
            f"hydrodiag serve with WORKERS={workers_variant}: a supervisor and {workers_variant} forked server "
            "processes on the port (SO_REUSEPORT), other settings as the first",
        ))
    competitors = {
        "plain_fastapi": ([], {"describe": "FastAPI + uvicorn, async handler, one forward per request"}),
        "litserve": (
            ["--workers", "2", "--max-batch-size", "32", "--batch-timeout", str(litserve_timeout)],
            {"start_timeout_s": 180,
             "describe": f"LitServe 0.2.19, 2 workers, max_batch_size 32, batch_timeout {litserve_timeout}s"},
        ),
    }
    for name, (extra_args, options) in competitors.items():
        if name not in envs:
            continue
        port = free_port()
        command = [str(envs[name]), f"bench/competitors/{name}_server.py", "--model-path", str(model_path),
                   "--port", str(port), *extra_args]
        specs.append(ServerSpec(name, command, port, cwd=REPO, **options))  # type: ignore[arg-type]
    return specs


def prepare_envs(skip: bool) -> tuple[dict[str, Path], list[str]]:
    if skip:
        return {}, ["competitors skipped (--no-competitors / --smoke)"]
    envs: dict[str, Path] = {}
    notes: list[str] = []
    specs: list[EnvSpec] = [PLAIN_FASTAPI, LITSERVE]
    with ThreadPoolExecutor(len(specs)) as pool:
        futures = {spec.name: pool.submit(ensure_env, spec, log) for spec in specs}
    for name, future in futures.items():
        try:
            envs[name] = future.result()
        except (subprocess.SubprocessError, OSError) as exc:
            notes.append(f"{name} skipped: could not build its environment ({exc})")
    return envs, notes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="hydrodiag benchmark harness")
    parser.add_argument("--model-path", type=Path, default=REPO / "models" / "default.ckpt")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "uci_hydraulic_1hz")
    parser.add_argument("--smoke", action="store_true", help="seconds-long run: 1 level, no competitors")
    parser.add_argument("--no-competitors", action="store_true")
    parser.add_argument("--no-pin", action="store_true", help="do not pin client and servers to cores")
    # "all" by default: hydrodiag's forward pass runs GIL-free on its own thread beside the event loop,
    # so it is built to use both cores, and the reference numbers were measured with the client
    # on the same cores; the client's CPU share is recorded in every row. "rest" confines every server
    # to the cores the client leaves free (one core here), as earlier runs did.
    parser.add_argument("--server-cpus", choices=("all", "rest"), default="all",
                        help="servers only on the cores the client does not use, or on every core (the client's "
                             "too; its CPU use is recorded)")
    parser.add_argument("--levels", default="1,4,16,64", help="concurrent connections (closed loop)")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per closed-loop level")
    parser.add_argument("--litserve-batch-timeout", type=float, default=0.002)
    parser.add_argument("--workers-variant", type=int, default=2,
                        help="also measure hydrodiag with WORKERS=N beside the configured one (0: do not; "
                             "never in smoke mode)")
    parser.add_argument(
        "--no-profile",
        action="store_true",
        help="skip the py-spy profile of hydrodiag at 16 clients (taken after its measurements)",
    )
    parser.add_argument("--out-json", type=Path, default=RESULTS / "latest.json")
    parser.add_argument(
        "--doc",
        type=Path,
        default=None,
        help="markdown report (default docs/BENCHMARKS.md; none in smoke mode)",
    )
    args = parser.parse_args(argv)
    if args.doc is None and not args.smoke:
        args.doc = REPO / "docs" / "BENCHMARKS.md"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    started = time.monotonic()
    if not args.model_path.exists():
        log(f"no checkpoint at {args.model_path}: train one (`make train`) or pass --model-path")
        return 2
    wrk = ensure_wrk(log=log)
    if wrk is None:
        log("wrk is required for the HTTP measurements (apt-get install -y wrk)")
        return 3
    client_cpu, server_cpus = cpu_split(not args.no_pin, args.server_cpus == "all")
    smoke = args.smoke
    plan = http_suite.HttpPlan(
        levels=(1,) if smoke else tuple(int(c) for c in args.levels.split(",")),
        secondary_levels=() if smoke else (1, 16),
        duration_s=1.0 if smoke else args.duration,
        warmup_s=1.0 if smoke else 3.0,
        open_loop_s=1.0 if smoke else 8.0,
        batch_duration_s=1.0 if smoke else 5.0,
        client_cpu=client_cpu,
    )
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "smoke": smoke,
        "command": " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "background_before": background_load(),
        "pinning": {"client_cpu": client_cpu, "server_cpus": server_cpus, "tool": "taskset -c"},
        "model_path": str(args.model_path),
        "hydrodiag_env": {k: v for k, v in os.environ.items() if k in HYDRODIAG_ENV},
        "fresh_history_databases": fresh_history_databases(),
        "plan": plan.__dict__,
        "notes": [],
        "servers": {},
    }
    try:
        payloads, notes = load_payloads(args.data, with_excavator=not smoke)
        results["notes"] += notes
        results["payloads"] = [p.describe() for p in payloads]
        bodies = {p.name: write_bodies(p, TMP / "bodies") for p in payloads}
        log(f"payloads: {', '.join(p.name for p in payloads)}" + (f" ({'; '.join(notes)})" if notes else ""))
        envs, notes = prepare_envs(skip=smoke or args.no_competitors)
        results["notes"] += notes
        log("model-only benchmark")
        results["model"] = run_model_bench(args.model_path, [b["single"] for b in bodies.values()], smoke)
        load = results["model"]["load"]
        log(f"  load {load['load_s']:.3f}s, warmup {load['warmup_s']:.3f}s")
        specs = server_specs(args.model_path, envs, args.litserve_batch_timeout,
                             0 if smoke else args.workers_variant)
        with all_running(specs, server_cpus, TMP / "logs", log=log) as servers:
            results["servers"] = http_suite.measure_all(servers, bodies, plan, log=log)
            hydrodiag = servers[0]
            with hydrodiag.active():
                results["servers"]["hydrodiag"]["stats"] = http_suite.hydrodiag_stats(hydrodiag)
                if not (args.no_profile or smoke):
                    log("profiling hydrodiag (py-spy, 16 clients)")
                    results["servers"]["hydrodiag"]["profile"] = http_suite.profile_safely(
                        hydrodiag, bodies[payloads[0].name]["single"], plan, TMP / "profiles"
                    )
    except Exception as exc:
        results["error"] = f"{type(exc).__name__}: {exc}"
        log(f"FAILED: {results['error']}")
    finally:
        stop_all()
        results["background_after"] = background_load()
        results["wall_s"] = round(time.monotonic() - started, 1)
        results["summary"] = report.summarise(results)
        args.out_json.parent.mkdir(parents=True, exist_ok=True)
        args.out_json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        log(f"wrote {args.out_json}")
        if args.doc is not None and "error" not in results:
            args.doc.parent.mkdir(parents=True, exist_ok=True)
            args.doc.write_text(report.markdown(results))
            log(f"wrote {args.doc}")
    log(f"done in {results['wall_s']:.0f}s")
    return 1 if "error" in results else 0


if __name__ == "__main__":
    sys.exit(main())
