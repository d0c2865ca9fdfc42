"""Shipped topology templates (JSON data files beside this module) and the registry serving them."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from hydrodiag.errors import TopologyError, UnknownTopologyError
from hydrodiag.topology.schema import Topology

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


def load_template_file(path: Path) -> Topology:
    try:
        return Topology.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise TopologyError(f"topology template '{path.name}' is invalid: {exc}") from exc


def load_templates(directory: Path = TEMPLATE_DIR) -> dict[str, Topology]:
    templates = {}
    for path in sorted(directory.glob("*.json")):
        topology = load_template_file(path)
        templates[topology.id] = topology
    return templates


class TopologyRegistry:
    """Thread-safe map of topology id -> topology, seeded with the shipped templates."""

    def __init__(self, topologies: dict[str, Topology] | None = None) -> None:
        self._lock = threading.Lock()
        self._topologies = dict(load_templates() if topologies is None else topologies)

    def get(self, topology_id: str, field: str = "topology_id") -> Topology:
        with self._lock:
            topology = self._topologies.get(topology_id)
        if topology is None:
            raise UnknownTopologyError(topology_id, field)
        return topology

    def register(self, topology: Topology) -> None:
        with self._lock:
            self._topologies[topology.id] = topology

    def ids(self) -> list[str]:
        with self._lock:
            return sorted(self._topologies)

    def all(self) -> list[Topology]:
        with self._lock:
            return [self._topologies[k] for k in sorted(self._topologies)]
