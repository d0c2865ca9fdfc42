"""The traced forward pass: the same answers as the eager model on any batch, or the eager model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hydrodiag.features.graph import build_graph, build_layout
from hydrodiag.inference import manager as manager_module
from hydrodiag.inference.collate import collate
from hydrodiag.inference.manager import ModelManager
from hydrodiag.topology.templates import load_templates


def _graphs(served: Any, names: list[str], seed: int) -> list[Any]:
    """Graphs of shipped topologies (one with a sensor missing: another layout), random readings."""
    checkpoint = served.checkpoint
    rng = np.random.default_rng(seed)
    templates = load_templates()
    graphs = []
    for name in names:
        topology = templates[name.removesuffix("-partial")]
        sensors = [sensor.name for sensor in topology.sensors]
        layout = build_layout(topology, sensors[:-1] if name.endswith("-partial") else sensors)
        mean, std = checkpoint.norm.arrays(layout.sensor_quantities)
        windows = mean[:, None] + std[:, None] * rng.standard_normal((len(mean), checkpoint.config.window))
        graphs.append(build_graph(layout, windows.astype(np.float32), checkpoint.norm))
    return graphs


def test_traced_model_answers_like_the_eager_one_on_batches_it_was_not_traced_on(model_path: Path) -> None:
    served = ModelManager(capacity=1).load_model(model_path, device="cpu")
    assert served.traced and served.trace_error is None and served.info()["traced"] is True
    batches = [
        ["excavator"],
        ["uci_test_rig", "crane", "press-partial", "uci_test_rig", "excavator"],
        ["uci_test_rig"] * 37,
        ["crane-partial", "press", "press", "excavator", "uci_test_rig-partial"] * 3,
    ]
    for seed, names in enumerate(batches):
        batch = collate(_graphs(served, names, seed))
        with torch.inference_mode():
            traced = served(batch)
            eager = served.module(batch.series, batch.stats, batch.node_kind, batch.node_type, batch.edge_index,
                                  batch.edge_attr, batch.batch, int(batch.num_graphs))
        assert traced.system_logits.shape == (len(names), eager.system_logits.shape[1])
        for key in ("component_health", "component_logits", "system_health", "system_logits"):
            torch.testing.assert_close(getattr(traced, key), getattr(eager, key), rtol=0, atol=1e-5)
        assert torch.equal(traced.component_batch, eager.component_batch)


def test_a_trace_that_fails_its_check_leaves_the_model_eager(model_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    def wrong(*_: Any) -> Any:
        raise RuntimeError("traced system_logits differs from the eager model on a batch of 3 graphs")

    monkeypatch.setattr(manager_module, "trace_model", wrong)
    manager = ModelManager(capacity=1)
    with caplog.at_level(logging.WARNING, logger="hydrodiag.inference.manager"):
        served = manager.load_model(model_path, device="cpu")
    assert not served.traced and "differs from the eager model" in (served.trace_error or "")
    assert any("serving the eager model" in r.getMessage() for r in caplog.records)
    assert manager.warmup(model_path, batch_size=3) > 0  # the eager model serves


def test_trace_is_an_option(model_path: Path) -> None:
    manager = ModelManager(capacity=2)
    eager = manager.load_model(model_path, device="cpu", use_trace=False)
    assert not eager.traced and eager.info()["traced"] is False
    traced = manager.load_model(model_path, device="cpu")
    assert traced is not eager and traced.traced  # another option is another cached model


def test_a_pass_the_trace_fails_runs_eagerly(model_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    served = ModelManager(capacity=1).load_model(model_path, device="cpu")
    batch = collate(_graphs(served, ["uci_test_rig", "crane"], 7))
    with torch.inference_mode():
        expected = served(batch)

    class Broken:
        def __call__(self, _: Any) -> Any:
            raise RuntimeError("The following operation failed in the TorchScript interpreter.")

    served._traced = Broken()  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, logger="hydrodiag.inference.manager"), torch.inference_mode():
        answered = served(batch)
    torch.testing.assert_close(answered.system_logits, expected.system_logits, rtol=0, atol=1e-5)
    assert served.trace_failures == 1 and served.info()["trace_failures"] == 1
    assert any("runs eagerly" in r.getMessage() for r in caplog.records)


def test_the_traced_call_hands_its_inputs_back(model_path: Path) -> None:
    """No input tensor is released inside the GIL-free call (releasing one there takes the GIL, which the
    busy event loop holds): the traced signature returns every input, the very same tensors, after the
    model's outputs."""
    from hydrodiag.inference.tracing import MODEL_OUTPUTS, _arguments

    served = ModelManager(capacity=1).load_model(model_path, device="cpu")
    assert served._traced is not None
    batch = collate(_graphs(served, ["uci_test_rig", "crane", "press-partial"], 3))
    arguments = _arguments(batch)
    with torch.inference_mode():
        returned = served._traced._module(*arguments)
    assert len(returned) == MODEL_OUTPUTS + len(arguments)
    assert all(back is given for back, given in zip(returned[MODEL_OUTPUTS:], arguments, strict=True))
