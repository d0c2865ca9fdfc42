"""Labelled graphs: the one shape every data set (real or simulated) is turned into for training.

Labels that a data set does not have are masked, never invented: a mask of 0 means "unknown" and
contributes nothing to the loss or to the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import Data

from hydrodiag.features.graph import TopologyLayout, build_graph
from hydrodiag.features.window import NormStats, baseline_key
from hydrodiag.taxonomy import ANOMALY_TYPES

NUM_ANOMALIES = len(ANOMALY_TYPES)


@dataclass
class LabelSet:
    """Labels of a group of samples sharing one layout; arrays are [n, ...]; masks are 0/1."""

    component_health: np.ndarray  # [n, C]
    component_health_mask: np.ndarray  # [n, C]
    component_anomalies: np.ndarray  # [n, C, 9]
    component_anomaly_mask: np.ndarray  # [n, C, 9]
    system_health: np.ndarray  # [n]
    system_health_mask: np.ndarray  # [n]
    system_anomalies: np.ndarray  # [n, 9]
    system_anomaly_mask: np.ndarray  # [n, 9]


@dataclass
class NormValues:
    """Raw training values grouped for `NormStats.fit`: by physical quantity and by machine sensor."""

    by_quantity: dict[str, list[np.ndarray]]
    by_sensor: dict[str, list[np.ndarray]]

    @classmethod
    def empty(cls) -> NormValues:
        return cls({}, {})

    def add(self, layout: TopologyLayout, windows: np.ndarray) -> None:
        """`windows` is [n, num_sensors, T] raw values of one machine's sensors, in layout order."""
        for j, (name, quantity) in enumerate(zip(layout.sensor_names, layout.sensor_quantities, strict=True)):
            self.by_quantity.setdefault(quantity, []).append(windows[:, j])
            self.by_sensor.setdefault(baseline_key(layout.topology_id, name), []).append(windows[:, j])

    def fit(self) -> NormStats:
        return NormStats.fit(self.by_quantity, self.by_sensor)


def labelled_graphs(layout: TopologyLayout, windows: np.ndarray, norm: NormStats, labels: LabelSet,
                    source: str, without_baseline: np.ndarray | None = None) -> list[Data]:
    """One graph per sample; `windows` is [n, num_sensors, T] already resampled. Samples flagged in
    `without_baseline` are encoded as if the machine's baselines were unknown."""
    graphs = []
    for i in range(windows.shape[0]):
        use_baseline = without_baseline is None or not bool(without_baseline[i])
        graph = build_graph(layout, windows[i], norm, use_baseline)
        graph.y_component_health = torch.from_numpy(labels.component_health[i].astype(np.float32))
        graph.m_component_health = torch.from_numpy(labels.component_health_mask[i].astype(np.float32))
        graph.y_component_anomalies = torch.from_numpy(labels.component_anomalies[i].astype(np.float32))
        graph.m_component_anomalies = torch.from_numpy(labels.component_anomaly_mask[i].astype(np.float32))
        graph.y_system_health = torch.tensor([float(labels.system_health[i])])
        graph.m_system_health = torch.tensor([float(labels.system_health_mask[i])])
        graph.y_system_anomalies = torch.from_numpy(labels.system_anomalies[i : i + 1].astype(np.float32))
        graph.m_system_anomalies = torch.from_numpy(labels.system_anomaly_mask[i : i + 1].astype(np.float32))
        graph.source = source
        graphs.append(graph)
    return graphs
