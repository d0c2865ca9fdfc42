"""How long one traced forward pass waits for Python's GIL beside a busy Python thread.

The server runs the forward pass on its own thread while the event loop keeps the GIL busy, so any
point inside the pass that needs the GIL costs up to one switch interval. This probe times a pass of
`--batch` example graphs alone and beside a thread that spins in Python, for the traced signature as
shipped (inputs handed back as outputs, `inference/tracing.py`) and for the same model traced the
plain way (inputs released inside the call). The difference between the two is the GIL the input
releases take; the shipped one should wait about once (on return).

    .venv/bin/python -m bench.gil_probe [--batch 8] [--switch-ms 1 5]
"""

from __future__ import annotations

import argparse
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.timing import median_ms
from hydrodiag.inference.collate import collate
from hydrodiag.inference.manager import ModelManager, example_graphs
from hydrodiag.inference.tracing import _arguments, _TensorSignature
from hydrodiag.settings import DEFAULT_MODEL_PATH


def _median_ms(call: Callable[[], Any], repeats: int) -> float:
    with torch.inference_mode():  # thread-local: entered on the thread that times the call
        return median_ms(call, repeats, warmup=5)


def _beside_busy_thread(call: Callable[[], Any], repeats: int) -> float:
    stop = threading.Event()

    def spin() -> None:
        count = 0
        while not stop.is_set():
            count += 1

    spinner = threading.Thread(target=spin, daemon=True)
    result: list[float] = []
    worker = threading.Thread(target=lambda: result.append(_median_ms(call, repeats)))
    spinner.start()
    worker.start()
    worker.join()
    stop.set()
    spinner.join()
    return result[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--switch-ms", type=float, nargs="+", default=[1.0, 5.0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    served = ModelManager(capacity=1).load_model(args.model, device="cpu", use_trace=False)
    model = served.module.eval()
    example = _arguments(collate(example_graphs(served.checkpoint, 2)))
    batch = _arguments(collate(example_graphs(served.checkpoint, args.batch)))
    signatures = {"shipped (inputs handed back)": _TensorSignature(model),
                  "plain (inputs released)": _TensorSignature(model, hand_back_inputs=False)}
    print(f"batch of {args.batch} example graphs, {args.repeats} passes each, median ms per pass")
    columns = " | ".join(f"beside a busy thread, switch {s:g} ms" for s in args.switch_ms)
    print(f"| signature | alone | {columns} |")
    print("|---|---|" + "---|" * len(args.switch_ms))
    for name, signature in signatures.items():
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(signature.eval(), example, check_trace=False)
        alone = _median_ms(lambda: traced(*batch), args.repeats)  # noqa: B023 (called before the loop moves on)
        beside = []
        for switch_ms in args.switch_ms:
            sys.setswitchinterval(switch_ms / 1000.0)
            beside.append(_beside_busy_thread(lambda: traced(*batch), args.repeats))  # noqa: B023
        print(f"| {name} | {alone:.2f} | " + " | ".join(f"{b:.2f}" for b in beside) + " |")


if __name__ == "__main__":
    main()
