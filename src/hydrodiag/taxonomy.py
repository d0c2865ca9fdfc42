"""The one home of the diagnostic vocabulary.

Every name a user sees in a response -- anomaly types, component types, edge types, physical
quantities and health statuses -- is defined here once, with its meaning. The model's output
order follows these tuples, so they are part of the checkpoint contract: checkpoints store the
vocabularies they were trained with and loading refuses a mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass

# Anomaly types: one meaning everywhere (model heads, simulator, labels, responses).
ANOMALY_DESCRIPTIONS: dict[str, str] = {
    "pressure_drop": "Loss of system or pre-charge pressure (e.g. accumulator gas loss, relief valve creep).",
    "overheating": "Oil temperature above the design band; usually a degraded cooler or excess losses.",
    "cavitation": "Vapour bubbles at the pump inlet: inlet pressure too low, noisy pressure, broadband vibration.",
    "leakage": "Internal or external loss of volume flow (worn pump, cylinder bypass, hose).",
    "vibration_anomaly": "Vibration beyond the nominal signature: imbalance, misalignment, bearing wear.",
    "flow_restriction": "Partially blocked line or component; pressure rises upstream, flow falls downstream.",
    "contamination": "Particle load in the oil; shows as rising filter pressure drop and wear.",
    "seal_degradation": "Worn seals: slow pressure decay under hold, drift, small external leakage.",
    "valve_stiction": "Sluggish or lagging valve switching; delayed pressure and flow transitions.",
}
ANOMALY_TYPES: tuple[str, ...] = tuple(ANOMALY_DESCRIPTIONS)

COMPONENT_DESCRIPTIONS: dict[str, str] = {
    "pump": "Hydraulic pump (displacement machine that produces flow).",
    "electric_motor": "Electric motor driving a pump.",
    "engine": "Combustion engine driving a pump (mobile machines).",
    "hydraulic_motor": "Hydraulic motor (rotary actuator, e.g. swing or travel drive).",
    "valve": "Directional, proportional, relief or control valve (block).",
    "cylinder": "Linear actuator.",
    "accumulator": "Gas-charged hydraulic accumulator.",
    "cooler": "Oil cooler / heat exchanger.",
    "filter": "Oil filter.",
    "tank": "Oil reservoir.",
    "manifold": "Manifold or junction block; also stands for a hydraulic line section.",
}
COMPONENT_TYPES: tuple[str, ...] = tuple(COMPONENT_DESCRIPTIONS)

EDGE_DESCRIPTIONS: dict[str, str] = {
    "hydraulic_line": "Oil flows between the two components (pipe or hose).",
    "mechanical_coupling": "Shaft or mechanical link (motor drives pump, cylinder moves a boom).",
    "thermal": "Heat exchange without a direct flow path (e.g. oil in tank warms a sensor block).",
    "electrical": "Power or control signal.",
}
EDGE_TYPES: tuple[str, ...] = tuple(EDGE_DESCRIPTIONS)


@dataclass(frozen=True)
class Quantity:
    name: str
    unit: str
    description: str


QUANTITIES: dict[str, Quantity] = {
    q.name: q
    for q in (
        Quantity("pressure", "bar", "Static oil pressure."),
        Quantity("temperature", "degC", "Oil, fluid or housing temperature."),
        Quantity("flow", "l/min", "Volume flow."),
        Quantity("vibration", "mm/s", "Vibration velocity (RMS)."),
        Quantity("power", "W", "Electric or shaft power."),
        Quantity("cooling_power", "kW", "Heat removed by a cooler."),
        Quantity("efficiency", "%", "An efficiency or effectiveness figure."),
        Quantity("speed", "rpm", "Rotational speed."),
        Quantity("position", "mm", "Actuator position or stroke."),
        Quantity("force", "kN", "Force on an actuator or structure."),
        Quantity("level", "%", "Fill level."),
        Quantity("current", "A", "Electric (e.g. valve solenoid) current."),
        Quantity("particle_count", "ISO4406", "Oil cleanliness code (contamination)."),
    )
}
QUANTITY_NAMES: tuple[str, ...] = tuple(QUANTITIES)


# Health statuses, best first. A score >= threshold gets that status; below every threshold
# the last status applies. Settings may override the numbers (see settings.StatusThresholds).
HEALTH_STATUSES: tuple[str, ...] = ("healthy", "degraded", "warning", "critical")
DEFAULT_STATUS_THRESHOLDS: dict[str, float] = {"healthy": 0.75, "degraded": 0.5, "warning": 0.3}
# An anomaly is "detected" when its probability reaches this value.
DEFAULT_ANOMALY_THRESHOLD: float = 0.5


def status_for(score: float, thresholds: dict[str, float] | None = None) -> str:
    """Map a health score in [0, 1] to a status name using the ordered thresholds."""
    limits = thresholds or DEFAULT_STATUS_THRESHOLDS
    for status in HEALTH_STATUSES[:-1]:
        if score >= limits[status]:
            return status
    return HEALTH_STATUSES[-1]


def critical_threshold(thresholds: dict[str, float] | None = None) -> float:
    """Health below which a machine or component is critical (the time-to-failure target)."""
    return (thresholds or DEFAULT_STATUS_THRESHOLDS)["warning"]
