"""Machine models derived from a topology template, so that training sees many machines, not three.

The simulator draws a machine's design values (pump displacement, relief settings, cylinder sizes,
cooler effectiveness...) from a generator seeded by the topology's identity, so one template is one
machine model. A variant gets its own identity, hence its own design values, and may lose some of
the template's leaf components (an accumulator on a branch line, a single actuator) with their
sensors: the same kind of machine, sized and equipped differently. A model that only ever saw the
three templates learns those three machines; the held-out-topology test asks for more.
"""

from __future__ import annotations

import numpy as np

from hydrodiag.topology.schema import Topology

# Components a variant never loses: without them the machine has no flow, no drive or no oil.
KEPT_TYPES = frozenset({"pump", "engine", "electric_motor", "tank"})
# Share of a template's removable components each variant drops (each drawn independently).
DROP_SHARE = 0.3


def removable(topology: Topology) -> list[str]:
    """Leaf components (one edge) that a variant may drop along with their edges and sensors."""
    degree = {c.id: 0 for c in topology.components}
    for edge in topology.edges:
        degree[edge.source] += 1
        degree[edge.target] += 1
    return [c.id for c in topology.components if degree[c.id] == 1 and c.type not in KEPT_TYPES]


def without(topology: Topology, dropped: set[str], variant_id: str) -> Topology:
    """`topology` as machine model `variant_id`, minus the `dropped` components."""
    return Topology(
        id=variant_id,
        name=f"{topology.name or topology.id} (variant)",
        components=[c for c in topology.components if c.id not in dropped],
        edges=[e for e in topology.edges if e.source not in dropped and e.target not in dropped],
        sensors=[s for s in topology.sensors if s.component not in dropped],
    )


def machine_variants(topology: Topology, count: int, seed: int = 0) -> list[Topology]:
    """`count` machine models of the template's kind: the first is the template itself, each other
    one has its own design values and lacks a random share of the removable leaf components."""
    if count < 1:
        raise ValueError("count must be at least 1")
    rng = np.random.default_rng(seed)
    candidates = removable(topology)
    variants = [topology]
    for k in range(1, count):
        dropped = {c for c in candidates if rng.random() < DROP_SHARE}
        variant = without(topology, dropped, f"{topology.id}.v{k}")
        if not variant.sensors:  # every sensor sat on a dropped component: keep them all instead
            variant = without(topology, set(), variant.id)
        variants.append(variant)
    return variants
