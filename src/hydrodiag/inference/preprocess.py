"""Request -> graph: topology resolution, input limits, resampling, graph building.

Which topology a request gets: its inline `topology`, else its `topology_id` from the registry,
else the caller's default topology, else one inferred from `<quantity>_<component_id>` sensor
names. The topology part of a graph (`TopologyLayout`) depends only on the topology and the set of
sensor names, so it is cached; a busy machine sends the same sensors every time.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from hydrodiag.errors import InvalidInputError
from hydrodiag.features.graph import (
    EncodedGraph,
    TopologyLayout,
    build_layout,
    encode_graph,
    validate_all_series,
)
from hydrodiag.features.window import resample_series
from hydrodiag.inference.schemas import PredictionRequest
from hydrodiag.model.checkpoint import Checkpoint
from hydrodiag.topology.schema import Topology, infer_topology
from hydrodiag.topology.templates import TopologyRegistry

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

INFERRED_TOPOLOGY_ID = "inferred"


class LruCache(Generic[K, V]):
    """A small thread-safe LRU map; `get_or_create` builds outside the lock (builders are pure)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_create(self, key: K, build: Callable[[], V]) -> V:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = build()
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@dataclass(frozen=True)
class InputLimits:
    max_series_length: int
    max_sensors: int


@dataclass(frozen=True)
class PreparedGraph:
    """A request turned into a graph for one particular checkpoint (window and normalisation)."""

    graph: EncodedGraph
    topology_id: str
    layout: TopologyLayout
    checkpoint: Checkpoint


class Preprocessor:
    def __init__(self, registry: TopologyRegistry, limits: InputLimits, cache_size: int = 512) -> None:
        self.registry = registry
        self.limits = limits
        self._layouts: LruCache[Hashable, tuple[str, TopologyLayout]] = LruCache(cache_size)
        # Fingerprints of recently seen topology objects; holding the object keeps its id() unique.
        self._fingerprints: LruCache[int, tuple[Topology, str]] = LruCache(64)

    def prepare(
        self, request: PredictionRequest, checkpoint: Checkpoint, default_topology: Topology | None = None,
        prefix: str = "",
    ) -> PreparedGraph:
        """`prefix` locates the request in a batch (`requests[3].`) so that errors name the item."""
        field = f"{prefix}sensor_data"
        names = sorted(request.sensor_data)
        if not names:
            raise InvalidInputError(field, "at least one sensor is required")
        if len(names) > self.limits.max_sensors:
            limit = self.limits.max_sensors
            raise InvalidInputError(field, f"has {len(names)} sensors; the limit is {limit} (MAX_SENSORS)")
        topology_id, layout = self._layout(request, default_topology, names, prefix)
        data = request.sensor_data
        checked = validate_all_series(names, [data[name] for name in names], field, self.limits.max_series_length)
        windows = resample_series(checked, checkpoint.config.window)  # rows in the order of `names`
        graph = encode_graph(layout, windows, checkpoint.norm)
        return PreparedGraph(graph=graph, topology_id=topology_id, layout=layout, checkpoint=checkpoint)

    def _layout(
        self, request: PredictionRequest, default: Topology | None, names: list[str], prefix: str
    ) -> tuple[str, TopologyLayout]:
        field = f"{prefix}sensor_data"
        topology = request.topology
        if topology is None and request.topology_id is not None:
            topology = self.registry.get(request.topology_id, field=f"{prefix}topology_id")
        if topology is None:
            topology = default
        if topology is None:
            return self._layouts.get_or_create(
                ("inferred", tuple(names)), lambda: self._inferred_layout(names, field)
            )
        resolved = topology
        key = ("topology", self._fingerprint(resolved), tuple(names))
        return self._layouts.get_or_create(key, lambda: (resolved.id, build_layout(resolved, names, field)))

    @staticmethod
    def _inferred_layout(names: list[str], field: str) -> tuple[str, TopologyLayout]:
        topology = infer_topology(names, field=field)
        return INFERRED_TOPOLOGY_ID, build_layout(topology, names, field)

    def _fingerprint(self, topology: Topology) -> str:
        # Keyed by content, not id: an inline topology may reuse a registered id with other contents.
        def digest() -> tuple[Topology, str]:
            return topology, hashlib.sha256(topology.model_dump_json().encode()).hexdigest()

        return self._fingerprints.get_or_create(id(topology), digest)[1]
