"""Lumped hydraulics of a circuit: load cycle -> valve lag -> pump delivery -> accumulator -> flows.

Everything is vectorised over windows ([n, T] or [n, consumers, T]); the only loops run over the
time axis of one window (60 steps), where a state (valve spool, accumulator volume) carries over.
Equations and parameter ranges: docs/SIMULATOR.md, section "Hydraulics".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hydrodiag.training.simulator.context import CYCLE_SEGMENTS, Ctx, first_order
from hydrodiag.training.simulator.plant import Circuit

KAPPA = 1.4  # polytropic exponent of accumulator nitrogen in a fast discharge
METER_BAR = 12.0  # pressure margin a metering valve needs to control flow, bar
STANDBY_BAR = 18.0  # pump pressure when no consumer moves (open-centre / load-sensing stand-by), bar


@dataclass
class CircuitState:
    circ: Circuit
    consumers: list[int]  # actuators, or [-1] for the pseudo-consumer of a pressure-load circuit
    p_relief: np.ndarray  # [n, 1]
    p_rated: np.ndarray  # [n, 1] design working pressure
    p_sup: np.ndarray  # [n, T] supply pressure after accumulator support
    q_pump: dict[int, np.ndarray] = field(default_factory=dict)  # delivered flow per pump
    q_th: dict[int, np.ndarray] = field(default_factory=dict)  # displacement x speed per pump
    speed: dict[int, np.ndarray] = field(default_factory=dict)
    q_circuit: np.ndarray | None = None  # [n, T] sum of pump deliveries
    u_cmd: np.ndarray | None = None  # [n, A, T] commanded spool opening, signed
    u: np.ndarray | None = None  # [n, A, T] spool opening after lag, dead band and stick-slip
    p_work: np.ndarray | None = None  # [n, A, T] consumer work-port pressure (lagged)
    hold_s: np.ndarray | None = None  # [n, A, T] seconds since the consumer stopped
    q_act: np.ndarray | None = None  # [n, A, T] flow into each consumer
    q_cap: np.ndarray | None = None  # [n, A, 1] consumer flow at full opening
    q_acc: np.ndarray | None = None  # [n, T] accumulator discharge (+) / charge (-)
    acc_p0: np.ndarray | None = None  # [n, 1] effective gas pre-charge
    surplus: np.ndarray | None = None  # [n, T] pump flow not taken by consumers (bypass / relief)
    dp_restrict: dict[int, np.ndarray] = field(default_factory=dict)  # extra drop of restricted parts
    valve_leak: dict[int, np.ndarray] = field(default_factory=dict)  # internal valve leakage, l/min
    external_leak: np.ndarray | None = None  # [n, T] oil leaving the machine, l/min
    q_return: np.ndarray | None = None  # [n, T] flow back through the return side


def driver_speeds(ctx: Ctx) -> dict[int, np.ndarray]:
    """Shaft speed of every motor / engine: governor or slip droop under the machine's demand."""
    plant, speeds = ctx.plant, {}
    for d in plant.of_type("engine"):
        n_set = ctx.design("n_set", d, 0.04)
        speeds[d] = n_set * (1.0 - 0.06 * ctx.demand) * ctx.jitter(0.004)
    for d in plant.of_type("electric_motor"):
        slip = ctx.unit_uniform(0.02, 0.045, (1,))
        speeds[d] = 1500.0 * (1.0 - slip * ctx.demand) * ctx.jitter(0.0008)
    return speeds


def _commands(ctx: Ctx, circ: Circuit) -> tuple[np.ndarray, np.ndarray]:
    """Signed spool commands and load fractions of each actuator, [n, A, T]."""
    types = ctx.plant.types
    n, a, k = ctx.n, len(circ.actuators), CYCLE_SEGMENTS
    active = ctx.op.random((n, a, k)) < 0.7
    # Cylinders alternate direction from segment to segment so they work back and forth inside
    # their stroke; rotary drives may turn either way.
    alternate = np.where(np.arange(k) % 2 == 0, 1.0, -1.0)
    first = np.where(ctx.op.random((n, a, 1)) < 0.5, -1.0, 1.0)
    free = np.where(ctx.op.random((n, a, k)) < 0.5, -1.0, 1.0)
    is_cyl = np.array([types[i] == "cylinder" for i in circ.actuators])[None, :, None]
    direction = np.where(is_cyl, first * alternate, free) * active
    speed = ctx.op.uniform(0.35, 1.0, (n, a, k)) * ctx.intensity[:, :, None]
    load = np.clip(ctx.demand_k[:, None, :] * ctx.op.uniform(0.5, 1.1, (n, a, k)), 0.05, 1.0)
    return ctx.per_segment(direction * speed), ctx.per_segment(load) * ctx.jitter(0.03)[:, None, :]


