"""Public entry points: random healthy / faulty windows, degradation trajectories, throughput."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hydrodiag.taxonomy import ANOMALY_TYPES
from hydrodiag.topology.schema import Topology
from hydrodiag.training.simulator import thermal
from hydrodiag.training.simulator.components import back_pressure, circuit_channels, return_drops
from hydrodiag.training.simulator.context import Ctx, make_cycle
from hydrodiag.training.simulator.faults import (
    ANOMALY_INDEX,
    compatible_anomalies,
    fault_pairs,
    labels_from_severity,
    sample_severities,
)
from hydrodiag.training.simulator.hydraulics import driver_speeds, solve_circuit
from hydrodiag.training.simulator.plant import Plant, build_plant
from hydrodiag.training.simulator.sensors import SensorSpec, read_sensors, sensor_specs

CHUNK = 1024  # windows simulated together; fixed so that results do not depend on the batch size
ProgressFn = Callable[[int], None]


@dataclass
class SimulatedBatch:
    """Simulated windows and their labels; component order is the topology's."""

    sensor_names: list[str]
    series: np.ndarray  # [n, S, T] float32, canonical units (taxonomy.QUANTITIES)
    component_ids: list[str]
    component_health: np.ndarray  # [n, C] in [0, 1]
    component_anomalies: np.ndarray  # [n, C, 9] in {0, 1}, taxonomy.ANOMALY_TYPES order
    system_health: np.ndarray  # [n]
    system_anomalies: np.ndarray  # [n, 9]
    topology_id: str
    severities: np.ndarray  # [n, C, 9] injected severities, sub-floor ones included
    sensor_quantities: list[str]
    sensor_components: list[str]
    sample_rate_hz: float = 1.0

    def __len__(self) -> int:
        return int(self.series.shape[0])


_PLANTS: dict[str, tuple[Plant, list[SensorSpec]]] = {}
_OBSERVABLE: dict[str, list[tuple[int, int]]] = {}


def _plant(topology: Topology) -> tuple[Plant, list[SensorSpec]]:
    key = topology.model_dump_json()
    if key not in _PLANTS:
        plant = build_plant(topology)
        _calibrate(plant)
        _PLANTS[key] = (plant, sensor_specs(topology, plant.types))
    return _PLANTS[key]


def _calibrate(plant: Plant, windows: int = 64) -> None:
    """Reference loads of the healthy machine: what its cooler and drives are sized for."""
    sev = np.zeros((windows, plant.n_real, len(ANOMALY_TYPES)))
    ctx = _physics(plant, sev, np.random.default_rng(7), np.random.default_rng(8), np.arange(windows), windows,
                   60, 1.0)
    count = len(plant.types)
    loss, shaft = np.full(count, np.nan), np.full(count, np.nan)
    for p in plant.of_type("pump"):
        loss[p] = float(ctx.ch[(p, "loss_kw")].mean())
        driver = plant.driver_of.get(p)
        if driver is not None:
            shaft[driver] = np.nansum([shaft[driver], float(ctx.ch[(p, "shaft_kw")].mean())])
    plant.design["heat_ref"] = np.array([float(ctx.heat_kw.mean())])
    plant.design["loss_ref"] = loss
    plant.design["shaft_ref"] = shaft


def _run(plant: Plant, specs: list[SensorSpec], sev: np.ndarray, op: np.random.Generator,
         unit: np.random.Generator, unit_index: np.ndarray, n_units: int, n_samples: int, dt: float,
         ambient: np.ndarray | None = None) -> np.ndarray:
    """Sensor series [n, S, T] for one chunk; `sev` is [n, C_real, 9]."""
    vibration = {s.component for s in specs if s.quantity == "vibration"}
    ctx = _physics(plant, sev, op, unit, unit_index, n_units, n_samples, dt, ambient, vibration)
    return read_sensors(ctx, specs)


def _physics(plant: Plant, sev: np.ndarray, op: np.random.Generator, unit: np.random.Generator,
             unit_index: np.ndarray, n_units: int, n_samples: int, dt: float,
             ambient: np.ndarray | None = None, vibration_read: set[int] | None = None) -> Ctx:
    n = sev.shape[0]
    full = np.zeros((n, len(plant.types), len(ANOMALY_TYPES)))
    full[:, : plant.n_real] = sev
    ctx = Ctx(plant, n, n_samples, dt, full, op, unit, unit_index, n_units)
    ctx.vibration_read = vibration_read
    make_cycle(ctx)
    thermal.prepare(ctx, ambient)
    speeds = driver_speeds(ctx)
    for d, speed in speeds.items():
        ctx.put(d, "speed", speed)
    states, bypass_all = [], {}
    for circ in plant.circuits:
        estimate, _ = return_drops(ctx, circ, np.full((n, n_samples), circ.q_nom))
        back = np.broadcast_to(back_pressure(plant.reach, circ, estimate, -1), (n, n_samples))
        state = solve_circuit(ctx, circ, speeds, back)
        assert state.q_return is not None
        drops, bypass = return_drops(ctx, circ, state.q_return)
        circuit_channels(ctx, state, drops, bypass)
        states.append(state)
        bypass_all.update(bypass)
    thermal.finish(ctx, states, bypass_all)
    return ctx


