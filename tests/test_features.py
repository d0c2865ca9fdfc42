"""Model input features: per-quantity scaling for any machine, per-sensor baselines for known ones."""

from __future__ import annotations

import numpy as np

from hydrodiag.features.graph import build_graph, build_layout
from hydrodiag.features.window import NormStats
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