def _hold_seconds(moving_cmd: np.ndarray, dt: float) -> np.ndarray:
    k = np.arange(moving_cmd.shape[-1])
    last_move = np.maximum.accumulate(np.where(moving_cmd, k, -1), axis=-1)
    return (k - last_move) * dt * ~moving_cmd


def _restriction(ctx: Ctx, c: int, p_rated: np.ndarray) -> np.ndarray:
    """Extra pressure drop of a restricted pressure-side component at full flow, [n, 1]."""
    return 0.45 * p_rated * ctx.s("flow_restriction", c) ** 1.2


def solve_circuit(ctx: Ctx, circ: Circuit, speeds: dict[int, np.ndarray], back_bar: np.ndarray) -> CircuitState:
    """Supply pressure and flows of one circuit; `back_bar` [n, T] is the return-line back-pressure."""
    plant, n, dt = ctx.plant, ctx.n, ctx.dt
    design = plant.design
    relief_valves = [v for v in circ.pressure_side if plant.types[v] == "valve"]
    p_relief_nom = ctx.vary(circ.p_relief, 0.03)
    # A creeping relief / pressure valve cracks open well below its setting and bleeds oil to tank
    # from there on: pressure above the cracking point is only partly held (`held` below).
    creep = ctx.s_any("pressure_drop", relief_valves)
    p_relief = p_relief_nom * (1.0 - 0.5 * creep)
    p_crack = p_relief_nom * (1.0 - 0.75 * creep)
    p_rated = 0.8 * p_relief_nom
    state = CircuitState(circ, [], p_relief, p_rated, np.zeros((n, ctx.n_samples)))
    for p in circ.pumps:
        d = plant.driver_of.get(p)
        state.speed[p] = speeds[d] if d is not None else 1500.0 * (1.0 - 0.03 * ctx.demand)
        state.q_th[p] = ctx.design("displacement_cc", p) * state.speed[p] / 1000.0

    if circ.kind == "offline":
        # A cooling / filtration loop: the pump only pushes through the return-side resistances.
        state.p_sup = back_bar + 0.5
        _deliver(ctx, state, state.p_sup)
        state.q_return = state.q_circuit
        state.surplus = state.q_circuit
        return state

    if circ.kind == "actuated":
        state.consumers = list(circ.actuators)
        u_cmd, load = _commands(ctx, circ)
        valves = [plant.valve_of.get(a) for a in circ.actuators]
        q_cap = np.stack([ctx.design("q_share", a) * circ.q_nom for a in circ.actuators], axis=1)
        p_load = load * p_rated[:, :, None]
        # Gravity keeps a fraction of the load on a stopped actuator; worn seals and a leaking spool
        # let that holding pressure decay (seal_degradation / valve leakage signatures).
        hold_s = _hold_seconds(u_cmd != 0, dt)
        seal = np.stack([ctx.s("seal_degradation", a) for a in circ.actuators], axis=1)
        vleak = np.stack([ctx.s("leakage", v) if v is not None else np.zeros((n, 1)) for v in valves], axis=1)
        leak = np.stack([ctx.s("leakage", a) for a in circ.actuators], axis=1)
        decay = np.exp(-hold_s * (0.2 * seal + 0.2 * vleak))
        # Piston bypass lets the chambers equalise: a lower, but steady, holding pressure.
        p_hold = 0.55 * p_load * (1.0 - 0.3 * vleak) * (1.0 - 0.5 * leak) * decay
        margin = np.full((n, 1), METER_BAR)
    else:
        state.consumers = [-1]
        valves = list(circ.load_valves)
        level = ctx.per_segment(ctx.op.uniform(0.6, 1.0, (n, CYCLE_SEGMENTS)))
        u_cmd = (level * ctx.jitter(0.01))[:, None, :]
        p_load = 0.95 * p_relief_nom[:, :, None] * u_cmd
        q_cap = (circ.q_nom * ctx.per_segment(ctx.op.uniform(0.7, 1.2, (n, CYCLE_SEGMENTS))))[:, None, :]
        hold_s = np.zeros_like(u_cmd)
        p_hold = p_load
        margin = None

    if circ.kind == "pressure_load":
        # The load pressure is set through every valve on the pressure side; the slowest one rules.
        ps_valves = [v for v in circ.pressure_side if plant.types[v] == "valve"]
        stiction = ctx.s_any("valve_stiction", ps_valves)[:, :, None]
        tau0 = max([float(design["tau_valve"][v]) for v in ps_valves] or [0.05])
        tau = ctx.vary(tau0)[:, :, None] * (1.0 + 60.0 * stiction)
    else:
        stiction = np.stack([ctx.s_any("valve_stiction", [v] if v is not None else []) for v in valves], axis=1)
        tau = np.stack([ctx.design("tau_valve", v) if v is not None else np.full((n, 1), 0.05)
                        for v in valves], axis=1) * (1.0 + 60.0 * stiction)
        # Pilot-operated spools move only as fast as their pilot supply lets them.
        pilot_valves = [v for v in circ.pilot if plant.types[v] == "valve"]
        tau = tau * (1.0 + 15.0 * ctx.s_any("valve_stiction", pilot_valves)[:, :, None])
    # Stiction: a dead band swallows small commands and the spool moves in stick-slip steps.
    dead = 0.25 * stiction
    magnitude = np.clip((np.abs(u_cmd) - dead) / (1.0 - dead), 0.0, 1.0) * (1.0 - 0.2 * stiction)
    target = np.sign(u_cmd) * magnitude
    p_target = np.where(hold_s > 0, p_hold, p_load)
    lagged = first_order(np.concatenate([target, p_target], axis=1), np.concatenate([tau, tau], axis=1)[..., 0], dt)
    a_count = target.shape[1]
    u, p_work = lagged[:, :a_count], lagged[:, a_count:]
    step = np.maximum(0.2 * stiction, 1e-3)
    u = np.where(stiction > 0.02, np.round(u / step) * step, u)
    state.u_cmd, state.u, state.p_work, state.hold_s, state.q_cap = u_cmd, u, p_work, hold_s, q_cap

    # Restricted parts upstream of a consumer add their drop to the pressure it needs and cut the
    # flow it can get (smaller orifice).
    restrict_bar = np.zeros((n, a_count, 1))
    restrict_flow = np.ones((n, a_count, 1))
    for c in circ.pressure_side:
        s_r = ctx.s("flow_restriction", c)
        if not s_r.any():
            continue
        downstream = [i for i, a in enumerate(state.consumers)
                      if (a >= 0 and plant.reach_fwd[c, a]) or a < 0]
        dp = _restriction(ctx, c, p_rated)
        state.dp_restrict[c] = dp
        restrict_bar[:, downstream] += dp[:, :, None]
        restrict_flow[:, downstream] *= (1.0 - 0.7 * s_r)[:, :, None]

    moving = np.abs(u) > 0.03 if circ.kind == "actuated" else np.ones_like(u, dtype=bool)
    if margin is None:
        need = p_work + restrict_bar
    else:
        need = p_work + margin[:, :, None] + back_bar[:, None, :] + restrict_bar
    stalled = moving & (need > p_relief[:, :, None])
    p_need = np.where(moving, need, 0.0).max(axis=1)
    p_req = p_need
    accs = [m for m in circ.pressure_side if plant.types[m] == "accumulator"]
    # An accumulator circuit is a constant-pressure system: the pump keeps the accumulator charged
    # to its cut-out pressure and the metering valves throttle down to each load.
    p_charge = ctx.unit_uniform(0.8, 0.92, (1,)) * p_relief_nom
    floor = p_charge if accs and circ.kind == "actuated" else STANDBY_BAR + back_bar
    p_req = np.minimum(np.maximum(p_req, floor), p_relief)
    held = np.minimum(p_req, p_crack + 0.35 * np.maximum(p_req - p_crack, 0.0))
    # Consumers needing more than the held pressure get less flow (orifice law on the margin left).
    scale = (margin[:, :, None] if margin is not None else 0.1 * p_rated[:, :, None])
    starved = np.clip(1.0 - (need - held[:, None, :]) / scale, 0.0, 1.0)
    p_need = np.minimum(p_need, held)
    p_req = held

    q_demand = np.abs(u) * q_cap * restrict_flow * ~stalled if circ.kind == "actuated" else q_cap * restrict_flow
    q_demand = q_demand * np.where(creep[:, :, None] > 0, starved, 1.0)
    leak_total = np.zeros((n, ctx.n_samples))
    for v in [*circ.pressure_side, *circ.pilot]:
        if plant.types[v] == "valve" and ctx.s("leakage", v).any():
            state.valve_leak[v] = 0.4 * ctx.s("leakage", v) * circ.q_nom * np.sqrt(p_req / p_rated)
            leak_total += state.valve_leak[v]
    external = np.zeros((n, ctx.n_samples))
    for m in circ.pressure_side:
        if plant.types[m] == "manifold":
            external += 0.2 * ctx.s("leakage", m) * circ.q_nom * np.sqrt(p_req / p_rated)
    state.external_leak = external

    _deliver(ctx, state, p_req)
    assert state.q_circuit is not None
    q_c = state.q_circuit
    demand_total = q_demand.sum(axis=1) + leak_total + external
    deficit = np.maximum(demand_total - q_c, 0.0)
    surplus = np.maximum(q_c - demand_total, 0.0)
    ratio = np.clip(q_c / np.maximum(demand_total, 1e-9), 0.0, 1.0)
    # Orifice law: with too little flow the pressure a consumer's orifice builds falls with the
    # square of the flow ratio (only the metering margin in an actuated circuit).
    drop = (margin if margin is not None else p_need) * (1.0 - ratio**2)
    p_floor = np.minimum(np.maximum(p_need - drop, back_bar), p_req)

    v0 = sum((ctx.design("v0_seconds", a) * circ.q_nom / 60.0 for a in accs), np.zeros((n, 1)))
    p0 = np.zeros((n, 1))
    for a in accs:
        charged = p_charge if circ.kind == "actuated" else p_rated
        p0_a = ctx.design("precharge_ratio", a) * charged * (1.0 - 0.7 * ctx.s("pressure_drop", a))
        p0 = p0 + p0_a * ctx.design("v0_seconds", a) * circ.q_nom / 60.0
    p0 = np.where(v0 > 0, p0 / np.maximum(v0, 1e-9), 1.0)
    state.acc_p0 = p0
    p_sup, q_acc = _accumulate(p_req, p_floor, deficit, surplus, v0, p0, dt)
    state.p_sup, state.q_acc, state.surplus = p_sup, q_acc, surplus
    delivered = np.clip((q_c + np.maximum(q_acc, 0.0)) / np.maximum(demand_total, 1e-9), 0.0, 1.0)
    state.q_act = q_demand * delivered[:, None, :]
    state.p_work = np.minimum(p_work, p_sup[:, None, :] - (margin[:, :, None] if margin is not None else 0.0))
    state.q_return = np.maximum(q_c + q_acc - external, 0.0)
    return state


