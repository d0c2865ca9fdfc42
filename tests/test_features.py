"""Model input features: per-quantity scaling for any machine, per-sensor baselines for known ones."""

from __future__ import annotations

import numpy as np

from hydrodiag.features.graph import build_graph, build_layout
from hydrodiag.features.window import NormStats, encode_windows
from hydrodiag.topology.templates import TopologyRegistry


def _rig() -> tuple[list[str], object]:
    topology = TopologyRegistry().get("uci_test_rig")
    names = [s.name for s in topology.sensors]
    return names, build_layout(topology, names)


def test_norm_stats_keep_sensor_baselines_through_checkpoint_metadata() -> None:
    norm = NormStats.fit({"pressure": [np.array([1.0, 3.0])]}, {"uci_test_rig/PS1": [np.array([150.0, 160.0])]})
    restored = NormStats.from_dict(norm.to_dict())
    assert restored.baselines == {"uci_test_rig/PS1": (155.0, 5.0)}
    assert restored.mean == {"pressure": 2.0}


def test_known_machine_is_read_relative_to_its_own_baseline() -> None:
    names, layout = _rig()
    rng = np.random.default_rng(0)
    operating = rng.normal(100.0, 1.0, size=(50, len(names), 60))
    norm = NormStats.fit({q: [operating[:, j]] for j, q in enumerate(layout.sensor_quantities)})
    norm.add_baselines("uci_test_rig", names, operating)
    shifted = operating[0] + 2.0  # two baseline standard deviations above normal on every sensor
    graph = build_graph(layout, shifted, norm)
    sensors = graph.stats[len(layout.component_ids):]
    assert np.allclose(sensors[:, 3].numpy(), 1.0)  # baseline known
    assert (sensors[:, 2].numpy() > 1.5).all()  # mean level relative to baseline shows the shift
    assert float(graph.series[len(layout.component_ids):, 2].abs().mean()) > 1.0


def test_machine_without_baseline_is_still_encoded_with_the_flag_off() -> None:
    names, layout = _rig()
    norm = NormStats.fit({"pressure": [np.array([1.0, 3.0])]}, {"other_machine/PS1": [np.array([1.0, 2.0])]})
    graph = build_graph(layout, np.ones((len(names), 60)), norm)
    sensors = graph.stats[len(layout.component_ids):]
    assert float(sensors[:, 3].abs().sum()) == 0.0
    assert float(graph.series[:, 2].abs().sum()) == 0.0
    assert np.isfinite(graph.series.numpy()).all()


def test_training_without_baseline_matches_an_unknown_machine() -> None:
    names, layout = _rig()
    operating = np.random.default_rng(1).normal(5.0, 1.0, size=(10, len(names), 60))
    norm = NormStats.fit({q: [operating[:, j]] for j, q in enumerate(layout.sensor_quantities)})
    dropped = build_graph(layout, operating[0], norm, use_baseline=False)
    norm.add_baselines("uci_test_rig", names, operating)
    unknown = build_graph(layout, operating[0], NormStats(norm.mean, norm.std))
    assert np.array_equal(dropped.series.numpy(), unknown.series.numpy())
    assert np.array_equal(dropped.stats.numpy(), unknown.stats.numpy())


def test_baseline_declared_by_the_topology_wins_over_the_checkpoint() -> None:
    import pytest
    from pydantic import ValidationError

    from hydrodiag.topology.schema import Topology

    data = TopologyRegistry().get("uci_test_rig").model_dump()
    data["sensors"][0]["baseline"] = {"mean": 10.0, "std": 2.0}
    topology = Topology.model_validate(data)
    names = [s.name for s in topology.sensors]
    layout = build_layout(topology, names)
    norm = NormStats.fit({"pressure": [np.array([1.0, 3.0])]}, {f"uci_test_rig/{names[0]}": [np.array([0.0, 2.0])]})
    windows = np.full((len(names), 60), 14.0)
    stats = build_graph(layout, windows, norm).stats[len(layout.component_ids):]
    assert float(stats[0, 2]) == 2.0  # (14 - 10) / 2 from the declared baseline, not (14 - 1) / 1
    assert float(stats[0, 3]) == 1.0 and float(stats[1:, 3].abs().sum()) == 0.0

    data["sensors"][0]["baseline"] = {"mean": 10.0, "std": 0.0}
    with pytest.raises(ValidationError, match=r"baseline\.std"):
        Topology.model_validate(data)


def _encode_windows_reference(windows: np.ndarray, quantities: list[str], norm: NormStats,
                              baseline: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, ...]:
    """The encoding in plain numpy (mean, std, clip, stack): what the checkpoints were trained on."""
    mean_q, std_q = norm.arrays(quantities)
    level = (windows - mean_q[:, None]) / std_q[:, None]
    centre = level.mean(axis=1, keepdims=True)
    spread = level.std(axis=1, keepdims=True)
    shape = (level - centre) / (spread + 1e-2)
    if baseline is None:
        relative = np.zeros_like(level)
        known = np.zeros((len(quantities), 1), dtype=np.float32)
    else:
        known = baseline[2][:, None]
        relative = np.clip((windows - baseline[0][:, None]) / baseline[1][:, None], -20, 20) * known
    series = np.stack([np.clip(level, -20, 20), shape, relative], axis=1).astype(np.float32)
    stats = np.concatenate([np.clip(centre, -20, 20), np.log(spread + 1e-3), relative.mean(axis=1, keepdims=True),
                            known], axis=1).astype(np.float32)
    return series, stats


def test_encode_windows_matches_the_plain_numpy_formulation_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    norm = NormStats(mean={"pressure": 50.0, "flow": 5.0}, std={"pressure": 30.0, "flow": 2.0})
    for trial in range(400):
        sensors, steps = int(rng.integers(1, 20)), int(rng.choice([33, 60, 64]))
        scale, offset = rng.choice([0.0, 1e-3, 1.0, 100.0]), rng.choice([0.0, 50.0, 3000.0])
        dtype = np.float32 if trial % 3 else np.float64
        windows = (rng.standard_normal((sensors, steps)) * scale + offset).astype(dtype)
        quantities = [str(rng.choice(["pressure", "flow", "never_seen"])) for _ in range(sensors)]
        baseline = None if trial % 2 else (
            (rng.standard_normal(sensors) * 10).astype(np.float32), (rng.random(sensors) * 5 + 0.1).astype(np.float32),
            (rng.random(sensors) > 0.3).astype(np.float32))
        for mine, reference in zip(encode_windows(windows, quantities, norm, baseline),
                                   _encode_windows_reference(windows, quantities, norm, baseline), strict=True):
            assert mine.dtype == reference.dtype == np.float32 and mine.shape == reference.shape
            assert np.array_equal(mine.view(np.uint32), reference.view(np.uint32)), trial
