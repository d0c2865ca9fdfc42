"""Shared state of one simulated chunk of windows: random streams, time axis, severities, channels.

Two random streams keep degradation trajectories honest: `unit` draws belong to the physical machine
(manufacturing spread, sensor offsets) and are shared by every window of a trajectory, `op` draws
belong to the operating situation (load cycle, ambient, noise) and differ from window to window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hydrodiag.training.simulator.faults import ANOMALY_INDEX
from hydrodiag.training.simulator.plant import Plant

# Relative standard deviation of a design value from one machine unit to the next.
UNIT_SPREAD = 0.06
# Segments of the repeating load cycle (each with its own commands and loads).
CYCLE_SEGMENTS = 6


@dataclass
class Ctx:
    plant: Plant
    n: int
    n_samples: int
    dt: float
    sev: np.ndarray  # [n, C, 9] injected severities
    op: np.random.Generator
    unit: np.random.Generator
    unit_index: np.ndarray  # [n] which unit draw a window uses
    n_units: int
    t: np.ndarray = field(init=False)  # [1, T] seconds since window start
    ch: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)  # (component, channel) -> [n, T]
    _unit_cache: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    vibration_read: set[int] | None = None  # components whose vibration a sensor reads (None = all)
    heat_kw: np.ndarray = field(init=False)  # [n, 1] heat put into the oil, window mean
    segment: np.ndarray = field(init=False)  # [n, T] load-cycle segment index
    intensity: np.ndarray = field(init=False)  # [n, 1] operator aggressiveness
    demand_k: np.ndarray = field(init=False)  # [n, K] demand index of each load-cycle segment
    demand: np.ndarray = field(init=False)  # [n, T] machine-level demand index in [0, 1]
    t_amb: np.ndarray = field(init=False)  # [n, 1] ambient temperature, degC
    visc: np.ndarray = field(init=False)  # [n, 1] oil viscosity relative to 40 degC
    warm: np.ndarray = field(init=False)  # [n, 1] how far the oil has warmed toward steady state

    def __post_init__(self) -> None:
        self.t = (np.arange(self.n_samples, dtype=np.float64) * self.dt)[None, :]
        self.heat_kw = np.zeros((self.n, 1))

    # Severity of one anomaly type on one component, [n, 1].
    def s(self, anomaly: str, component: int) -> np.ndarray:
        return self.sev[:, component, ANOMALY_INDEX[anomaly]][:, None]

    def s_any(self, anomaly: str, components: list[int]) -> np.ndarray:
        if not components:
            return np.zeros((self.n, 1))
        return self.sev[:, components, ANOMALY_INDEX[anomaly]].max(axis=1)[:, None]

    def unit_uniform(self, lo: float, hi: float, size: tuple[int, ...] = ()) -> np.ndarray:
        draw = self.unit.uniform(lo, hi, (self.n_units, *size))
        return draw[self.unit_index]

    def unit_normal(self, scale: float, size: tuple[int, ...] = ()) -> np.ndarray:
        return self.unit.normal(0.0, scale, (self.n_units, *size))[self.unit_index]

    def vary(self, value: float, rel: float = UNIT_SPREAD) -> np.ndarray:
        """A design value with unit-to-unit spread, [n, 1]."""
        return value * (1.0 + np.clip(self.unit_normal(rel, (1,)), -3 * rel, 3 * rel))

    def design(self, name: str, component: int, rel: float = UNIT_SPREAD) -> np.ndarray:
        """A component's design value with this unit's spread, [n, 1]; the same draw on every call."""
        key = (name, component)
        if key not in self._unit_cache:
            self._unit_cache[key] = self.vary(float(self.plant.design[name][component]), rel)
        return self._unit_cache[key]

    def op_uniform(self, lo: float, hi: float, size: tuple[int, ...] = (1,)) -> np.ndarray:
        return self.op.uniform(lo, hi, (self.n, *size))

    def jitter(self, amplitude: float) -> np.ndarray:
        """Smooth relative operating fluctuation 1 + a*sin(2 pi f t + phi), [n, T]."""
        freq = self.op_uniform(0.03, 0.25)
        phase = self.op_uniform(0.0, 2 * np.pi)
        return 1.0 + amplitude * np.sin(2 * np.pi * freq * self.t + phase)

    def per_segment(self, values: np.ndarray) -> np.ndarray:
        """Gather [n, K] or [n, A, K] per-segment values onto the time axis -> [n, T] / [n, A, T]."""
        if values.ndim == 2:
            return np.take_along_axis(values, self.segment, axis=1)
        idx = np.broadcast_to(self.segment[:, None, :], (values.shape[0], values.shape[1], self.n_samples))
        return np.take_along_axis(values, idx, axis=2)

    def put(self, component: int, name: str, value: np.ndarray) -> None:
        self.ch[(component, name)] = np.broadcast_to(value, (self.n, self.n_samples))

    def get(self, component: int, name: str) -> np.ndarray | None:
        return self.ch.get((component, name))


def make_cycle(ctx: Ctx) -> None:
    """The repeating load cycle: period, segment boundaries and the window's place in it."""
    period = ctx.op_uniform(20.0, 60.0)
    widths = ctx.op_uniform(0.5, 1.5, (CYCLE_SEGMENTS,))
    bounds = np.cumsum(widths, axis=1) / widths.sum(axis=1, keepdims=True)
    start = ctx.op_uniform(0.0, 1.0) * period
    phase = ((start + ctx.t) % period) / period
    ctx.segment = (phase[:, :, None] >= bounds[:, None, :-1]).sum(axis=2)
    ctx.intensity = ctx.op_uniform(0.45, 1.0)
    ctx.demand_k = ctx.op_uniform(0.2, 1.0, (CYCLE_SEGMENTS,))
    ctx.demand = ctx.per_segment(ctx.demand_k) * ctx.intensity


def first_order(target: np.ndarray, tau: np.ndarray, dt: float) -> np.ndarray:
    """Interval means of a first-order lag driven by a target held constant over each sample interval.

    `target` is [..., T], `tau` broadcasts to target[..., 0]. The mean over an interval of length dt
    that starts at y0 under input u is u + (y0 - u) * tau/dt * (1 - exp(-dt/tau)), which is what an
    averaging data logger records; the lag therefore shows at any sample rate.
    """
    tau = np.maximum(tau, 1e-6)
    decay = np.exp(-dt / tau)
    mean_gain = tau / dt * (1.0 - decay)
    out = np.empty_like(target)
    state = target[..., 0].copy()
    for k in range(target.shape[-1]):
        u = target[..., k]
        out[..., k] = u + (state - u) * mean_gain
        state = u + (state - u) * decay
    return out
