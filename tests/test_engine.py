"""InferenceEngine with the real model: batching, queue limits, topologies, trend, swap, stats."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import UciCycles, engine_settings

from hydrodiag.errors import EngineClosedError, InvalidInputError, ModelNotLoadedError, QueueFullError
from hydrodiag.inference import InferenceConfig, InferenceEngine, ModelManager, PredictionRequest
from hydrodiag.topology import TopologyRegistry


def make_engine(model_path: Path, manager: ModelManager, **overrides: Any) -> InferenceEngine:
    settings_keys = {"batch_size", "max_queue_size", "max_wait_ms", "use_dynamic_batching"}
    settings = engine_settings(model_path, **{k: v for k, v in overrides.items() if k in settings_keys})
    extra = {k: v for k, v in overrides.items() if k not in settings_keys}
    return InferenceEngine(settings=settings, manager=manager, **extra)


@pytest.fixture
async def engine(model_path: Path, manager: ModelManager) -> AsyncIterator[InferenceEngine]:
    running = make_engine(model_path, manager)
    await running.start()
    yield running
    await running.close()


def rig_request(
    uci: UciCycles, label: str = "nominal", equipment_id: str = "rig-1", **extra: Any
) -> PredictionRequest:
    return PredictionRequest.model_validate(uci.request(label, equipment_id, **extra))


async def test_config_and_stats_keys(engine: InferenceEngine, uci: UciCycles) -> None:
    await engine.predict(rig_request(uci))
    stats = engine.get_stats()
    spec_keys = {"model_path", "device", "batch_size", "model_device", "model_parameters", "queue_size",
                 "processing"}
    assert spec_keys <= set(stats)
    assert stats["requests"] == 1 and stats["batches"] == 1 and stats["mean_batch_size"] == 1.0
    assert stats["latency_ms"]["count"] == 1 and stats["latency_ms"]["p99"] is not None
    assert stats["model_version"] and stats["model_loaded"] is True
    assert isinstance(stats["model_metrics"], dict)
    config = InferenceConfig(model_path="x.ckpt", batch_size=8)
    assert config.model_path == Path("x.ckpt") and config.max_wait_ms >= 0
    with pytest.raises(ValueError):
        InferenceConfig(batch_size=0)


async def test_simultaneous_predictions_share_forward_passes(engine: InferenceEngine, uci: UciCycles) -> None:
    requests = [rig_request(uci, equipment_id=f"eq-{i}") for i in range(64)]
    responses = await asyncio.gather(*(engine.predict(r) for r in requests))
    assert [r.equipment_id for r in responses] == [f"eq-{i}" for i in range(64)]
    stats = engine.get_stats()
    # The first request finds the model idle and goes at once, alone; the other 63, queued while it
    # computes, follow in passes of half the queue (PIPELINE_MIN_BATCH 8) at most batch_size 32:
    # 32, then 16 of the remaining 31, 8 of 15, the last 7.
    assert stats["requests"] == 64 and stats["batches"] == 5 and stats["max_batch_size_seen"] == 32


async def test_batched_and_single_results_agree(engine: InferenceEngine, uci: UciCycles) -> None:
    single = await engine.predict(rig_request(uci, "cooler_failing", "a"))
    batch = await engine.predict_batch(
        [rig_request(uci, "nominal", "b"), rig_request(uci, "cooler_failing", "c")]
    )
    assert batch.total_count == 2
    assert batch.predictions[1].health.score == pytest.approx(single.health.score, abs=1e-4)
    for mine, theirs in zip(batch.predictions[1].components, single.components, strict=True):
        assert mine.id == theirs.id and mine.health == pytest.approx(theirs.health, abs=1e-4)


async def test_idle_request_does_not_wait_for_max_wait(model_path: Path, manager: ModelManager,
                                                       uci: UciCycles) -> None:
    engine = make_engine(model_path, manager, max_wait_ms=10_000.0)
    await engine.start()
    try:
        # A request that waited for max_wait_ms would need 10 s; far less proves it went at once.
        await asyncio.wait_for(engine.predict(rig_request(uci)), timeout=8.0)
    finally:
        await engine.close()


async def test_full_queue_rejects_at_once(model_path: Path, manager: ModelManager, uci: UciCycles) -> None:
    engine = make_engine(model_path, manager, max_queue_size=1, batch_size=1)
    await engine.start()
    try:
        calls = [engine.predict(rig_request(uci, equipment_id=f"q{i}")) for i in range(20)]
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await engine.close()
    rejected = [r for r in results if isinstance(r, QueueFullError)]
    served = [r for r in results if not isinstance(r, BaseException)]
    assert len(rejected) + len(served) == 20 and rejected and served
    assert all(error.retry_after_s >= 1 and error.max_queue_size == 1 for error in rejected)
    assert engine.get_stats()["rejected_queue_full"] == len(rejected)


async def test_without_dynamic_batching_each_request_is_its_own_pass(
    model_path: Path, manager: ModelManager, uci: UciCycles
) -> None:
    engine = make_engine(model_path, manager, use_dynamic_batching=False)
    await engine.start()
    try:
        await asyncio.gather(*(engine.predict(rig_request(uci, equipment_id=f"s{i}")) for i in range(6)))
        assert engine.get_stats()["batches"] == 6
        await engine.predict_batch([rig_request(uci, equipment_id=f"t{i}") for i in range(6)])
        assert engine.get_stats()["batches"] == 7  # an explicit batch is still one pass
    finally:
        await engine.close()


async def test_batch_errors_name_the_item(engine: InferenceEngine, uci: UciCycles) -> None:
    items = [rig_request(uci, equipment_id=f"i{i}") for i in range(4)]
    items[3] = PredictionRequest(equipment_id="bad", sensor_data={"PS1": [1.0]}, topology_id="uci_test_rig")
    with pytest.raises(InvalidInputError) as caught:
        await engine.predict_batch(items)
    assert caught.value.field == "requests[3].sensor_data.PS1"
    too_many = [rig_request(uci, equipment_id=f"m{i}") for i in range(17)]
    with pytest.raises(InvalidInputError, match="limit is 16"):
        await engine.predict_batch(too_many)


async def test_topology_resolution_order(engine: InferenceEngine, uci: UciCycles) -> None:
    sensors = {"pressure_pump_a": [1.0, 2.0, 3.0], "temperature_cooler_b": [40.0, 41.0, 42.0]}
    inferred = await engine.predict(PredictionRequest(equipment_id="inf", sensor_data=sensors))
    assert inferred.topology_id == "inferred"
    assert {(c.id, c.type) for c in inferred.components} == {("pump_a", "pump"), ("cooler_b", "cooler")}

    # An inline topology may reuse a registered id; its own contents must be used, not the template's.
    rig = TopologyRegistry().get("uci_test_rig")
    small = rig.model_copy(update={"components": rig.components[:3], "edges": [], "sensors": []})
    named_sensors = {f"pressure_{c.id}": [1.0, 2.0] for c in small.components}
    inline_request = PredictionRequest(equipment_id="inl", sensor_data=named_sensors, topology=small)
    inline = await engine.predict(inline_request)
    assert inline.topology_id == "uci_test_rig" and len(inline.components) == 3

    no_topology = PredictionRequest(equipment_id="def", sensor_data=uci.sensor_data("nominal"))
    default = await engine.predict(no_topology, topology=rig)
    assert default.topology_id == "uci_test_rig" and len(default.components) == len(rig.components)
    explicit = await engine.predict(rig_request(uci), topology=small)  # the request's topology_id wins
    assert len(explicit.components) == len(rig.components)


async def test_trend_needs_history_then_reports_a_rate(engine: InferenceEngine, uci: UciCycles) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    labels = ["nominal", "cooler_reduced", "cooler_failing"]
    responses = []
    for step, label in enumerate(labels):
        timestamp = (start + timedelta(hours=5 * step)).isoformat()
        request = rig_request(uci, label, "trend-eq", timestamp=timestamp)
        responses.append(await engine.predict(request))
    assert responses[0].degradation.rate is None
    assert responses[0].degradation.message == "insufficient history: 1 of 3 points"
    last = responses[-1].degradation
    assert last.rate is not None and last.points_used == 3 and last.span_hours == pytest.approx(10.0)
    points = [(start + timedelta(hours=5 * i), r.health.score) for i, r in enumerate(responses)]
    # The rate is the least-squares slope of the scores the engine itself reported.
    mean_t = sum((t - start).total_seconds() / 3600 for t, _ in points) / 3
    mean_h = sum(h for _, h in points) / 3
    slope = sum(((t - start).total_seconds() / 3600 - mean_t) * (h - mean_h) for t, h in points) / sum(
        ((t - start).total_seconds() / 3600 - mean_t) ** 2 for t, _ in points)
    assert last.rate == pytest.approx(-slope, abs=1e-5)
    other = await engine.predict(rig_request(uci, "nominal", "another-eq"))
    assert other.degradation.points_used == 1  # history is per equipment


async def test_swap_model_serves_the_new_checkpoint(engine: InferenceEngine, uci: UciCycles,
                                                    model_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "candidate.ckpt"
    shutil.copyfile(model_path, copy)
    before = await engine.predict(rig_request(uci, equipment_id="swap"))
    info = await engine.swap_model(copy)
    assert info["path"] == str(copy.resolve()) and info["warmup_time_s"] is not None
    assert engine.get_stats()["model_path"] == str(copy.resolve())
    after = await engine.predict(rig_request(uci, equipment_id="swap"))
    assert after.health.score == pytest.approx(before.health.score, abs=1e-4)  # same weights


async def test_lifecycle_errors(model_path: Path, manager: ModelManager, uci: UciCycles) -> None:
    lazy = make_engine(model_path, manager)  # auto_start: the first prediction loads the model
    assert not lazy.is_loaded
    assert (await lazy.predict(rig_request(uci))).model_version
    await lazy.close()
    with pytest.raises(EngineClosedError):
        await lazy.predict(rig_request(uci))

    strict = make_engine(model_path, manager, auto_start=False)
    with pytest.raises(ModelNotLoadedError):
        await strict.predict(rig_request(uci))
    assert strict.get_stats()["model_loaded"] is False
    await strict.close()


def test_collate_matches_torch_geometric_on_mixed_topologies(model_path: Path) -> None:
    import numpy as np
    import torch
    from torch_geometric.data import Batch

    from hydrodiag.features.graph import build_layout, encode_graph
    from hydrodiag.inference.collate import GraphBatch, collate
    from hydrodiag.model.checkpoint import load_checkpoint
    from hydrodiag.topology.templates import load_templates

    checkpoint = load_checkpoint(model_path, device=torch.device("cpu"))
    rng = np.random.default_rng(0)
    layouts = {}
    for name, topology in sorted(load_templates().items()):
        names = [sensor.name for sensor in topology.sensors]
        layouts[name] = build_layout(topology, names[: max(1, len(names) - 1)] if name == "press" else names)

    def graph(name: str) -> Any:
        layout = layouts[name]
        mean, std = checkpoint.norm.arrays(layout.sensor_quantities)
        windows = mean[:, None] + std[:, None] * rng.standard_normal((len(mean), checkpoint.config.window))
        return encode_graph(layout, windows.astype(np.float32), checkpoint.norm)

    mixed = [graph(n) for n in ("uci_test_rig", "excavator", "uci_test_rig", "press", "crane", "uci_test_rig")]
    same = [graph("uci_test_rig") for _ in range(5)]
    keys = ("series", "stats", "node_kind", "node_type", "edge_index", "edge_attr", "batch")
    for graphs in (mixed, same, same, same[:3], same[:1], mixed[1:2]):  # `same` twice: from the layout cache
        expected, fast = Batch.from_data_list([g.to_data() for g in graphs]), collate(graphs)
        as_data = collate([g.to_data() for g in graphs])  # what build_graph gives takes the same path
        assert isinstance(fast, GraphBatch) and fast.num_graphs == expected.num_graphs
        assert isinstance(as_data, GraphBatch)
        for key in keys:
            assert torch.equal(getattr(fast, key), getattr(expected, key)), key
            assert getattr(fast, key).dtype == getattr(expected, key).dtype, key
            assert torch.equal(getattr(as_data, key), getattr(expected, key)), key
        with torch.inference_mode():
            a, b = checkpoint.model.forward_batch(expected), checkpoint.model.forward_batch(fast)
        assert torch.equal(a.system_logits, b.system_logits) and torch.equal(a.component_logits, b.component_logits)
    extras = [graph("crane").to_data(), graph("uci_test_rig").to_data()]
    for extra in extras:
        extra.weight = torch.ones(1)  # anything build_graph does not make takes torch_geometric's path
    assert isinstance(collate(extras), Batch)


def test_response_rounding_matches_python_round() -> None:
    import numpy as np

    from hydrodiag.inference.postprocess import detected_anomalies, rounded
    from hydrodiag.taxonomy import ANOMALY_TYPES

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.random(200_000), rng.random(50_000) ** 12, [0.0, 1.0, 0.5]]).astype(np.float32)
    assert rounded(values) == [round(float(v), 6) for v in values]
    probs = np.full(len(ANOMALY_TYPES), 0.1, dtype=np.float32)
    probs[[2, 5]] = np.float32(0.3)  # exactly at a threshold float32 cannot hold: compared as float32
    probs[7] = 0.9
    assert detected_anomalies(probs, 0.3) == [ANOMALY_TYPES[7], ANOMALY_TYPES[2], ANOMALY_TYPES[5]]
