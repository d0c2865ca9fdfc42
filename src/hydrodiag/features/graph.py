"""Topology + sensor series -> one graph the model reads.

Nodes are the topology's components plus one node per sensor; every node has the same input
width (sensor nodes carry their encoded window, component nodes zeros and a mask), so one model
serves any topology. Sensor nodes join their component with `measures` edges; component edges
carry their type, direction and physical attributes (with presence masks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import Data

from hydrodiag.errors import InvalidInputError
from hydrodiag.features.window import (
    SERIES_CHANNELS,
    STAT_FEATURES,
    Baseline,
    NormStats,
    encode_windows,
    resample_series,
)
from hydrodiag.taxonomy import COMPONENT_TYPES, EDGE_TYPES, QUANTITY_NAMES
from hydrodiag.topology.schema import EDGE_ATTRIBUTE_SCALES, Topology

NODE_COMPONENT = 0
NODE_SENSOR = 1
GRAPH_EDGE_TYPES: tuple[str, ...] = (*EDGE_TYPES, "measures")
# edge type one-hot, reverse-direction flag, each physical attribute and its presence mask
EDGE_FEATURES = len(GRAPH_EDGE_TYPES) + 1 + 2 * len(EDGE_ATTRIBUTE_SCALES)


@dataclass(frozen=True)
class TopologyLayout:
    """The part of a graph that depends only on the topology and the set of sensors present."""

    topology_id: str
    component_ids: list[str]
    component_types: list[str]
    sensor_names: list[str]
    sensor_quantities: list[str]
    sensor_components: list[int]
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    # Per node (components, then sensors): NODE_COMPONENT/NODE_SENSOR and the component type or
    # quantity index. Shared by every graph of this layout; nothing writes to them.
    node_kind: torch.Tensor
    node_type: torch.Tensor
    # Baselines the topology itself declares per sensor (commissioning data); they take precedence
    # over those a checkpoint learned for a machine of the same topology id.
    declared_baselines: tuple[tuple[float, float] | None, ...] = ()

    def baseline(self, norm: NormStats) -> Baseline:
        learned = norm.baseline_arrays(self.topology_id, self.sensor_names)
        if all(declared is None for declared in self.declared_baselines):
            return learned
        mean, std, known = (array.copy() for array in learned)
        for j, declared in enumerate(self.declared_baselines):
            if declared is not None:
                mean[j], std[j], known[j] = declared[0], declared[1], 1.0
        return mean, std, known


def _edge_features(edge_type: str, reverse: bool, attributes: dict[str, float | None]) -> list[float]:
    features = [0.0] * EDGE_FEATURES
    features[GRAPH_EDGE_TYPES.index(edge_type)] = 1.0
    features[len(GRAPH_EDGE_TYPES)] = 1.0 if reverse else 0.0
    offset = len(GRAPH_EDGE_TYPES) + 1
    for i, (name, scale) in enumerate(EDGE_ATTRIBUTE_SCALES.items()):
        value = attributes.get(name)
        if value is not None:
            features[offset + 2 * i] = float(np.log1p(value / scale))
            features[offset + 2 * i + 1] = 1.0
    return features


def build_layout(topology: Topology, sensor_names: list[str], field: str = "sensor_data") -> TopologyLayout:
    index = topology.component_index()
    quantities, owners = [], []
    for name in sensor_names:
        component_id, quantity = topology.resolve_sensor(name, field)
        quantities.append(quantity)
        owners.append(index[component_id])
    n_components = len(topology.components)
    sources, targets, attrs = [], [], []
    for edge in topology.edges:
        physical = {name: getattr(edge, name) for name in EDGE_ATTRIBUTE_SCALES}
        a, b = index[edge.source], index[edge.target]
        sources += [a, b]
        targets += [b, a]
        attrs += [_edge_features(edge.type, False, physical), _edge_features(edge.type, True, physical)]
    for s, owner in enumerate(owners):
        node = n_components + s
        sources += [node, owner]
        targets += [owner, node]
        attrs += [_edge_features("measures", False, {}), _edge_features("measures", True, {})]
    component_types = [c.type for c in topology.components]
    node_kind = [NODE_COMPONENT] * n_components + [NODE_SENSOR] * len(owners)
    node_type = [COMPONENT_TYPES.index(t) for t in component_types] + [QUANTITY_NAMES.index(q) for q in quantities]
    return TopologyLayout(
        topology_id=topology.id,
        component_ids=[c.id for c in topology.components],
        component_types=component_types,
        sensor_names=list(sensor_names),
        sensor_quantities=quantities,
        sensor_components=owners,
        edge_index=torch.tensor([sources, targets], dtype=torch.long).reshape(2, -1),
        edge_attr=torch.tensor(attrs, dtype=torch.float32).reshape(-1, EDGE_FEATURES),
        node_kind=torch.tensor(node_kind, dtype=torch.long),
        node_type=torch.tensor(node_type, dtype=torch.long),
        declared_baselines=tuple(topology.declared_baseline(name) for name in sensor_names),
    )


@dataclass(frozen=True, slots=True)
class EncodedGraph:
    """One sample's graph as the model reads it: what `build_graph` wraps in a torch_geometric Data.

    Serving uses it as it is (`inference.collate` concatenates these directly): constructing a Data
    costs more than encoding the sensor windows."""

    series: torch.Tensor  # [nodes, SERIES_CHANNELS, T]
    stats: torch.Tensor  # [nodes, STAT_FEATURES]
    node_kind: torch.Tensor
    node_type: torch.Tensor
    edge_index: torch.Tensor
    edge_attr: torch.Tensor
    num_nodes: int

    def to_data(self) -> Data:
        return Data(series=self.series, stats=self.stats, node_kind=self.node_kind, node_type=self.node_type,
                    edge_index=self.edge_index, edge_attr=self.edge_attr, num_nodes=self.num_nodes)


def encode_graph(layout: TopologyLayout, windows: np.ndarray, norm: NormStats,
                 use_baseline: bool = True) -> EncodedGraph:
    """Graph for one sample; `windows` is [num_sensors, T] raw values already resampled.

    `use_baseline=False` encodes the sample as if its machine's baselines were unknown (training
    shows the model both cases, so that a machine without baselines is served sensibly)."""
    n_components = len(layout.component_ids)
    n_sensors = len(layout.sensor_names)
    window = windows.shape[1] if n_sensors else 0
    series = np.zeros((n_components + n_sensors, SERIES_CHANNELS, window), dtype=np.float32)
    stats = np.zeros((n_components + n_sensors, STAT_FEATURES), dtype=np.float32)
    if n_sensors:
        baseline = layout.baseline(norm) if use_baseline else None
        encoded, sensor_stats = encode_windows(windows, layout.sensor_quantities, norm, baseline)
        series[n_components:] = encoded
        stats[n_components:] = sensor_stats
    return EncodedGraph(series=torch.from_numpy(series), stats=torch.from_numpy(stats), node_kind=layout.node_kind,
                        node_type=layout.node_type, edge_index=layout.edge_index, edge_attr=layout.edge_attr,
                        num_nodes=n_components + n_sensors)


def build_graph(layout: TopologyLayout, windows: np.ndarray, norm: NormStats, use_baseline: bool = True) -> Data:
    """`encode_graph` as a torch_geometric Data (training sets add their labels to it)."""
    return encode_graph(layout, windows, norm, use_baseline).to_data()


def validate_series(name: str, values: object, field: str, max_length: int) -> np.ndarray:
    """A finite float array of length 2..max_length, or InvalidInputError naming the field."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{field}.{name}", "must be a list of numbers") from None
    if array.ndim != 1:
        raise InvalidInputError(f"{field}.{name}", "must be a flat list of numbers")
    if array.size < 2:
        raise InvalidInputError(f"{field}.{name}", f"needs at least 2 values, got {array.size}")
    if array.size > max_length:
        raise InvalidInputError(f"{field}.{name}", f"has {array.size} values; the limit is {max_length}")
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise InvalidInputError(f"{field}.{name}", f"value at position {bad} is not a finite number")
    return array


def validate_all_series(
    names: list[str], values: list[object], field: str, max_length: int
) -> np.ndarray | list[np.ndarray]:
    """`validate_series` for each (name, values) pair, in one array pass when every series is a list
    of the same valid length (what clients send; the rows of one 2-D array are returned then);
    otherwise, or when anything is wrong, one by one, so the error names the same series with the
    same message."""
    length = len(values[0]) if values and isinstance(values[0], list) else -1
    if 2 <= length <= max_length and all(type(v) is list and len(v) == length for v in values):
        try:
            array = np.array(values, dtype=np.float64)
        except (TypeError, ValueError):
            array = None
        if array is not None and array.shape == (len(values), length) and np.isfinite(array).all():
            return array
    return [validate_series(name, v, field, max_length) for name, v in zip(names, values, strict=True)]


def windows_from_series(series: dict[str, np.ndarray], names: list[str], window: int) -> np.ndarray:
    return resample_series([series[n] for n in names], window)
