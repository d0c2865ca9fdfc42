"""The CUDA path on a machine with a GPU; skipped elsewhere (CI has none), saying why.

What a GPU deployment relies on: DEVICE=auto picks the GPU; the model serves there as a trace, as
torch.compile or eagerly, from pinned host memory, with the CPU model's answers; the engine and the
real server (DEVICE=auto) answer from the GPU. Inputs are simulated excavator and press windows, so
these tests need no data set on the GPU host.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import torch
from conftest import engine_settings, start_server, stop_server

from hydrodiag.inference import InferenceEngine, ModelManager, PredictionRequest
from hydrodiag.inference.collate import collate, on_device
from hydrodiag.inference.manager import ServedModel, resolve_device
from hydrodiag.inference.postprocess import GraphOutput, split_output
from hydrodiag.inference.preprocess import InputLimits, Preprocessor
from hydrodiag.settings import Settings
from hydrodiag.topology import TopologyRegistry
from hydrodiag.training.simulator import simulate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here: these tests run on a GPU host")

# float32 kernels differ between CPU and GPU (and TF32 may be on): answers agree to this, not bit for bit.
TOLERANCE = 2e-3
WINDOWS_PER_MACHINE = 12


def simulated_bodies() -> list[dict[str, object]]:
    registry = TopologyRegistry()
    bodies = []
    for topology_id in ("excavator", "press"):
        batch = simulate(registry.get(topology_id), WINDOWS_PER_MACHINE, seed=3)
        for i in range(len(batch)):
            sensor_data = {name: batch.series[i, j].tolist() for j, name in enumerate(batch.sensor_names)}
            bodies.append({"equipment_id": f"{topology_id}-{i}", "topology_id": topology_id,
                           "sensor_data": sensor_data})
    return bodies


@pytest.fixture(scope="module")
def bodies() -> list[dict[str, object]]:
    return simulated_bodies()


def outputs_of(served: ServedModel, bodies: list[dict[str, object]], pin: bool) -> list[GraphOutput]:
    preprocessor = Preprocessor(TopologyRegistry(), InputLimits(100_000, 256))
    graphs = [preprocessor.prepare(PredictionRequest.model_validate(b), served.checkpoint).graph for b in bodies]
    batch = on_device(collate(graphs), served.device, pin_memory=pin)
    with torch.inference_mode():
        return split_output(served(batch), len(graphs), served.model_version)


def assert_same_answers(got: list[GraphOutput], want: list[GraphOutput]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert abs(g.system_health - w.system_health) < TOLERANCE
        np.testing.assert_allclose(g.component_health, w.component_health, atol=TOLERANCE)
        np.testing.assert_allclose(g.component_probabilities, w.component_probabilities, atol=TOLERANCE)
        np.testing.assert_allclose(g.system_probabilities, w.system_probabilities, atol=TOLERANCE)


@pytest.fixture(scope="module")
def cpu_answers(model_path: Path, bodies: list[dict[str, object]]) -> list[GraphOutput]:
    served = ModelManager(capacity=1).load_model(model_path, device="cpu", use_trace=False)
    return outputs_of(served, bodies, pin=False)


def test_auto_picks_the_first_gpu_and_loads_the_weights_there(model_path: Path) -> None:
    assert resolve_device("auto") == torch.device("cuda", 0)
    served = ModelManager(capacity=1).load_model(model_path)  # device="auto", the default
    assert served.device == torch.device("cuda", 0)
    assert {p.device for p in served.module.parameters()} == {torch.device("cuda", 0)}


# compile runs in the mode a deployment gets by default (USE_COMPILE=true: "reduce-overhead", CUDA graphs).
@pytest.mark.parametrize(("mode", "pin"), [("trace", True), ("trace", False), ("eager", True), ("compile", True)])
def test_the_gpu_model_gives_the_cpu_models_answers(
    model_path: Path, bodies: list[dict[str, object]], cpu_answers: list[GraphOutput], mode: str, pin: bool
) -> None:
    manager = ModelManager(capacity=1)
    compile_mode = Settings.model_fields["compile_mode"].default
    served = manager.load_model(model_path, device="cuda", use_trace=mode == "trace", use_compile=mode == "compile",
                                compile_mode=compile_mode)
    manager.warmup(model_path, batch_size=8)
    got = outputs_of(served, bodies, pin)
    assert served.traced == (mode == "trace") and served.trace_error is None and served.trace_failures == 0
    assert served.compiled == (mode == "compile") and served.compile_error is None
    assert_same_answers(got, cpu_answers)


async def test_the_engine_batches_on_the_gpu_from_pinned_memory(
    model_path: Path, bodies: list[dict[str, object]], cpu_answers: list[GraphOutput]
) -> None:
    engine = InferenceEngine(settings=engine_settings(model_path, device="auto", pin_memory=True),
                             manager=ModelManager(capacity=1))
    await engine.start()
    try:
        requests = [PredictionRequest.model_validate(b) for b in bodies]
        responses = await asyncio.gather(*(engine.predict(r) for r in requests))
        stats = engine.get_stats()
    finally:
        await engine.close()
    assert stats["model_device"] == "cuda:0"
    assert stats["batches"] < len(requests)  # simultaneous requests shared forward passes
    for response, want in zip(responses, cpu_answers, strict=True):
        assert abs(response.health.score - want.system_health) < TOLERANCE
        np.testing.assert_allclose([c.health for c in response.components], want.component_health, atol=TOLERANCE)


def test_the_server_with_device_auto_answers_from_the_gpu(
    model_path: Path, bodies: list[dict[str, object]], tmp_path: Path
) -> None:
    server = start_server(model_path, tmp_path / "server.log", DEVICE="auto")
    try:
        with httpx.Client(base_url=server.base_url, timeout=60.0) as client:
            stats = client.get("/stats").json()
            answer = client.post("/predict", content=orjson.dumps(bodies[0]),
                                 headers={"Content-Type": "application/json"})
    finally:
        stop_server(server)
    assert stats["model_device"] == "cuda:0", stats
    assert answer.status_code == 200, answer.text
    assert 0.0 <= answer.json()["health"]["score"] <= 1.0