def _batch(topology: Topology, plant: Plant, specs: list[SensorSpec], series: np.ndarray, sev: np.ndarray,
           sample_rate_hz: float) -> SimulatedBatch:
    health, anomalies, sys_health, sys_anomalies = labels_from_severity(sev)
    by_id = {s.name: s for s in topology.sensors}
    return SimulatedBatch(
        sensor_names=[s.name for s in specs], series=series, component_ids=plant.ids[: plant.n_real],
        component_health=health, component_anomalies=anomalies, system_health=sys_health,
        system_anomalies=sys_anomalies, topology_id=topology.id, severities=sev.astype(np.float32),
        sensor_quantities=[s.quantity for s in specs],
        sensor_components=[by_id[s.name].component for s in specs], sample_rate_hz=sample_rate_hz)


def _check(n_windows: int, n_samples: int, sample_rate_hz: float) -> None:
    if n_windows < 0:
        raise ValueError("n_windows must be >= 0")
    if n_samples < 2:
        raise ValueError("n_samples must be >= 2")
    if not sample_rate_hz > 0:
        raise ValueError("sample_rate_hz must be > 0")


def simulate(topology: Topology, n_windows: int, *, n_samples: int = 60, sample_rate_hz: float = 1.0,
             fault_fraction: float = 0.6, max_faults: int = 2, seed: int = 0, incipient_fraction: float = 0.15,
             observable_only: bool = True, faults: Sequence[tuple[str, str]] | None = None,
             progress: ProgressFn | None = None) -> SimulatedBatch:
    """A random mix of healthy and faulty windows, each from its own machine unit and situation.

    fault_fraction: share of windows with 1..max_faults faults at severities in [0.1, 1].
    incipient_fraction: share of the healthy windows carrying one fault below the detection floor
    (simulated, labelled healthy). observable_only: inject only (component, type) pairs that change
    at least one of the topology's sensors (a fault no sensor can see would be label noise).
    faults: restrict injection to these (component_id, anomaly_type) pairs (still filtered by
    observability when observable_only). `progress(k)` is called after every chunk with the number
    of windows done.
    """
    _check(n_windows, n_samples, sample_rate_hz)
    if not 0.0 <= fault_fraction <= 1.0 or not 0.0 <= incipient_fraction <= 1.0:
        raise ValueError("fault_fraction and incipient_fraction must lie in [0, 1]")
    if max_faults < 1:
        raise ValueError("max_faults must be >= 1")
    plant, specs = _plant(topology)
    pairs = observable_pairs(topology) if observable_only else fault_pairs(plant.types[: plant.n_real])
    if faults is not None:
        wanted = {(topology.component_index()[c], ANOMALY_INDEX[a]) for c, a in _checked(topology, faults)}
        pairs = [p for p in pairs if p in wanted]
        if not pairs and fault_fraction > 0:
            raise ValueError(f"none of the requested faults is observable with the sensors of '{topology.id}'")
    root = np.random.SeedSequence([seed, 0x5EED])
    label_rng = np.random.default_rng(root.spawn(1)[0])
    sev = sample_severities(label_rng, n_windows, plant.n_real, pairs, fault_fraction, max_faults,
                            incipient_fraction)
    series = np.empty((n_windows, len(specs), n_samples), dtype=np.float32)
    for start in range(0, n_windows, CHUNK):
        stop = min(start + CHUNK, n_windows)
        op_seq, unit_seq = np.random.SeedSequence([seed, 1, start]).spawn(2)
        series[start:stop] = _run(plant, specs, sev[start:stop], np.random.default_rng(op_seq),
                                  np.random.default_rng(unit_seq), np.arange(stop - start), stop - start,
                                  n_samples, 1.0 / sample_rate_hz)
        if progress is not None:
            progress(stop)
    return _batch(topology, plant, specs, series, sev, sample_rate_hz)


