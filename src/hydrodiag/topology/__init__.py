"""Machine topologies as data: components, edges and sensors (schema, templates, inference from names)."""

from hydrodiag.topology.schema import Component, Edge, Sensor, Topology, infer_topology
from hydrodiag.topology.templates import TopologyRegistry

__all__ = ["Component", "Edge", "Sensor", "Topology", "TopologyRegistry", "infer_topology"]
