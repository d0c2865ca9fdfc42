"""UniversalTemporalGNN: a temporal encoder per sensor series, GATv2 message passing over the
machine's topology, per-component and per-system heads for health and the 9 anomaly types.

Sensors and components are both graph nodes (see `hydrodiag.features.graph`): a sensor's window
is encoded over its time axis by a 1-D convolution stack, the result enters the sensor node, and
GATv2 layers with edge features carry it to the components and along the hydraulic lines.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv, global_max_pool, global_mean_pool
from torch_geometric.nn.aggr import AttentionalAggregation

from hydrodiag.features.graph import EDGE_FEATURES, NODE_COMPONENT
from hydrodiag.features.window import SERIES_CHANNELS, STAT_FEATURES
from hydrodiag.taxonomy import ANOMALY_TYPES, COMPONENT_TYPES, QUANTITY_NAMES


@dataclass(frozen=True)
class ModelConfig:
    window: int = 60
    hidden: int = 64
    temporal_channels: int = 32
    gnn_layers: int = 3
    heads: int = 4
    dropout: float = 0.3
    # A linear map from the full-resolution window as well as from the downsampled one: tree models
    # on the UCI rig beat the GNN on the accumulator by thresholding single seconds (the pressure
    # step right after a valve switch), which two stride-2 convolutions blur. Off in checkpoints
    # written before it existed.
    raw_timing: bool = False
    num_anomalies: int = len(ANOMALY_TYPES)
    num_component_types: int = len(COMPONENT_TYPES)
    num_quantities: int = len(QUANTITY_NAMES)
    edge_features: int = EDGE_FEATURES

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)

    def __post_init__(self) -> None:
        if self.window < 32:
            raise ValueError("window must be at least 32 steps")
        if self.hidden % self.heads:
            raise ValueError("hidden must be divisible by heads")


@dataclass
class ModelOutput:
    component_health: Tensor  # [num_component_nodes] in [0, 1]
    component_logits: Tensor  # [num_component_nodes, num_anomalies]
    system_health: Tensor  # [num_graphs]
    system_logits: Tensor  # [num_graphs, num_anomalies]
    component_batch: Tensor  # [num_component_nodes] graph index of each component node


class TemporalEncoder(nn.Module):
    """Encodes each [channels, T] sensor window into one vector; learned over the time axis."""

    def __init__(self, channels: int, hidden: int, window: int, raw_timing: bool = False) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv1d(SERIES_CHANNELS, channels, kernel_size=5, padding=2),
            nn.GELU(),
            nn.Conv1d(channels, channels, kernel_size=5, padding=2, stride=2),
            nn.GELU(),
            nn.Conv1d(channels, 2 * channels, kernel_size=3, padding=1, stride=2),
            nn.GELU(),
        )
        # Where in the window an event happens matters (a lagging valve shifts its pressure steps),
        # so besides position-free pooling a linear map reads the whole downsampled time axis.
        steps = self.convs(torch.zeros(1, SERIES_CHANNELS, window)).shape[2]
        self.timing = nn.Linear(2 * channels * steps, hidden)
        self.raw_timing = nn.Linear(SERIES_CHANNELS * window, hidden) if raw_timing else None
        timings = 2 if raw_timing else 1
        self.project = nn.Sequential(nn.Linear(4 * channels + timings * hidden + STAT_FEATURES, hidden), nn.GELU())

    def forward(self, series: Tensor, stats: Tensor) -> Tensor:
        features = self.convs(series)
        parts = [features.mean(dim=2), features.amax(dim=2), self.timing(features.flatten(1))]
        if self.raw_timing is not None:
            parts.append(self.raw_timing(series.flatten(1)))
        return self.project(torch.cat([*parts, stats], dim=1))


def _head(inputs: int, hidden: int, outputs: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, outputs))


class UniversalTemporalGNN(nn.Module):
    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        cfg = self.config
        h = cfg.hidden
        self.kind_embedding = nn.Embedding(2, h)
        self.component_type_embedding = nn.Embedding(cfg.num_component_types, h)
        self.quantity_embedding = nn.Embedding(cfg.num_quantities, h)
        self.temporal = TemporalEncoder(cfg.temporal_channels, h, cfg.window, cfg.raw_timing)
        self.convs = nn.ModuleList(
            GATv2Conv(h, h // cfg.heads, heads=cfg.heads, edge_dim=cfg.edge_features, add_self_loops=True,
                      dropout=0.0)
            for _ in range(cfg.gnn_layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(h) for _ in range(cfg.gnn_layers))
        self.dropout = nn.Dropout(cfg.dropout)
        self.component_health_head = _head(2 * h, h, 1, cfg.dropout)
        self.component_anomaly_head = _head(2 * h, h, cfg.num_anomalies, cfg.dropout)
        self.system_pool = AttentionalAggregation(gate_nn=nn.Linear(h, 1))
        self.system_health_head = _head(3 * h, h, 1, cfg.dropout)
        self.system_anomaly_head = _head(3 * h, h, cfg.num_anomalies, cfg.dropout)

    def forward(
        self,
        series: Tensor,
        stats: Tensor,
        node_kind: Tensor,
        node_type: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        batch: Tensor,
        num_graphs: int,
    ) -> ModelOutput:
        is_component = node_kind == NODE_COMPONENT
        type_embedding = torch.where(
            is_component.unsqueeze(1),
            self.component_type_embedding(node_type.clamp(max=self.config.num_component_types - 1)),
            self.quantity_embedding(node_type.clamp(max=self.config.num_quantities - 1)),
        )
        h = self.kind_embedding(node_kind) + type_embedding
        # No branch on the number of sensor nodes (a batch without any encodes an empty tensor), so
        # that a trace of this forward pass (inference/tracing.py) holds for every batch.
        sensor_nodes = (~is_component).nonzero().squeeze(1)
        encoded = self.temporal(series.index_select(0, sensor_nodes), stats.index_select(0, sensor_nodes))
        h = h.index_add(0, sensor_nodes, encoded)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = norm(h + self.dropout(torch.nn.functional.gelu(conv(h, edge_index, edge_attr))))

        component_nodes = is_component.nonzero().squeeze(1)
        hc = h.index_select(0, component_nodes)
        component_batch = batch.index_select(0, component_nodes)
        head_input = torch.cat([hc, type_embedding.index_select(0, component_nodes)], dim=1)
        pooled = torch.cat(
            [
                self.system_pool(hc, component_batch, dim_size=num_graphs),
                global_mean_pool(hc, component_batch, size=num_graphs),
                global_max_pool(hc, component_batch, size=num_graphs),
            ],
            dim=1,
        )
        return ModelOutput(
            component_health=torch.sigmoid(self.component_health_head(head_input)).squeeze(1),
            component_logits=self.component_anomaly_head(head_input),
            system_health=torch.sigmoid(self.system_health_head(pooled)).squeeze(1),
            system_logits=self.system_anomaly_head(pooled),
            component_batch=component_batch,
        )

    def forward_batch(self, batch: object) -> ModelOutput:
        """Convenience for a torch_geometric Batch built from `features.graph.build_graph` graphs."""
        b = batch
        return self(b.series, b.stats, b.node_kind, b.node_type, b.edge_index, b.edge_attr,  # type: ignore[attr-defined]
                    b.batch, int(b.num_graphs))  # type: ignore[attr-defined]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
