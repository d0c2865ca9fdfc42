"""Where one forward pass of the served model spends its time, and how close it is to this core's limit.

Three measurements on one torch thread, with the server's allocator setting (`MALLOC_KEEP_MB`):

- the served TorchScript trace at several batch sizes, alternating rounds with the same trace after
  `torch.jit.freeze` (constants folded; `--optimize` also runs `torch.jit.optimize_for_inference`),
  so that host drift hits both alike;
- the eager model under `torch.profiler` at one batch size: aten operator calls per pass and the
  share of time by operator, which shows how much of a pass is fixed per-operator cost;
- each Conv1d layer alone on the input it gets in that pass, in GFLOP/s (2 x multiply-adds), to
  compare with the core's fp32 peak (e.g. 2 FMA pipes x 8 lanes x 2 FLOP x clock on AVX2/Zen 4).

    .venv/bin/python -m bench.forward_probe [--batches 1 2 4 8 16 32] [--profile-batch 8] [--optimize]
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn

from bench.timing import median_ms
from hydrodiag.inference.collate import collate
from hydrodiag.inference.manager import ModelManager, ServedModel, example_graphs
from hydrodiag.inference.tracing import TracedModel
from hydrodiag.malloc import keep_freed_memory
from hydrodiag.settings import DEFAULT_MODEL_PATH, load_settings


def _frozen(served: ServedModel, optimize: bool) -> TracedModel:
    traced = served._traced
    if traced is None:
        raise SystemExit("the checkpoint did not trace; nothing to freeze")
    module = torch.jit.freeze(traced._module.eval())
    if optimize:
        module = torch.jit.optimize_for_inference(module)
    return TracedModel(module)


def compare_trace(served: ServedModel, batches: list[int], rounds: int, optimize: bool) -> dict[str, Any]:
    frozen = _frozen(served, optimize)
    arms: dict[str, Callable[[Any], Any]] = {"trace": served, "frozen trace": frozen}
    times: dict[str, dict[int, list[float]]] = {arm: {b: [] for b in batches} for arm in arms}
    graphs = example_graphs(served.checkpoint, max(batches))
    with torch.inference_mode():
        for _ in range(rounds):
            for b in batches:
                batch = collate(graphs[:b])
                for arm, call in arms.items():
                    times[arm][b].append(median_ms(partial(call, batch), max(20, 400 // b)))
    return {arm: {b: statistics.median(v) for b, v in by_batch.items()} for arm, by_batch in times.items()}


def profile_ops(served: ServedModel, batch_size: int, passes: int) -> dict[str, Any]:
    batch = collate(example_graphs(served.checkpoint, batch_size))
    with torch.inference_mode():
        for _ in range(10):
            served.module.forward_batch(batch)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(passes):
                served.module.forward_batch(batch)
    calls: Counter[str] = Counter()
    self_us: Counter[str] = Counter()
    for event in prof.key_averages():
        calls[event.key] += event.count
        self_us[event.key] += event.self_cpu_time_total
    total = sum(self_us.values()) or 1.0
    return {
        "batch": batch_size,
        "aten_calls_per_pass": sum(n for k, n in calls.items() if k.startswith("aten::")) / passes,
        "share_by_op": {k: round(v / total, 3) for k, v in self_us.most_common(8)},
    }


def conv_throughput(served: ServedModel, batch_size: int) -> list[dict[str, Any]]:
    inputs: dict[str, torch.Tensor] = {}
    convs = {name: m for name, m in served.module.named_modules() if isinstance(m, nn.Conv1d)}
    hooks = [m.register_forward_hook(lambda mod, args, out, n=name: inputs.__setitem__(n, args[0]))
             for name, m in convs.items()]
    batch = collate(example_graphs(served.checkpoint, batch_size))
    with torch.inference_mode():
        served.module.forward_batch(batch)
        for hook in hooks:
            hook.remove()
        rows = []
        for name, conv in convs.items():
            x = inputs[name]
            out = conv(x)
            flops = 2 * out.numel() * (conv.in_channels // conv.groups) * conv.kernel_size[0]
            ms = median_ms(partial(conv, x), 200)
            rows.append({"layer": name, "input": tuple(x.shape), "mflop": round(flops / 1e6, 1),
                         "ms": round(ms, 3), "gflop_s": round(flops / ms / 1e6, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default=str(DEFAULT_MODEL_PATH))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--profile-batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--optimize", action="store_true", help="also torch.jit.optimize_for_inference")
    args = parser.parse_args()
    keep_freed_memory(load_settings().malloc_keep_mb)
    torch.set_num_threads(1)
    served = ModelManager(capacity=1).load_model(args.model_path, device="cpu")

    print(f"forward pass, ms (median of {args.rounds} alternating rounds, one thread):")
    result = compare_trace(served, args.batches, args.rounds, args.optimize)
    print(f"  {'batch':>12} " + " ".join(f"{b:>7}" for b in args.batches))
    for arm, by_batch in result.items():
        print(f"  {arm:>12} " + " ".join(f"{by_batch[b]:7.2f}" for b in args.batches))
    ops = profile_ops(served, args.profile_batch, passes=50)
    print(f"eager pass at batch {ops['batch']}: {ops['aten_calls_per_pass']:.0f} aten operator calls; "
          "self time by operator: " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in ops["share_by_op"].items()))
    print(f"Conv1d layers alone at batch {args.profile_batch}:")
    for row in conv_throughput(served, args.profile_batch):
        print(f"  {row['layer']}: input {row['input']}, {row['mflop']} MFLOP in {row['ms']} ms = "
              f"{row['gflop_s']} GFLOP/s")


if __name__ == "__main__":
    main()