def _checked(topology: Topology, faults: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    types = {c.id: c.type for c in topology.components}
    for component, anomaly in faults:
        if component not in types:
            raise ValueError(f"unknown component '{component}' in topology '{topology.id}'")
        if anomaly not in compatible_anomalies(types[component]):
            raise ValueError(f"{anomaly} cannot be injected into {component} (a {types[component]}); "
                             f"compatible: {', '.join(compatible_anomalies(types[component]))}")
    return list(faults)


def severity_ramp(n_windows: int, start: float = 0.0, end: float = 1.0,
                  profile: Literal["linear", "accelerating"] = "linear") -> np.ndarray:
    """Non-decreasing severities from start to end; 'accelerating' wear is slow first, fast last."""
    x = np.linspace(0.0, 1.0, n_windows) if n_windows > 1 else np.ones(n_windows)
    if profile == "accelerating":
        x = np.expm1(3.0 * x) / np.expm1(3.0)
    elif profile != "linear":
        raise ValueError(f"unknown ramp profile '{profile}' (linear, accelerating)")
    return start + (end - start) * x


def simulate_degradation(topology: Topology, component_id: str, anomaly_type: str, n_windows: int, *,
                         seed: int = 0, n_samples: int = 60, sample_rate_hz: float = 1.0,
                         start_severity: float = 0.0, end_severity: float = 1.0,
                         profile: Literal["linear", "accelerating"] = "linear", span_hours: float = 720.0,
                         progress: ProgressFn | None = None) -> SimulatedBatch:
    """One machine unit whose `anomaly_type` on `component_id` worsens over consecutive windows.

    The unit (design spread, sensor offsets) stays the same from window to window; the load cycle
    and noise change, and the ambient temperature follows a daily cycle over `span_hours`.
    """
    _check(n_windows, n_samples, sample_rate_hz)
    plant, specs = _plant(topology)
    index = topology.component_index()
    if component_id not in index:
        raise ValueError(f"unknown component '{component_id}' in topology '{topology.id}'")
    if anomaly_type not in ANOMALY_INDEX:
        raise ValueError(f"unknown anomaly type '{anomaly_type}'; known: {', '.join(ANOMALY_TYPES)}")
    comp = index[component_id]
    if anomaly_type not in compatible_anomalies(plant.types[comp]):
        raise ValueError(f"{anomaly_type} cannot be injected into a {plant.types[comp]} "
                         f"(compatible: {', '.join(compatible_anomalies(plant.types[comp]))})")
    if not 0.0 <= start_severity <= end_severity <= 1.0:
        raise ValueError("need 0 <= start_severity <= end_severity <= 1")
    sev = np.zeros((n_windows, plant.n_real, len(ANOMALY_TYPES)))
    sev[:, comp, ANOMALY_INDEX[anomaly_type]] = severity_ramp(n_windows, start_severity, end_severity, profile)
    base = np.random.default_rng([seed, 2]).uniform(0.0, 30.0)
    hours = np.linspace(0.0, span_hours, n_windows)
    ambient = (base + 6.0 * np.sin(2 * np.pi * (hours - 9.0) / 24.0))[:, None]
    series = np.empty((n_windows, len(specs), n_samples), dtype=np.float32)
    for start in range(0, n_windows, CHUNK):
        stop = min(start + CHUNK, n_windows)
        op = np.random.default_rng(np.random.SeedSequence([seed, 3, start]))
        unit = np.random.default_rng(np.random.SeedSequence([seed, 4]))  # the same unit in every chunk
        series[start:stop] = _run(plant, specs, sev[start:stop], op, unit, np.zeros(stop - start, dtype=np.int64),
                                  1, n_samples, 1.0 / sample_rate_hz, ambient[start:stop])
        if progress is not None:
            progress(stop)
    return _batch(topology, plant, specs, series, sev, sample_rate_hz)


def observable_pairs(topology: Topology, probe_windows: int = 24, threshold: float = 0.05) -> list[tuple[int, int]]:
    """(component, anomaly) pairs whose full-severity fault visibly changes some sensor.

    Probed with common random numbers: the same windows with and without the fault, so any
    difference is the fault's. A pair counts as observable when, for some sensor, the mean absolute
    change exceeds `threshold` x that sensor's spread over the healthy probe windows.
    """
    key = topology.model_dump_json()
    if key in _OBSERVABLE:
        return _OBSERVABLE[key]
    plant, specs = _plant(topology)
    pairs = fault_pairs(plant.types[: plant.n_real])
    if not specs:
        _OBSERVABLE[key] = []
        return []
    sev = np.zeros((probe_windows * (len(pairs) + 1), plant.n_real, len(ANOMALY_TYPES)))
    for i, (c, a) in enumerate(pairs, start=1):
        sev[i * probe_windows : (i + 1) * probe_windows, c, a] = 1.0
    unit_index = np.tile(np.arange(probe_windows), len(pairs) + 1)
    series = np.concatenate([
        _run(plant, specs, sev[i * probe_windows : (i + 1) * probe_windows],
             np.random.default_rng(99), np.random.default_rng(98), unit_index[:probe_windows], probe_windows,
             40, 1.0)
        for i in range(len(pairs) + 1)]).astype(np.float64)
    healthy = series[:probe_windows]
    spread = healthy.std(axis=(0, 2)) + 1e-6
    result = []
    for i, pair in enumerate(pairs, start=1):
        change = np.abs(series[i * probe_windows : (i + 1) * probe_windows] - healthy).mean(axis=(0, 2))
        if (change / spread > threshold).any():
            result.append(pair)
    _OBSERVABLE[key] = result
    return result


def measure_throughput(topology: Topology, n_windows: int = 4096, n_samples: int = 60) -> float:
    """Windows per second of `simulate` on this machine (single process), excluding the first call."""
    simulate(topology, 64, n_samples=n_samples, seed=1)
    began = time.perf_counter()
    simulate(topology, n_windows, n_samples=n_samples, seed=2)
    return n_windows / (time.perf_counter() - began)
