"""Would ONNX Runtime run hydrodiag's model faster than the TorchScript trace it serves with?

Exports the default checkpoint's model with `torch.onnx.export` (the dynamo exporter, dynamic batch
size), checks the ONNX Runtime outputs against the served model, and times one pass of each at
several batch sizes on one thread, and what an ONNX Runtime session adds to the resident memory
of a process that already holds the served model (torch stays: the server builds graphs with it).
ONNX Runtime is not a dependency of hydrodiag; install it into the environment first:

    .venv/bin/pip install onnxruntime onnxscript
    .venv/bin/python -m bench.onnx_probe [--batches 1 4 8 32]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bench.timing import median_ms
from hydrodiag.inference.collate import collate
from hydrodiag.inference.manager import ModelManager, example_graphs
from hydrodiag.inference.tracing import MODEL_OUTPUTS, _arguments, _TensorSignature
from hydrodiag.settings import DEFAULT_MODEL_PATH

INPUTS = ("series", "stats", "node_kind", "node_type", "edge_index", "edge_attr", "batch", "graph_ids")
DYNAMIC_AXES = {"series": {0: "nodes"}, "stats": {0: "nodes"}, "node_kind": {0: "nodes"}, "node_type": {0: "nodes"},
                "edge_index": {1: "edges"}, "edge_attr": {0: "edges"}, "batch": {0: "nodes"},
                "graph_ids": {0: "graphs"}}


# Run in a fresh process: the exporter (onnxscript, torch.export) must not be counted.
_MEMORY_PROBE = """
import sys, psutil, torch
from hydrodiag.inference.manager import ModelManager
torch.set_num_threads(1)
ModelManager(capacity=1).load_model(sys.argv[2], device="cpu")
before = psutil.Process().memory_info().rss
import onnxruntime as ort
options = ort.SessionOptions()
options.intra_op_num_threads = options.inter_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
print(before / 2**20, psutil.Process().memory_info().rss / 2**20)
"""


def _session_memory_mb(onnx_path: Path, model_path: Path) -> tuple[float, float]:
    """RSS (MiB) of a process holding the served model, before and after it opens an ONNX Runtime session."""
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(onnx_path), str(model_path)],
                         capture_output=True, text=True, check=True, timeout=300).stdout.split()
    return float(out[-2]), float(out[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 32])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    try:
        import onnxruntime as ort
    except ImportError:
        raise SystemExit("onnxruntime is not installed: .venv/bin/pip install onnxruntime onnxscript") from None
    torch.set_num_threads(1)
    served = ModelManager(capacity=1).load_model(args.model, device="cpu")
    # The plain signature: an ONNX graph cannot name an output after an input, and ONNX Runtime takes
    # no GIL inside its run anyway.
    signature = _TensorSignature(served.module.eval(), hand_back_inputs=False).eval()
    example = _arguments(collate(example_graphs(served.checkpoint, 2)))
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "model.onnx"
        started = time.perf_counter()
        torch.onnx.export(signature, example, str(path), input_names=list(INPUTS), dynamic_axes=DYNAMIC_AXES,
                          dynamo=True)
        export_s = time.perf_counter() - started
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        rss_before, rss_after = _session_memory_mb(path, args.model)
    print(f"export {export_s:.1f} s (torch.onnx.export, dynamo); onnxruntime {ort.__version__}, one thread")
    print(f"resident memory of a process holding the served model: {rss_before:.0f} MiB; with an ONNX Runtime "
          f"session of it as well: {rss_after:.0f} MiB (+{rss_after - rss_before:.0f} MiB)")
    print("| batch | traced ms | onnxruntime ms | speed-up | largest difference |")
    print("|---|---|---|---|---|")
    names = [i.name for i in session.get_inputs()]
    for size in args.batches:
        batch = collate(example_graphs(served.checkpoint, size))
        tensors = dict(zip(INPUTS, _arguments(batch), strict=True))
        feed = {name: tensors[name].numpy() for name in names}
        with torch.inference_mode():
            expected = served(batch)
            traced_ms = median_ms(lambda: served(batch), args.repeats)  # noqa: B023
        onnx_ms = median_ms(lambda: session.run(None, feed), args.repeats)  # noqa: B023
        outputs = session.run(None, feed)[:MODEL_OUTPUTS]
        difference = max(float(np.abs(outputs[0] - expected.component_health.numpy()).max()),
                         float(np.abs(outputs[3] - expected.system_logits.numpy()).max()))
        print(f"| {size} | {traced_ms:.2f} | {onnx_ms:.2f} | {traced_ms / onnx_ms:.2f}x | {difference:.1e} |")


if __name__ == "__main__":
    main()
