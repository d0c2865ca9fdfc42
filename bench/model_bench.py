"""Model-only benchmark: load, warmup, and the engine's request -> graph -> batch -> forward -> split path.

Runs in its own process (`python -m bench.model_bench ...`), so load time includes nothing cached
by an earlier load in the same interpreter. The path timed is the one `InferenceEngine` runs for a
batch (hydrodiag/inference/engine.py `_prepare` + `_run_pass`), rebuilt from its public parts:
`Preprocessor.prepare` per request, `inference.collate.collate`, `ServedModel.__call__` under
`torch.inference_mode`, `split_output`. Request parsing (pydantic) is timed as its own stage.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hydrodiag.malloc import keep_freed_memory
from hydrodiag.settings import load_settings

MARKER = "BENCH_JSON "


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def load_and_warmup(
    model_path: Path, warmup_batch: int, device: str = "cpu", use_compile: bool = False
) -> tuple[dict[str, Any], Any]:
    """Times ModelManager.load_model and ModelManager.warmup on a fresh manager."""
    from hydrodiag.inference import ModelManager

    manager = ModelManager(capacity=1)
    load_s, served = _timed(lambda: manager.load_model(model_path, device=device, use_compile=use_compile))
    warmup_s = manager.warmup(model_path, batch_size=warmup_batch)
    info = {
        "api": f"ModelManager.load_model(device={device!r}, use_compile={use_compile}) / "
               f"warmup(batch_size={warmup_batch})",
        "device": str(served.device),
        "traced": served.traced,
        "compiled": served.compiled,
        "load_s": round(load_s, 4),
        "warmup_s": round(warmup_s, 4),
        "num_parameters": served.num_parameters(),
        "model_version": served.model_version,
    }
    return info, served


class Pipeline:
    """Request dicts -> per-graph outputs, in the stages InferenceEngine runs."""

    kind = (
        "PredictionRequest.model_validate + Preprocessor.prepare + collate (hydrodiag.inference.collate) + "
        "ServedModel(batch) under inference_mode + split_output"
    )

    def __init__(self, served: Any) -> None:
        from hydrodiag.inference.collate import collate, on_device
        from hydrodiag.inference.postprocess import split_output
        from hydrodiag.inference.preprocess import InputLimits, Preprocessor
        from hydrodiag.inference.schemas import PredictionRequest
        from hydrodiag.topology.templates import TopologyRegistry

        self.served = served
        self.preprocessor = Preprocessor(TopologyRegistry(), InputLimits(100_000, 256))
        self.request_cls = PredictionRequest
        self.split = split_output
        self.collate = collate
        self.on_device = on_device

    def parse(self, bodies: list[dict[str, Any]]) -> list[Any]:
        return [self.request_cls.model_validate(b) for b in bodies]

    def prepare(self, requests: list[Any]) -> list[Any]:
        return [self.preprocessor.prepare(r, self.served.checkpoint).graph for r in requests]

    def run(self, graphs: list[Any]) -> dict[str, float]:
        on_gpu = self.served.device.type == "cuda"
        t0 = time.perf_counter()
        batch = self.on_device(self.collate(graphs), self.served.device, pin_memory=True)  # as the engine does
        t1 = time.perf_counter()
        with torch.inference_mode():
            output = self.served(batch)
            if on_gpu:  # kernels run asynchronously: the forward pass ends when the device is done
                torch.cuda.synchronize(self.served.device)
            t2 = time.perf_counter()
            self.split(output, len(graphs), self.served.model_version)
        t3 = time.perf_counter()
        return {"collate": t1 - t0, "forward": t2 - t1, "split": t3 - t2}


def bench_batch(
    pipeline: Pipeline, body: dict[str, Any], size: int, min_time_s: float, min_reps: int
) -> dict[str, Any]:
    bodies = [{**body, "equipment_id": f"model-bench-{i}"} for i in range(size)]
    stages: dict[str, list[float]] = {"parse": [], "prepare": [], "collate": [], "forward": [], "split": []}
    totals: list[float] = []
    started = time.perf_counter()
    reps = 0
    while reps < min_reps or time.perf_counter() - started < min_time_s:
        t0 = time.perf_counter()
        requests = pipeline.parse(bodies)
        t1 = time.perf_counter()
        graphs = pipeline.prepare(requests)
        t2 = time.perf_counter()
        timings = pipeline.run(graphs)
        total = time.perf_counter() - t0
        stages["parse"].append(t1 - t0)
        stages["prepare"].append(t2 - t1)
        for key, value in timings.items():
            stages[key].append(value)
        totals.append(total)
        reps += 1
        if time.perf_counter() - started > 3 * min_time_s + 2:  # a slow or busy machine still ends in time
            break
    elapsed = sum(totals)
    p50 = statistics.median(totals)
    return {
        "batch_size": size,
        "reps": reps,
        "latency_ms_p50": round(p50 * 1000, 3),
        "latency_ms_p90": round(float(np.percentile(totals, 90)) * 1000, 3),
        "forward_ms_p50": round(statistics.median(stages["forward"]) * 1000, 3),
        "stages_ms_p50": {k: round(statistics.median(v) * 1000, 3) for k, v in stages.items()},
        "samples_per_s": round(size * reps / elapsed, 1),
        "forward_samples_per_s": round(size / statistics.median(stages["forward"]), 1),
    }


def run(
    model_path: Path,
    bodies: dict[str, dict[str, Any]],
    batch_sizes: list[int],
    threads: list[int],
    min_time_s: float,
    warmup_batch: int,
    device: str = "cpu",
    use_compile: bool = False,
) -> dict[str, Any]:
    torch.set_num_threads(min(threads))  # like the server: one core for the model
    load, served = load_and_warmup(model_path, warmup_batch, device, use_compile)
    pipeline = Pipeline(served)
    results: dict[str, Any] = {"load": load, "path": pipeline.kind, "runs": []}
    first = next(iter(bodies))
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        for name, body in bodies.items():
            # Thread counts other than the first: primary payload, smallest and a middle batch size
            # only (they show the threading effect; all sizes would double the run time).
            sizes = batch_sizes if n_threads == threads[0] else [batch_sizes[0], batch_sizes[len(batch_sizes) // 2]]
            if n_threads != threads[0] and name != first:
                continue
            bench_batch(pipeline, body, 32, min_time_s / 4, 1)  # settle allocator / caches
            for size in sizes:
                row = bench_batch(pipeline, body, size, min_time_s, 3)
                results["runs"].append({"payload": name, "torch_threads": n_threads, **row})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="hydrodiag model-only benchmark")
    parser.add_argument("--model-path", type=Path, required=True)
    parser.add_argument(
        "--bodies",
        type=Path,
        nargs="+",
        required=True,
        help="files with one request body per line (first line used); name = file stem",
    )
    parser.add_argument("--batch-sizes", default="1,8,32,128")
    parser.add_argument("--threads", default="1", help="torch intra-op thread counts to run, e.g. 1,2")
    parser.add_argument("--min-time", type=float, default=1.5, help="seconds per batch size")
    parser.add_argument("--warmup-batch", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (make bench measures cpu)")
    parser.add_argument("--compile", action="store_true", help="serve with torch.compile instead of the trace")
    parser.add_argument("--malloc-keep-mb", type=int, default=None,
                        help="as the server's MALLOC_KEEP_MB (default: the server's setting; 0 = glibc's defaults)")
    args = parser.parse_args()
    keep_mb = load_settings().malloc_keep_mb if args.malloc_keep_mb is None else args.malloc_keep_mb
    keep_freed_memory(keep_mb)  # the allocator as a serving process has it (api/server.py)
    bodies = {}
    for path in args.bodies:
        with path.open() as handle:
            bodies[path.name.split(".")[0]] = json.loads(handle.readline())
    result = run(
        args.model_path,
        bodies,
        [int(b) for b in args.batch_sizes.split(",")],
        [int(t) for t in args.threads.split(",")],
        args.min_time,
        args.warmup_batch,
        args.device,
        args.compile,
    )
    result["torch"] = torch.__version__
    result["malloc_keep_mb"] = keep_mb
    print(MARKER + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
