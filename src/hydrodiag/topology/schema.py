"""Topology schema: typed components, typed edges with physical attributes, declared sensors.

A topology is data. Sensors that a topology does not declare may still be sent when named
`<quantity>_<component_id>` (e.g. `pressure_pump_main`); `infer_topology` builds a whole topology
from such names when a request carries none.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hydrodiag.errors import InvalidInputError
from hydrodiag.taxonomy import COMPONENT_TYPES, EDGE_TYPES, QUANTITY_NAMES

Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
ComponentType = Literal[COMPONENT_TYPES]  # type: ignore[valid-type]
EdgeType = Literal[EDGE_TYPES]  # type: ignore[valid-type]
QuantityName = Literal[QUANTITY_NAMES]  # type: ignore[valid-type]

# Physical edge attributes the model reads, with the scale that maps a typical value to ~1.
EDGE_ATTRIBUTE_SCALES: dict[str, float] = {"length_m": 10.0, "diameter_mm": 25.0}


class Component(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Identifier
    type: ComponentType
    name: str | None = None
    description: str | None = None


class Edge(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: Identifier
    target: Identifier
    type: EdgeType = "hydraulic_line"
    length_m: float | None = Field(default=None, gt=0, le=10_000)
    diameter_mm: float | None = Field(default=None, gt=0, le=2_000)
    description: str | None = None


class SensorBaseline(BaseModel):
    """A sensor's normal level on this machine, from its commissioning data (readings in normal
    service; no fault labels needed): the model reads the sensor relative to it."""

    model_config = ConfigDict(extra="forbid")
    mean: float = Field(allow_inf_nan=False)
    std: float = Field(gt=0, allow_inf_nan=False)


class Sensor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Identifier
    component: Identifier
    quantity: QuantityName
    description: str | None = None
    baseline: SensorBaseline | None = None


class Topology(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Identifier
    name: str | None = None
    description: str | None = None
    components: list[Component] = Field(min_length=1, max_length=256)
    edges: list[Edge] = Field(default_factory=list, max_length=2048)
    sensors: list[Sensor] = Field(default_factory=list, max_length=1024)

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        ids = [c.id for c in self.components]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate component ids: {duplicates}")
        known = set(ids)
        for i, edge in enumerate(self.edges):
            for end in ("source", "target"):
                if getattr(edge, end) not in known:
                    raise ValueError(f"edges[{i}].{end}: unknown component '{getattr(edge, end)}'")
            if edge.source == edge.target:
                raise ValueError(f"edges[{i}]: an edge must join two different components")
        names = [s.name for s in self.sensors]
        dup_sensors = sorted({n for n in names if names.count(n) > 1})
        if dup_sensors:
            raise ValueError(f"duplicate sensor names: {dup_sensors}")
        for i, sensor in enumerate(self.sensors):
            if sensor.component not in known:
                raise ValueError(f"sensors[{i}].component: unknown component '{sensor.component}'")
        return self

    def component_index(self) -> dict[str, int]:
        return {c.id: i for i, c in enumerate(self.components)}

    def declared_baseline(self, name: str) -> tuple[float, float] | None:
        for sensor in self.sensors:
            if sensor.name == name and sensor.baseline is not None:
                return sensor.baseline.mean, sensor.baseline.std
        return None

    def resolve_sensor(self, name: str, field: str = "sensor_data") -> tuple[str, str]:
        """(component_id, quantity) for a declared sensor or a `<quantity>_<component_id>` name."""
        for sensor in self.sensors:
            if sensor.name == name:
                return sensor.component, sensor.quantity
        parsed = parse_sensor_name(name)
        if parsed is not None and parsed[1] in self.component_index():
            return parsed[1], parsed[0]
        declared = ", ".join(s.name for s in self.sensors[:20]) or "none"
        raise InvalidInputError(
            f"{field}.{name}",
            f"unknown sensor for topology '{self.id}': not declared (declared: {declared}) and not named "
            "<quantity>_<component_id> with a component of this topology",
        )


def parse_sensor_name(name: str) -> tuple[str, str] | None:
    """Split `<quantity>_<component_id>`; the longest matching quantity wins (cooling_power_x)."""
    for quantity in sorted(QUANTITY_NAMES, key=len, reverse=True):
        prefix = quantity + "_"
        if name.startswith(prefix) and len(name) > len(prefix):
            return quantity, name[len(prefix) :]
    return None


# Words in a component id that reveal its type when a topology is inferred from sensor names.
_TYPE_ALIASES: dict[str, str] = {
    **{t: t for t in COMPONENT_TYPES},
    "motor": "electric_motor",
    "emotor": "electric_motor",
    "diesel": "engine",
    "swing": "hydraulic_motor",
    "travel": "hydraulic_motor",
    "cyl": "cylinder",
    "acc": "accumulator",
    "reservoir": "tank",
    "heat_exchanger": "cooler",
    "exchanger": "cooler",
    "line": "manifold",
    "hose": "manifold",
    "block": "manifold",
}
# The usual order along the power path, used to wire an inferred topology.
_FLOW_ORDER: tuple[str, ...] = (
    "tank", "filter", "pump", "accumulator", "valve", "manifold", "cylinder", "hydraulic_motor", "cooler",
)


def component_type_from_id(component_id: str) -> str | None:
    tokens = component_id.lower().replace("-", "_").replace(".", "_").split("_")
    if component_id.lower() in _TYPE_ALIASES:
        return _TYPE_ALIASES[component_id.lower()]
    for token in tokens:
        if token in _TYPE_ALIASES:
            return _TYPE_ALIASES[token]
    return None


def infer_topology(sensor_names: list[str], field: str = "sensor_data") -> Topology:
    """Build a topology from `<quantity>_<component_id>` sensor names.

    Component types come from words in the component id (pump_main -> pump). Edges follow the
    usual power path tank -> filter -> pump -> accumulator -> valve -> actuators -> cooler -> tank,
    skipping types that are absent, plus a mechanical coupling from each motor/engine to each pump.
    """
    components: dict[str, str] = {}
    sensors = []
    for name in sensor_names:
        parsed = parse_sensor_name(name)
        if parsed is None:
            raise InvalidInputError(
                f"{field}.{name}",
                "unknown sensor: without a topology every sensor must be named <quantity>_<component_id> "
                f"with a quantity among {', '.join(QUANTITY_NAMES)}",
            )
        quantity, component_id = parsed
        ctype = component_type_from_id(component_id)
        if ctype is None:
            raise InvalidInputError(
                f"{field}.{name}",
                f"cannot infer the type of component '{component_id}'; name it after one of "
                f"{', '.join(COMPONENT_TYPES)} or send a topology",
            )
        components.setdefault(component_id, ctype)
        sensors.append(Sensor(name=name, component=component_id, quantity=quantity))  # type: ignore[arg-type]

    by_type: dict[str, list[str]] = {}
    for cid, ctype in components.items():
        by_type.setdefault(ctype, []).append(cid)
    edges: list[Edge] = []
    chain = [cid for ctype in _FLOW_ORDER for cid in by_type.get(ctype, [])]
    for upstream, downstream in itertools.pairwise(chain):
        edges.append(Edge(source=upstream, target=downstream, type="hydraulic_line"))
    if len(chain) > 2 and by_type.get("tank"):
        edges.append(Edge(source=chain[-1], target=by_type["tank"][0], type="hydraulic_line"))
    for driver in by_type.get("electric_motor", []) + by_type.get("engine", []):
        for pump in by_type.get("pump", []):
            edges.append(Edge(source=driver, target=pump, type="mechanical_coupling"))
    unique_edges = {(e.source, e.target, e.type): e for e in edges if e.source != e.target}
    return Topology(
        id="inferred",
        name="Inferred from sensor names",
        components=[Component(id=cid, type=ctype) for cid, ctype in components.items()],  # type: ignore[arg-type]
        edges=list(unique_edges.values()),
        sensors=sensors,
    )
