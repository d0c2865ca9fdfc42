"""Graphs -> one batch for a forward pass, without torch_geometric's generic collation.

`Batch.from_data_list` inspects every attribute of every graph (~0.8 ms for one graph, ~1.8 ms for
32 on this project's graphs). Serving graphs are `features.graph.EncodedGraph`s (or the Data that
`build_graph` wraps one in) and carry the same few tensors, so they are concatenated directly; a
machine that sends the same sensors every time has one cached layout, whose `edge_index` is repeated
with node offsets instead of concatenated.
Any other graph goes through `Batch.from_data_list`. The tensors are identical either way
(tests/test_engine.py compares them on mixed topologies).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from hydrodiag.features.graph import EncodedGraph

# What `build_graph` puts in a graph; a graph with anything else takes the general path.
GRAPH_KEYS = frozenset({"series", "stats", "node_kind", "node_type", "edge_index", "edge_attr", "num_nodes"})


@dataclass(frozen=True)
class GraphBatch:
    """The attributes of a torch_geometric Batch that the model reads."""

    series: Tensor
    stats: Tensor
    node_kind: Tensor
    node_type: Tensor
    edge_index: Tensor
    edge_attr: Tensor
    batch: Tensor
    num_graphs: int

    def to(self, device: torch.device, non_blocking: bool = False) -> GraphBatch:
        return replace(self, **{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                                for f in fields(self) if f.name != "num_graphs"})

    def pin_memory(self) -> GraphBatch:
        return replace(self, **{f.name: getattr(self, f.name).pin_memory()
                                for f in fields(self) if f.name != "num_graphs"})


def on_device(batch: GraphBatch | Any, device: torch.device, pin_memory: bool) -> GraphBatch | Any:
    """`batch` (a GraphBatch or torch_geometric Batch) where the model is: unchanged off CUDA; on a GPU
    copied asynchronously, from pinned host memory when `pin_memory`."""
    if device.type != "cuda":
        return batch
    return (batch.pin_memory() if pin_memory else batch).to(device, non_blocking=True)


def _plain(graph: Any) -> bool:
    return type(graph) is EncodedGraph or (type(graph) is Data and graph._store._mapping.keys() == GRAPH_KEYS)


# The parts of a batch that depend only on its graphs' layout and their number, per (layout, count):
# a machine fleet posts the same layout again and again, so a pass makes none of these tensors (every
# torch call on the event loop may hand the GIL to another thread and must win it back). An entry
# also holds the layout tensors its key names by id, so those ids cannot be reused while it exists.
_LAYOUT_PARTS_MAX = 256
_layout_parts: dict[tuple[int, ...], tuple[tuple[Tensor, ...], tuple[Tensor, ...]]] = {}


def _same_layout(graphs: list[EncodedGraph] | list[Data], sizes: list[int]) -> bool:
    first = graphs[0]
    return len(set(sizes)) == 1 and all(
        g.edge_index is first.edge_index and g.edge_attr is first.edge_attr and g.node_kind is first.node_kind
        and g.node_type is first.node_type for g in graphs)


def _layout_batch(first: EncodedGraph | Data, count: int, size: int) -> tuple[Tensor, ...]:
    """edge_index, edge_attr, node_kind, node_type and batch of `count` graphs of `first`'s layout."""
    layout = (first.edge_index, first.edge_attr, first.node_kind, first.node_type)
    key = (*map(id, layout), count)
    entry = _layout_parts.get(key)
    if entry is None:
        edge_index, n_edges = first.edge_index, first.edge_index.shape[1]
        offsets = torch.arange(count, dtype=torch.long) * size
        parts = ((edge_index.unsqueeze(1) + offsets.view(1, count, 1)).reshape(2, count * n_edges),
                 first.edge_attr.repeat(count, 1), first.node_kind.repeat(count), first.node_type.repeat(count),
                 torch.from_numpy(np.repeat(np.arange(count, dtype=np.int64), size)))
        if len(_layout_parts) >= _LAYOUT_PARTS_MAX:
            _layout_parts.clear()
        entry = _layout_parts[key] = (parts, layout)
    return entry[0]


def collate(graphs: list[EncodedGraph] | list[Data]) -> GraphBatch | Any:
    """One batch of `graphs` (in order): a GraphBatch for `encode_graph` / `build_graph` graphs, else a
    torch_geometric Batch."""
    if not graphs or not all(_plain(g) for g in graphs):
        return Batch.from_data_list([g.to_data() if type(g) is EncodedGraph else g for g in graphs])
    sizes = [g.num_nodes if isinstance(g, EncodedGraph) else int(g._store["num_nodes"]) for g in graphs]
    first = graphs[0]
    if len(graphs) == 1:
        return GraphBatch(series=first.series, stats=first.stats, node_kind=first.node_kind,
                          node_type=first.node_type, edge_index=first.edge_index, edge_attr=first.edge_attr,
                          batch=torch.from_numpy(np.zeros(sizes[0], dtype=np.int64)), num_graphs=1)
    series = torch.cat([g.series for g in graphs], dim=0)
    stats = torch.cat([g.stats for g in graphs], dim=0)
    if _same_layout(graphs, sizes):
        edge_index, edge_attr, node_kind, node_type, batch = _layout_batch(first, len(graphs), sizes[0])
    else:
        edge_index = _shifted([g.edge_index for g in graphs], sizes)
        edge_attr = torch.cat([g.edge_attr for g in graphs], dim=0)
        node_kind = torch.cat([g.node_kind for g in graphs], dim=0)
        node_type = torch.cat([g.node_type for g in graphs], dim=0)
        batch = torch.from_numpy(np.repeat(np.arange(len(graphs), dtype=np.int64), sizes))
    return GraphBatch(series=series, stats=stats, node_kind=node_kind, node_type=node_type, edge_index=edge_index,
                      edge_attr=edge_attr, batch=batch, num_graphs=len(graphs))


def _shifted(edge_indices: list[Tensor], sizes: list[int]) -> Tensor:
    offset, parts = 0, []
    for edge_index, size in zip(edge_indices, sizes, strict=True):
        parts.append(edge_index + offset if offset else edge_index)
        offset += size
    return torch.cat(parts, dim=1)
