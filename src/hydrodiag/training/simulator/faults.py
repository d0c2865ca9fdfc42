"""Which anomaly type may be injected into which component type, and how severities become labels.

A fault is (component, anomaly type, severity in [0, 1]); severity 1 is "close to total failure".
The physical meaning of every pair is listed in docs/SIMULATOR.md ("Anomaly x component table").
"""

from __future__ import annotations

import numpy as np

from hydrodiag.taxonomy import ANOMALY_TYPES, COMPONENT_TYPES

# Faults below this severity are simulated but labelled healthy: at that size they drown in
# unit-to-unit spread and operating variation, and calling them anomalies would teach false alarms.
DETECTION_FLOOR = 0.1

COMPATIBILITY: dict[str, tuple[str, ...]] = {
    "pump": ("overheating", "cavitation", "leakage", "vibration_anomaly"),
    "electric_motor": ("overheating", "vibration_anomaly"),
    "engine": ("overheating", "vibration_anomaly"),
    "hydraulic_motor": ("cavitation", "leakage", "vibration_anomaly", "seal_degradation"),
    "valve": ("pressure_drop", "leakage", "flow_restriction", "valve_stiction"),
    "cylinder": ("leakage", "seal_degradation"),
    "accumulator": ("pressure_drop",),
    "cooler": ("overheating", "vibration_anomaly", "flow_restriction"),
    "filter": ("contamination",),
    "tank": ("contamination",),
    "manifold": ("leakage", "flow_restriction"),
}
assert set(COMPATIBILITY) == set(COMPONENT_TYPES), "every component type needs a row"
assert all(a in ANOMALY_TYPES for row in COMPATIBILITY.values() for a in row)

ANOMALY_INDEX: dict[str, int] = {a: i for i, a in enumerate(ANOMALY_TYPES)}


def compatible_anomalies(component_type: str) -> tuple[str, ...]:
    """Anomaly types that can be injected into a component of this type (taxonomy order)."""
    if component_type not in COMPATIBILITY:
        raise ValueError(f"unknown component type '{component_type}'; known: {', '.join(COMPONENT_TYPES)}")
    row = COMPATIBILITY[component_type]
    return tuple(a for a in ANOMALY_TYPES if a in row)


def fault_pairs(component_types: list[str]) -> list[tuple[int, int]]:
    """Every physically meaningful (component index, anomaly index) of a topology."""
    return [(c, ANOMALY_INDEX[a]) for c, ctype in enumerate(component_types) for a in compatible_anomalies(ctype)]


def sample_severities(rng: np.random.Generator, n: int, n_components: int, pairs: list[tuple[int, int]],
                      fault_fraction: float, max_faults: int, incipient_fraction: float) -> np.ndarray:
    """[n, n_components, 9] severities: a random healthy / faulty mix.

    A faulty window carries 1..max_faults faults (k faults with probability proportional to 2^-k),
    each at a severity uniform in [DETECTION_FLOOR, 1]. The anomaly type is drawn uniformly among
    the types this topology supports and then the component among those compatible with it, so
    rare types (one valve, many pumps) are as frequent as common ones. A share of the healthy
    windows carries one sub-floor ("incipient") fault that is labelled healthy.
    """
    sev = np.zeros((n, n_components, len(ANOMALY_TYPES)), dtype=np.float64)
    if not pairs or n == 0:
        return sev
    types = sorted({a for _, a in pairs})
    comps_of = [[c for c, a in pairs if a == t] for t in types]
    table = np.full((len(types), max(len(c) for c in comps_of)), -1, dtype=np.int64)
    for i, comps in enumerate(comps_of):
        table[i, : len(comps)] = comps
    counts = np.array([len(c) for c in comps_of])
    type_arr = np.array(types)

    faulty = rng.random(n) < fault_fraction
    weights = 0.5 ** np.arange(max(max_faults, 1))
    n_faults = 1 + rng.choice(len(weights), size=n, p=weights / weights.sum())
    incipient = ~faulty & (rng.random(n) < incipient_fraction)
    for slot in range(max(max_faults, 1)):
        active = (faulty & (n_faults > slot)) | (incipient & (slot == 0))
        t_idx = rng.integers(0, len(types), size=n)
        c_idx = table[t_idx, (rng.random(n) * counts[t_idx]).astype(np.int64)]
        level = np.where(faulty, rng.uniform(DETECTION_FLOOR, 1.0, n), rng.uniform(0.0, DETECTION_FLOOR * 0.95, n))
        rows = np.flatnonzero(active)
        current = sev[rows, c_idx[rows], type_arr[t_idx[rows]]]
        sev[rows, c_idx[rows], type_arr[t_idx[rows]]] = np.maximum(current, level[rows])
    return sev


def labels_from_severity(sev: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(component_health, component_anomalies, system_health, system_anomalies) from severities.

    An anomaly is present where severity >= DETECTION_FLOOR; a component's health is 1 minus the
    severity of its worst present anomaly (1.0 when none); the system is its worst component.
    """
    present = sev >= DETECTION_FLOOR
    worst = np.where(present, sev, 0.0).max(axis=2) if sev.shape[1] else np.zeros(sev.shape[:2])
    component_health = (1.0 - worst).astype(np.float32)
    component_anomalies = present.astype(np.float32)
    system_health = component_health.min(axis=1) if sev.shape[1] else np.ones(sev.shape[0], np.float32)
    system_anomalies = component_anomalies.max(axis=1) if sev.shape[1] else np.zeros((sev.shape[0], 9), np.float32)
    return component_health, component_anomalies, system_health.astype(np.float32), system_anomalies
