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
from hydrodiag.features.window import NormStats
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


def labelled_graphs(layout: TopologyLayout, windows: np.ndarray, norm: NormStats, labels: LabelSet,
                    source: str) -> list[Data]:
    """One graph per sample; `windows` is [n, num_sensors, T] already resampled."""
    graphs = []
    for i in range(windows.shape[0]):
        graph = build_graph(layout, windows[i], norm)
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
