"""From component channels to sensor readings: which channel a sensor sees, plus sensor imperfections.

A sensor is read from its quantity and the component it sits on. Where a component carries several
sensors of one quantity, words in the sensor's name (or, failing that, its description) say which
port it sits on ("inlet", "rod", "differential", ...). A quantity the component does not produce
(e.g. speed on a cylinder) is read from the nearest component in the graph that does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from hydrodiag.topology.schema import Topology
from hydrodiag.training.simulator.context import Ctx

# Quantity -> channel of a component that produces it.
BASE_CHANNEL: dict[str, str] = {
    "pressure": "p", "temperature": "temp", "flow": "flow", "vibration": "vib", "power": "power",
    "cooling_power": "cooling_power", "efficiency": "eff", "speed": "speed", "position": "pos",
    "force": "force", "level": "level", "current": "current", "particle_count": "particles",
}
# Port words. Short tokens ("a", "in") only count in sensor names, where they are deliberate.
ROLE_WORDS: dict[str, tuple[str, ...]] = {
    "in": ("inlet", "suction", "upstream", "intake", "supply", "before", "entry"),
    "out": ("outlet", "discharge", "downstream", "delivery", "after", "behind", "exit", "work", "working"),
    "diff": ("differential", "delta", "dp", "drop"),
    "a": ("cap", "bore", "piston", "head", "porta"),
    "b": ("rod", "annulus", "portb"),
}
NAME_ONLY_WORDS: dict[str, tuple[str, ...]] = {"in": ("in",), "out": ("out",), "a": ("a",), "b": ("b",)}
ROLE_CHANNEL: dict[tuple[str, str], str] = {
    ("pressure", "in"): "p_in", ("pressure", "out"): "p_out", ("pressure", "diff"): "p_diff",
    ("pressure", "a"): "p_a", ("pressure", "b"): "p_b",
    ("temperature", "in"): "temp_in", ("temperature", "out"): "temp_out",
}
# Where no word says otherwise: a pump's pressure sensor sits on its outlet, an actuator's on the
# cap / A side, a filter's upstream of the element.
DEFAULT_CHANNEL: dict[tuple[str, str], str] = {
    ("pump", "pressure"): "p_out", ("cylinder", "pressure"): "p_a", ("hydraulic_motor", "pressure"): "p_a",
    ("filter", "pressure"): "p_in", ("cooler", "temperature"): "temp_in",
}
# Quantity -> (white noise abs, white noise rel, offset abs, offset rel, gain sd, resolution).
NOISE: dict[str, tuple[float, float, float, float, float, float]] = {
    "pressure": (0.05, 0.003, 0.3, 0.003, 0.005, 0.0),
    "temperature": (0.05, 0.0, 0.4, 0.0, 0.003, 0.0),
    "flow": (0.02, 0.01, 0.05, 0.01, 0.01, 0.0),
    "vibration": (0.01, 0.04, 0.02, 0.0, 0.03, 0.0),
    "power": (5.0, 0.005, 10.0, 0.005, 0.01, 0.0),
    "cooling_power": (0.01, 0.01, 0.02, 0.01, 0.01, 0.0),
    "efficiency": (0.1, 0.005, 0.5, 0.0, 0.01, 0.0),
    "speed": (0.5, 0.001, 1.0, 0.0, 0.002, 0.0),
    "position": (0.2, 0.001, 1.0, 0.0, 0.002, 0.0),
    "force": (0.1, 0.005, 0.3, 0.005, 0.01, 0.0),
    "level": (0.1, 0.0, 1.0, 0.0, 0.005, 0.0),
    "current": (0.003, 0.005, 0.01, 0.0, 0.01, 0.0),
    "particle_count": (0.2, 0.0, 0.3, 0.0, 0.0, 1.0),
}


@dataclass(frozen=True)
class SensorSpec:
    name: str
    component: int
    quantity: str
    channel: str  # preferred channel on the component


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


def sensor_role(name: str, description: str | None) -> str | None:
    """Port role a sensor's name (first) or description names, or None."""
    tokens = _words(name)
    for role, words in {**ROLE_WORDS}.items():
        if any(w in tokens for w in words + NAME_ONLY_WORDS.get(role, ())):
            return role
    text = _words(description or "")
    hits = [(text.index(w), role) for role, words in ROLE_WORDS.items() for w in words if w in text]
    return min(hits)[1] if hits else None


def sensor_specs(topology: Topology, component_types: list[str]) -> list[SensorSpec]:
    index = topology.component_index()
    specs = []
    for sensor in topology.sensors:
        comp = index[sensor.component]
        role = sensor_role(sensor.name, sensor.description)
        channel = ROLE_CHANNEL.get((sensor.quantity, role or ""))
        if channel is None:
            channel = DEFAULT_CHANNEL.get((component_types[comp], sensor.quantity), BASE_CHANNEL[sensor.quantity])
        specs.append(SensorSpec(sensor.name, comp, sensor.quantity, channel))
    return specs


def _source(ctx: Ctx, spec: SensorSpec) -> np.ndarray:
    base = BASE_CHANNEL[spec.quantity]
    for key in ((spec.component, spec.channel), (spec.component, base)):
        if key in ctx.ch:
            return ctx.ch[key]
    if spec.channel.startswith("p_") and (spec.component, "p") in ctx.ch:
        return ctx.ch[(spec.component, "p")]
    distance = ctx.plant.distance[spec.component]
    holders = [c for (c, name) in ctx.ch if name == base and c >= 0]
    if holders:
        nearest = min(holders, key=lambda c: (distance[c], c))
        return ctx.ch[(nearest, base)]
    if spec.quantity == "temperature":
        return ctx.ch[(-1, "t_oil")]
    return np.zeros((ctx.n, ctx.n_samples))


def read_sensors(ctx: Ctx, specs: list[SensorSpec]) -> np.ndarray:
    """[n, S, T] float32 readings with per-sensor offset and gain (per unit) and white noise."""
    out = np.empty((ctx.n, len(specs), ctx.n_samples), dtype=np.float32)
    # One unit draw for all sensors keeps the unit stream independent of the sensor set's order.
    gains = ctx.unit_normal(1.0, (len(specs),))
    offsets = ctx.unit_normal(1.0, (len(specs),))
    for i, spec in enumerate(specs):
        true = np.asarray(_source(ctx, spec), dtype=np.float64)
        noise_abs, noise_rel, off_abs, off_rel, gain_sd, resolution = NOISE[spec.quantity]
        level = np.abs(true).mean(axis=1, keepdims=True)
        offset = offsets[:, i : i + 1] * (off_abs + off_rel * level)
        white = ctx.op.standard_normal(true.shape) * (noise_abs + noise_rel * np.abs(true))
        value = true * (1.0 + gain_sd * gains[:, i : i + 1]) + offset + white
        if resolution:
            value = np.round(value / resolution) * resolution
        out[:, i] = value
    return out
