"""A fleet of machine units, each commissioned in normal service and then observed.

`simulate` draws every window from its own unit; here each unit contributes a set of healthy
commissioning windows (what `hydrodiag commission` records on a new machine) and a set of labelled
windows from the same unit (same design spread and sensor offsets, new situations: load cycle,
ambient, noise), so that a diagnosis can be scored against the unit's own normal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hydrodiag.taxonomy import ANOMALY_TYPES
from hydrodiag.topology.schema import Topology
from hydrodiag.training.simulator.core import CHUNK, SimulatedBatch, _batch, _plant, _run, observable_pairs
from hydrodiag.training.simulator.faults import sample_severities


@dataclass
class Fleet:
    commissioning: np.ndarray  # [units, commissioning windows, S, T] float32, healthy
    observed: SimulatedBatch  # units x windows per unit, unit-major
    unit_of_window: np.ndarray  # [len(observed)] index of each observed window's unit


def simulate_fleet(topology: Topology, units: int, commissioning_windows: int, windows_per_unit: int, *,
                   seed: int = 0, n_samples: int = 60, sample_rate_hz: float = 1.0, fault_fraction: float = 0.6,
                   max_faults: int = 2, incipient_fraction: float = 0.15) -> Fleet:
    """`units` units; the observed windows mix healthy and faulty ones as `simulate` does."""
    if units < 1 or commissioning_windows < 1 or windows_per_unit < 1:
        raise ValueError("units, commissioning_windows and windows_per_unit must be >= 1")
    plant, specs = _plant(topology)
    per_unit = commissioning_windows + windows_per_unit
    label_rng = np.random.default_rng(np.random.SeedSequence([seed, 0xF1EE7]))
    observed_sev = sample_severities(label_rng, units * windows_per_unit, plant.n_real, observable_pairs(topology),
                                     fault_fraction, max_faults, incipient_fraction)
    series = np.empty((units, per_unit, len(specs), n_samples), dtype=np.float32)
    units_per_chunk = max(1, CHUNK // per_unit)
    for first in range(0, units, units_per_chunk):
        last = min(first + units_per_chunk, units)
        count = last - first
        sev = np.zeros((count, per_unit, plant.n_real, len(ANOMALY_TYPES)))
        sev[:, commissioning_windows:] = observed_sev[first * windows_per_unit : last * windows_per_unit].reshape(
            count, windows_per_unit, plant.n_real, len(ANOMALY_TYPES))
        op_seq, unit_seq = np.random.SeedSequence([seed, 5, first]).spawn(2)
        chunk = _run(plant, specs, sev.reshape(count * per_unit, plant.n_real, len(ANOMALY_TYPES)),
                     np.random.default_rng(op_seq), np.random.default_rng(unit_seq),
                     np.repeat(np.arange(count), per_unit), count, n_samples, 1.0 / sample_rate_hz)
        series[first:last] = chunk.reshape(count, per_unit, len(specs), n_samples)
    observed = series[:, commissioning_windows:].reshape(units * windows_per_unit, len(specs), n_samples)
    return Fleet(commissioning=series[:, :commissioning_windows],
                 observed=_batch(topology, plant, specs, observed, observed_sev, sample_rate_hz),
                 unit_of_window=np.repeat(np.arange(units), windows_per_unit))
