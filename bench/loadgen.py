"""Load generators: wrk (closed loop, compiled, C + LuaJIT) and a constant-rate open-loop client.

Closed loop: `wrk -t1 -cN` keeps N connections busy, each sending its next request when the
previous answer arrives; it measures saturated throughput and the latency at N clients.

Open loop (`python -m bench.loadgen openloop ...`): requests are *scheduled* at a fixed rate,
independent of answers (what wrk2 does; wrk2 is not packaged by Debian). Latency is measured from
each request's scheduled send time, so a stalled server is charged for the requests that queue
behind the stall (no coordinated omission). It is a raw asyncio HTTP/1.1 client on keep-alive
connections (uvloop when available): a few tens of microseconds of CPU per request, so a few
hundred requests/s cost the client core a small fraction of its time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

LUA_SCRIPT = Path(__file__).resolve().parent / "post.lua"
MARKER = "BENCH_JSON "


def taskset_prefix(cpu: str | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None and shutil.which("taskset") else []


def ensure_wrk(install: bool = True, log=print) -> str | None:  # type: ignore[no-untyped-def]
    """Path of wrk; installs Debian's package when missing and we are root. None when unavailable."""
    found = shutil.which("wrk")
    if found or not install:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        log("wrk is missing and cannot be installed here (needs root and apt-get)")
        return None
    log("wrk missing: apt-get install -y wrk")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        try:
            subprocess.run(
                command,
                check=True,
                timeout=300,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        except (subprocess.SubprocessError, OSError) as exc:
            log(f"could not install wrk: {exc}")
            return None
    return shutil.which("wrk")


def _ms(us: float) -> float:
    return round(us / 1000.0, 3)


def run_wrk(
    url: str,
    bodies: Path,
    path: str,
    connections: int,
    duration_s: float,
    cpu: str | None = None,
    request_timeout_s: float = 10.0,
) -> dict[str, Any]:
    """One closed-loop wrk run; returns req/s, error counts and latency percentiles in ms."""
    command = [
        *taskset_prefix(cpu),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={max(1, round(request_timeout_s))}s",
        "-s",
        str(LUA_SCRIPT),
        url,
    ]
    env = {**os.environ, "BENCH_BODIES": str(bodies), "BENCH_PATH": path}
    # CPU the load generator itself burns, so that a client sharing cores with the server is accounted for.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=duration_s + request_timeout_s + 30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (rc {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    raw = json.loads(line[len(MARKER) :])
    seconds = raw["duration_us"] / 1e6
    errors = raw["errors"]
    failed = errors["status"] + errors["timeout"] + errors["connect"] + errors["read"] + errors["write"]
    lat = raw["latency_us"]
    return {
        "tool": "wrk",
        "connections": connections,
        "duration_s": round(seconds, 3),
        "requests": raw["requests"],
        "errors": errors,
        "non_2xx": errors["status"],
        "rps": round(raw["requests"] / seconds, 1),
        "ok_rps": round(max(0, raw["requests"] - errors["status"] - errors["timeout"]) / seconds, 1),
        "failed": failed,
        "latency_ms": {k: _ms(lat[k]) for k in ("p50", "p75", "p90", "p95", "p99", "p999", "mean", "max")},
        "pinned_cpu": cpu,
        "client_cpu_share": round(client_cpu_s / seconds, 3) if seconds > 0 else None,
    }


# -- open loop ------------------------------------------------------------------------------------


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> int:
        """Send one request, read the whole response; returns the status code."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for raw in lines[1:]:
            name, _, value = raw.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            await self.reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        if headers.get(b"connection", b"").lower() == b"close":
            raise ConnectionResetError("server closed the connection")
        return status


async def open_loop(
    host: str,
    port: int,
    path: str,
    bodies: list[bytes],
    rate: float,
    duration_s: float,
    max_connections: int = 256,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    requests = [
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
        for body in bodies
    ]
    idle: deque[_Connection] = deque()
    slots = asyncio.Semaphore(max_connections)
    latencies: list[float] = []
    lags: list[float] = []
    statuses: dict[str, int] = {}
    failures: dict[str, int] = {}

    async def attempt(k: int, conn: _Connection | None) -> tuple[int, _Connection]:
        if conn is None:
            reader, writer = await asyncio.open_connection(host, port)
            conn = _Connection(reader, writer)
        try:
            return await asyncio.wait_for(conn.exchange(requests[k % len(requests)]), timeout_s), conn
        except BaseException:
            conn.writer.close()
            raise

    async def one(k: int, scheduled: float) -> None:
        async with slots:
            lags.append(loop.time() - scheduled)
            reused = idle.pop() if idle else None
            try:
                try:
                    status, conn = await attempt(k, reused)
                except (ConnectionError, asyncio.IncompleteReadError):
                    if reused is None:
                        raise
                    # The server closed an idle keep-alive connection (as any client, retry on a new one).
                    status, conn = await attempt(k, None)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, IndexError) as exc:
                failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                return
            latencies.append(loop.time() - scheduled)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            idle.append(conn)

    total = max(1, int(rate * duration_s))
    start = loop.time() + 0.05
    tasks = []
    for k in range(total):
        scheduled = start + k / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(k, scheduled)))
    sent_s = loop.time() - start
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    for conn in idle:
        conn.writer.close()
    lat = np.array(latencies) * 1000.0 if latencies else np.array([np.nan])
    lag = np.array(lags) * 1000.0 if lags else np.array([np.nan])
    ok = sum(v for s, v in statuses.items() if s.startswith("2"))
    return {
        "tool": "bench.loadgen open loop (asyncio, raw HTTP/1.1 keep-alive)",
        "offered_rps": round(rate, 1),
        "scheduled": total,
        "completed": len(latencies),
        "ok": ok,
        "failed": sum(failures.values()),
        "failure_kinds": failures,
        "statuses": statuses,
        "achieved_rps": round(len(latencies) / elapsed, 1),
        "send_window_s": round(sent_s, 3),
        "latency_ms": {f"p{q:g}": round(float(np.percentile(lat, q)), 3) for q in (50, 90, 95, 99, 99.9)}
        | {"mean": round(float(np.mean(lat)), 3), "max": round(float(np.max(lat)), 3)},
        "client_send_lag_ms_p99": round(float(np.percentile(lag, 99)), 3),
    }


def run_open_loop(
    url: str,
    bodies: Path,
    path: str,
    rate: float,
    duration_s: float,
    cpu: str | None = None,
    python: str = sys.executable,
) -> dict[str, Any]:
    """Runs the open-loop generator in its own (pinned) process and returns its JSON result."""
    command = [
        *taskset_prefix(cpu),
        python,
        "-m",
        "bench.loadgen",
        "openloop",
        "--url",
        url,
        "--bodies",
        str(bodies),
        "--path",
        path,
        "--rate",
        str(rate),
        "--duration",
        str(duration_s),
    ]
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60, cwd=repo)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"open-loop generator failed (rc {proc.returncode}): {proc.stderr.strip()[-800:]}")
    result = json.loads(line[len(MARKER) :])
    result["pinned_cpu"] = cpu
    return result


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ol = sub.add_parser("openloop", help="constant-rate open-loop load")
    ol.add_argument("--url", required=True, help="http://host:port")
    ol.add_argument("--bodies", type=Path, required=True, help="file with one JSON body per line")
    ol.add_argument("--path", default="/predict")
    ol.add_argument("--rate", type=float, required=True, help="requests per second")
    ol.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    args = parser.parse_args()
    hostport = args.url.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.partition(":")
    bodies = [ln for ln in args.bodies.read_bytes().splitlines() if ln.strip()]
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    started = time.perf_counter()
    result = asyncio.run(open_loop(host, int(port or 80), args.path, bodies, args.rate, args.duration))
    result["wall_s"] = round(time.perf_counter() - started, 3)
    print(MARKER + json.dumps(result), flush=True)


if __name__ == "__main__":
    _main()
