"""The forward pass as a TorchScript trace, so that it runs without Python's GIL.

Eager PyTorch needs the GIL between every one of the model's few hundred operations. The server's
event loop holds the GIL almost all the time under load, so an eager forward pass on the batcher's
thread waits for it at every operation: measured on 2 cores, a batch of 16 took 5 ms alone and
940 ms beside a busy Python thread. A traced module runs the whole pass in the TorchScript
interpreter, which releases the GIL for the call, so the event loop and the model really use one
core each.

One more thing takes the GIL inside that call: a tensor made in Python (every input is) is released
by the interpreter after its last use, and when that leaves Python the only owner, PyTorch hands the
ownership back to its Python object -- which needs the GIL (`c10::TensorImpl::decref_pyobject`). With
8 inputs that was 8 waits of up to a switch interval each, per pass. The traced signature therefore
returns its inputs as well: they stay on the interpreter's stack until the call is back in Python
(GIL held), leaving the one wait for the GIL on return. `python -m bench.gil_probe` measures both on
this machine; on 2 cores, a batch of 8 took 6.9 ms alone, and beside a busy Python thread 48.9 ms
with the inputs released inside the call against 12.4 ms handed back (5 ms switch interval), 14.8
against 8.1 ms at the server's 1 ms.

A trace records the operations one example took. Everything this model does is a tensor operation
whose shapes follow the inputs, except the number of graphs, which the model takes as a Python
int; the traced module therefore takes a tensor of that length (`graph_ids`) and passes its size,
which the tracer keeps symbolic. Every trace is checked against the eager model on a batch of
another size and another machine layout before it is used; any difference, or any tracing error,
leaves the model eager (with a warning), never unserved.
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hydrodiag.model.gnn import ModelOutput, UniversalTemporalGNN

logger = logging.getLogger(__name__)

# warnings.catch_warnings swaps the process-wide filter list: two models traced at once (two
# checkpoints loaded from two threads) would restore each other's filters mid-trace and let the
# tracer's warnings through. Tracing happens at load time only, so one at a time costs nothing.
_TRACING = threading.Lock()

# Largest absolute difference between traced and eager outputs accepted at load (float32 noise).
TRACE_TOLERANCE = 1e-4


# Outputs in the traced signature's tuple: the model's five, then the two probability tensors; the
# inputs follow them (see the module docstring).
MODEL_OUTPUTS = 7


@dataclass
class ScoredOutput(ModelOutput):
    """A traced pass's output: the model's, plus the sigmoid of both logits, computed inside the
    GIL-free call. Otherwise the event loop computes them while it splits the pass, and every torch
    call from Python there lets the GIL go to whichever thread waits for it (the forward thread
    starting the next pass, the history writer) and must then win it back."""

    component_probabilities: Tensor  # [num_component_nodes, num_anomalies]
    system_probabilities: Tensor  # [num_graphs, num_anomalies]


class _TensorSignature(nn.Module):
    """The model with only tensor inputs and a tuple output, which is what a trace can record; the
    inputs come back after the model's outputs, so that none is released inside the GIL-free call.
    (`hand_back_inputs=False` only for comparisons: bench/gil_probe.py, bench/onnx_probe.py.)"""

    def __init__(self, model: UniversalTemporalGNN, hand_back_inputs: bool = True) -> None:
        super().__init__()
        self.model = model
        self.hand_back_inputs = hand_back_inputs

    def forward(self, series: Tensor, stats: Tensor, node_kind: Tensor, node_type: Tensor, edge_index: Tensor,
                edge_attr: Tensor, batch: Tensor, graph_ids: Tensor) -> tuple[Tensor, ...]:
        out = self.model(series, stats, node_kind, node_type, edge_index, edge_attr, batch, graph_ids.size(0))
        outputs = (out.component_health, out.component_logits, out.system_health, out.system_logits,
                   out.component_batch, torch.sigmoid(out.component_logits), torch.sigmoid(out.system_logits))
        if not self.hand_back_inputs:
            return outputs
        return (*outputs, series, stats, node_kind, node_type, edge_index, edge_attr, batch, graph_ids)


def _arguments(batch: Any, graph_ids: Tensor | None = None) -> tuple[Tensor, ...]:
    if graph_ids is None:
        graph_ids = torch.arange(int(batch.num_graphs), device=batch.series.device)
    return (batch.series, batch.stats, batch.node_kind, batch.node_type, batch.edge_index, batch.edge_attr,
            batch.batch, graph_ids)


class TracedModel:
    """Callable like `ServedModel` expects: a batch in, a `ModelOutput` out."""

    def __init__(self, module: torch.jit.ScriptModule) -> None:
        self._module = module
        # `graph_ids` per (number of graphs, device), made once: on the worker thread every torch call
        # waits for the GIL, so a pass makes none besides the traced call. As many as batch sizes seen.
        self._graph_ids: dict[tuple[int, torch.device], Tensor] = {}

    def __call__(self, batch: Any) -> ScoredOutput:
        key = (int(batch.num_graphs), batch.series.device)
        graph_ids = self._graph_ids.get(key)
        if graph_ids is None:
            graph_ids = self._graph_ids[key] = torch.arange(key[0], device=key[1])
        (component_health, component_logits, system_health, system_logits, component_batch, component_probabilities,
         system_probabilities) = self._module(*_arguments(batch, graph_ids))[:MODEL_OUTPUTS]
        return ScoredOutput(component_health=component_health, component_logits=component_logits,
                            system_health=system_health, system_logits=system_logits, component_batch=component_batch,
                            component_probabilities=component_probabilities,
                            system_probabilities=system_probabilities)


def trace_model(model: UniversalTemporalGNN, example: Any, check: Any) -> TracedModel:
    """Trace `model` on the batch `example`; verify on `check` (another size and layout).

    Raises RuntimeError when the traced outputs differ from the eager ones on `check`."""
    signature = _TensorSignature(model).eval()
    with _TRACING, torch.no_grad(), warnings.catch_warnings():
        # The tracer warns that torch.jit is deprecated and that two of PyG's shape assertions are
        # recorded as constants; the check below is what decides whether the trace is right.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(signature, _arguments(example), check_trace=False)
    candidate = TracedModel(traced)
    with torch.inference_mode():
        for batch in (check, example):
            expected = model(*_arguments(batch)[:-1], int(batch.num_graphs))
            actual = candidate(batch)
            for name in ("component_health", "component_logits", "system_health", "system_logits"):
                a, b = getattr(actual, name), getattr(expected, name)
                if a.shape != b.shape or float((a - b).abs().max()) > TRACE_TOLERANCE:
                    raise RuntimeError(f"traced {name} differs from the eager model on a batch of "
                                       f"{int(batch.num_graphs)} graphs")
            if not torch.equal(actual.component_batch, expected.component_batch):
                raise RuntimeError("traced component_batch differs from the eager model")
            for name, logits in (("component_probabilities", expected.component_logits),
                                 ("system_probabilities", expected.system_logits)):
                a, b = getattr(actual, name), torch.sigmoid(logits)
                if a.shape != b.shape or float((a - b).abs().max()) > TRACE_TOLERANCE:
                    raise RuntimeError(f"traced {name} differs from the eager model's sigmoid")
    return candidate
