"""Simulated windows (training.simulator) turned into labelled graphs.

The simulator knows every label, so nothing is masked: all components' health and all 9
anomaly types are supervised.
"""

from __future__ import annotations

import numpy as np
from torch_geometric.data import Data

from hydrodiag.features.graph import build_layout
from hydrodiag.features.window import NormStats, resample_windows
from hydrodiag.topology.schema import Topology
from hydrodiag.training.samples import LabelSet, NormValues, labelled_graphs
from hydrodiag.training.simulator import SimulatedBatch


def add_simulated_norm_values(values: NormValues, batch: SimulatedBatch, topology: Topology) -> None:
    values.add(build_layout(topology, list(batch.sensor_names)), np.asarray(batch.series))


def simulated_labels(batch: SimulatedBatch) -> LabelSet:
    health = np.asarray(batch.component_health, dtype=np.float64)
    anomalies = np.asarray(batch.component_anomalies, dtype=np.float64)
    system_anomalies = np.asarray(batch.system_anomalies, dtype=np.float64)
    return LabelSet(
        component_health=health, component_health_mask=np.ones_like(health),
        component_anomalies=anomalies, component_anomaly_mask=np.ones_like(anomalies),
        system_health=np.asarray(batch.system_health, dtype=np.float64),
        system_health_mask=np.ones(health.shape[0]),
        system_anomalies=system_anomalies, system_anomaly_mask=np.ones_like(system_anomalies),
    )


def simulated_graphs(batch: SimulatedBatch, topology: Topology, norm: NormStats, window: int,
                     without_baseline: np.ndarray | None = None) -> list[Data]:
    layout = build_layout(topology, list(batch.sensor_names))
    if layout.component_ids != list(batch.component_ids):
        raise ValueError("simulated batch components do not follow the topology's order")
    windows = resample_windows(np.asarray(batch.series), window)
    return labelled_graphs(layout, windows, norm, simulated_labels(batch), f"sim:{topology.id}", without_baseline)