def _deliver(ctx: Ctx, state: CircuitState, p: np.ndarray) -> None:
    """Pump delivery Q = displacement x speed x volumetric efficiency (leakage, cavitation)."""
    total = np.zeros((ctx.n, ctx.n_samples))
    for pump in state.circ.pumps:
        k_leak = ctx.design("leak_coeff", pump) + 0.4 * ctx.s("leakage", pump)
        eta_v = np.clip(1.0 - k_leak * p / state.p_rated, 0.2, 1.0)
        s_cav = ctx.s("cavitation", pump)
        # Vapour fills part of each displacement chamber: delivery drops, erratically.
        fill = 1.0 - 0.25 * s_cav * (1.0 + 0.6 * np.abs(ctx.op.standard_normal((ctx.n, ctx.n_samples))))
        state.q_pump[pump] = state.q_th[pump] * eta_v * np.clip(fill, 0.3, 1.0)
        total = total + state.q_pump[pump]
    state.q_circuit = total


def _accumulate(p_t: np.ndarray, p_floor: np.ndarray, deficit: np.ndarray, surplus: np.ndarray,
                v0: np.ndarray, p0: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Supply pressure with a gas accumulator covering flow deficits (gas law p V^kappa = const).

    The accumulator can only give the oil it holds between the pump's pressure and the lowest
    pressure the consumers still work with (p_floor): with a lower gas pre-charge that usable
    volume shrinks and the pressure falls faster per litre drawn, i.e. weaker pressure support.
    """
    n, steps = p_t.shape
    v0, p0 = v0[:, 0], p0[:, 0]
    has = v0 > 0
    p = np.empty_like(p_t)
    q_acc = np.zeros_like(p_t)
    debt = np.zeros(n)
    for k in range(steps):
        pt, floor = p_t[:, k], p_floor[:, k]
        gas = v0 * (p0 / np.maximum(pt, p0)) ** (1.0 / KAPPA)
        usable = np.maximum(v0 * (p0 / np.maximum(floor, p0)) ** (1.0 / KAPPA) - gas, 0.0)
        new = np.clip(debt + (deficit[:, k] - 0.5 * surplus[:, k]) * dt / 60.0, 0.0, usable)
        q_acc[:, k] = (new - debt) / dt * 60.0
        debt = new
        p_acc = p0 * (v0 / np.maximum(gas + debt, 1e-12)) ** KAPPA
        supported = np.clip(p_acc, floor, pt)
        p[:, k] = np.where(has, supported, np.where(deficit[:, k] > 0, floor, pt))
    return p, q_acc
