"""Commissioning a machine: its sensors' normal levels (baselines) from readings in normal service.

The model reads every sensor both against what it knows of the physical quantity and against the
sensor's own normal on this machine (docs/ARCHITECTURE.md, "The model"). For a machine the model
was not trained on, that normal comes from here: readings recorded while the machine runs normally,
no fault labels needed, written into the topology that is then registered (`POST /topologies`).
"""

from __future__ import annotations

import numpy as np

from hydrodiag.errors import InvalidInputError
from hydrodiag.topology.schema import Sensor, SensorBaseline, Topology

MIN_READINGS = 10


def commission(topology: Topology, readings: dict[str, object], field: str = "readings",
               topology_id: str | None = None) -> Topology:
    """A copy of `topology` whose sensors carry the mean and std of their commissioning readings.

    `readings` maps sensor names to values in normal service: one flat list, or a list of windows.
    Sensors not declared but named `<quantity>_<component_id>` are declared; declared sensors
    without readings keep whatever baseline they had.
    """
    if not readings:
        raise InvalidInputError(field, "no sensor readings given")
    baselines: dict[str, SensorBaseline] = {}
    for name, values in readings.items():
        topology.resolve_sensor(name, field)
        try:
            array = np.asarray(values, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise InvalidInputError(f"{field}.{name}", "must be a list of numbers or of windows") from None
        if array.size < MIN_READINGS:
            raise InvalidInputError(f"{field}.{name}", f"needs at least {MIN_READINGS} readings, got {array.size}")
        if not np.isfinite(array).all():
            raise InvalidInputError(f"{field}.{name}", "contains a value that is not a finite number")
        baselines[name] = SensorBaseline(mean=float(array.mean()), std=float(max(array.std(), 1e-6)))
    sensors = [s.model_copy(update={"baseline": baselines.pop(s.name, s.baseline)}) for s in topology.sensors]
    for name, baseline in baselines.items():  # undeclared, resolved from their names
        component, quantity = topology.resolve_sensor(name, field)
        sensors.append(Sensor(name=name, component=component, quantity=quantity, baseline=baseline))  # type: ignore[arg-type]
    return Topology.model_validate({**topology.model_dump(), "id": topology_id or topology.id,
                                    "sensors": [s.model_dump() for s in sensors]})
