"""Channels of hydraulic components once their circuit is solved: what a sensor on them could read.

Channel names: p (static pressure), p_in / p_out (upstream / downstream port), p_a / p_b (actuator
ports: cap / rod side, motor port A / B), p_diff (drop across), flow, speed, power, eff, pos,
force, level, current. Temperatures, vibration and particle counts are added in thermal.py.
"""

from __future__ import annotations

import numpy as np

from hydrodiag.training.simulator.context import Ctx
from hydrodiag.training.simulator.hydraulics import KAPPA, CircuitState
from hydrodiag.training.simulator.plant import Circuit

# Oil: density (kg/m3) x kinematic viscosity of ISO VG46 at 40 degC (m2/s) = dynamic viscosity, Pa s.
MU_40 = 870.0 * 46e-6
# Volumetric heat capacity of mineral oil, kJ/(l K).
RHO_CP = 1.7


def return_drops(ctx: Ctx, circ: Circuit, q: np.ndarray) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Pressure drop across every return-side component at return flow q, and cooler bypass shares."""
    plant, design = ctx.plant, ctx.plant.design
    rel = q / max(circ.q_nom, 1e-6)
    drops: dict[int, np.ndarray] = {}
    bypass: dict[int, np.ndarray] = {}
    tank_dirt = ctx.s_any("contamination", plant.tanks)
    for c in circ.return_side:
        ctype = plant.types[c]
        if ctype == "filter":
            clog = 1.0 + 5.0 * ctx.s("contamination", c) ** 1.3 + 1.5 * tank_dirt
            dp = ctx.design("dp_clean", c) * rel * ctx.visc * clog
            drops[c] = np.minimum(dp, float(design["dp_bypass"][c]))  # the bypass valve opens
        elif ctype == "cooler":
            dp = ctx.design("dp_cooler", c) * rel**1.8 * np.sqrt(ctx.visc)
            dp = dp * (1.0 + 25.0 * ctx.s("flow_restriction", c) ** 2)
            # A cooler bypass check valve (about 4 bar) sends part of the oil around a blocked core.
            drops[c] = np.minimum(dp, 4.0)
            bypass[c] = np.clip(1.0 - 4.0 / np.maximum(dp, 1e-6), 0.0, 0.9)
        else:
            dp = 0.5 * rel**2 * ctx.visc
            drops[c] = dp + 10.0 * ctx.s("flow_restriction", c) ** 1.5 * rel**2
    return drops, bypass


def back_pressure(plant_reach: np.ndarray, circ: Circuit, drops: dict[int, np.ndarray], at: int) -> np.ndarray:
    """Pressure upstream of `at` on the return side: the drops of everything between it and the tank."""
    total: np.ndarray | float = 0.3
    after = [d for d in circ.return_side if d == at or plant_reach[at, d]] if at >= 0 else []
    for d in after or circ.return_side:
        total = total + drops[d]
    return np.asarray(total)


def _line_drop(ctx: Ctx, c: int, q_nom: float) -> float:
    """Laminar (Hagen-Poiseuille) drop along the lines from the pump to c at nominal flow, bar."""
    total = 0.0
    q_m3s = q_nom / 60000.0
    for length, diameter in ctx.plant.path_lines.get(c, []):
        d_m = diameter / 1000.0 if diameter else np.sqrt(4 * q_m3s / (np.pi * 5.0))  # 5 m/s design speed
        total += 128.0 * MU_40 * (length or 2.0) * q_m3s / (np.pi * d_m**4) / 1e5
    return total


def circuit_channels(ctx: Ctx, st: CircuitState, drops: dict[int, np.ndarray],
                     bypass: dict[int, np.ndarray]) -> None:
    plant, circ = ctx.plant, st.circ
    q_c = st.q_circuit if st.q_circuit is not None else np.zeros((ctx.n, ctx.n_samples))
    rel = q_c / max(circ.q_nom, 1e-6)
    for p in circ.pumps:
        _pump(ctx, st, p)
    # Pressure side: supply pressure minus line losses and upstream restrictions.
    for c in circ.pressure_side:
        p_c = st.p_sup - _line_drop(ctx, c, circ.q_nom) * ctx.visc * rel
        for r, dp in st.dp_restrict.items():
            if r != c and plant.reach_fwd[r, c]:
                p_c = p_c - dp * np.minimum(rel, 1.0) ** 2
        own = st.dp_restrict.get(c, 0.0) * np.minimum(rel, 1.0) ** 2
        flow = _through(ctx, st, c) + st.valve_leak.get(c, 0.0)
        if plant.types[c] == "valve" and not any(a < 0 or plant.reach_fwd[c, a] for a in st.consumers):
            assert st.surplus is not None
            flow = flow + st.surplus * (st.p_sup >= 0.97 * st.p_relief)  # relief valve blowing off
        ctx.put(c, "p", p_c)
        ctx.put(c, "p_in", p_c)
        relief = plant.types[c] == "valve" and not any(a < 0 or plant.reach_fwd[c, a] for a in st.consumers)
        ctx.put(c, "p_out", 0.3 + 0.0 * p_c if relief else _work_port(ctx, st, c, p_c - own))
        ctx.put(c, "p_diff", p_c - ctx.get(c, "p_out"))  # type: ignore[operator]
        ctx.put(c, "flow", flow)
        if plant.types[c] == "valve":
            _valve(ctx, st, c)
        elif plant.types[c] == "accumulator":
            assert st.acc_p0 is not None and st.q_acc is not None
            ctx.put(c, "level", 100.0 * np.clip(1.0 - (st.acc_p0 / np.maximum(p_c, 1e-3)) ** (1 / KAPPA), 0, 1))
            ctx.put(c, "flow", np.abs(st.q_acc))
    _pilot(ctx, st)
    for i, a in enumerate(st.consumers):
        if a >= 0:
            _actuator(ctx, st, i, a, back_pressure(plant.reach, circ, drops, a) if drops else np.full((1, 1), 0.3))
    q_ret = st.q_return if st.q_return is not None else q_c
    for c in circ.return_side:
        p_in = back_pressure(plant.reach, circ, drops, c)
        leak = 0.15 * ctx.s("leakage", c) * circ.q_nom if plant.types[c] == "manifold" else 0.0
        ctx.put(c, "p", p_in)
        ctx.put(c, "p_in", p_in)
        ctx.put(c, "p_out", p_in - drops[c])
        ctx.put(c, "p_diff", drops[c])
        ctx.put(c, "flow", np.maximum(q_ret * (1.0 - bypass.get(c, 0.0)) - leak, 0.0))


def _pump(ctx: Ctx, st: CircuitState, p: int) -> None:
    design = ctx.plant.design
    n, steps = ctx.n, ctx.n_samples
    q_th, q = st.q_th[p], st.q_pump[p]
    s_cav = ctx.s("cavitation", p)
    # Collapsing vapour bubbles make the outlet pressure spiky (heavy-tailed noise).
    spikes = ctx.op.standard_normal((n, steps)) * np.abs(ctx.op.standard_normal((n, steps)))
    ctx.put(p, "p_out", st.p_sup * (1.0 + 0.004 * ctx.op.standard_normal((n, steps)) + 0.06 * s_cav * spikes))
    ctx.put(p, "p", ctx.get(p, "p_out"))  # type: ignore[arg-type]
    q_ref = max(float(design["displacement_cc"][p]) * 1.5, 1e-6)
    head = ctx.unit_uniform(0.05, 0.3, (1,))
    suction = ctx.unit_uniform(0.05, 0.15, (1,)) * (q_th / q_ref) ** 2 * np.sqrt(ctx.visc)
    for comp, fed in ctx.plant.suction.items():
        if p in fed:
            suction = suction + 0.3 * (1.0 + 5.0 * ctx.s("contamination", comp)) * ctx.visc
    # Cavitation starts where the inlet depression lets the oil release gas and vapour.
    p_in = head - suction - 0.75 * s_cav * (q_th / q_ref) * (1.0 + 0.3 * ctx.op.standard_normal((n, steps)))
    ctx.put(p, "p_in", np.maximum(p_in, -0.95))
    eta_hm = ctx.design("eta_hm", p) * (1.0 - 0.3 * ctx.s("overheating", p))
    shaft_kw = st.p_sup * q_th / (600.0 * eta_hm) + 0.02 * q_ref
    ctx.put(p, "flow", q)
    ctx.put(p, "speed", st.speed[p])
    ctx.put(p, "power", 1000.0 * shaft_kw)
    ctx.put(p, "eff", 100.0 * (st.p_sup * q / 600.0) / np.maximum(shaft_kw, 1e-6))
    ctx.put(p, "shaft_kw", shaft_kw)
    ctx.put(p, "loss_kw", shaft_kw - st.p_sup * q / 600.0)


def _through(ctx: Ctx, st: CircuitState, c: int) -> np.ndarray:
    """Flow through a pressure-side component: the consumers it feeds, plus bypass if it feeds all."""
    assert st.q_act is not None and st.surplus is not None
    if st.consumers == [-1]:
        return st.q_act[:, 0]
    fed = [i for i, a in enumerate(st.consumers) if ctx.plant.reach_fwd[c, a]]
    flow = np.abs(st.q_act[:, fed]).sum(axis=1) if fed else np.zeros((ctx.n, ctx.n_samples))
    if len(fed) == len(st.consumers):
        flow = flow + st.surplus
    return flow


def _metered(ctx: Ctx, st: CircuitState, v: int) -> list[int]:
    if st.consumers == [-1]:
        return [0] if v in st.circ.load_valves or ctx.plant.types[v] == "valve" else []
    return [i for i, a in enumerate(st.consumers) if ctx.plant.valve_of.get(a) == v]


def _work_port(ctx: Ctx, st: CircuitState, c: int, default: np.ndarray) -> np.ndarray:
    assert st.p_work is not None
    if ctx.plant.types[c] != "valve" or (st.consumers == [-1] and c not in st.circ.load_valves):
        return default
    if st.consumers == [-1]:
        return np.broadcast_to(0.5 + 0.0 * default, default.shape)  # the load valve drains to tank
    idx = _metered(ctx, st, c)
    return np.minimum(st.p_work[:, idx].max(axis=1), default) if idx else default


def _valve(ctx: Ctx, st: CircuitState, v: int) -> None:
    assert st.u is not None and st.u_cmd is not None
    idx = _metered(ctx, st, v)
    if not idx:
        idx = [i for i, a in enumerate(st.consumers) if a < 0 or ctx.plant.reach_fwd[v, a]]
    spool = ctx.design("spool_mm", v)
    u = st.u[:, idx[0]] if idx else np.zeros((ctx.n, ctx.n_samples))
    cmd = st.u_cmd[:, idx[0]] if idx else np.zeros((ctx.n, ctx.n_samples))
    ctx.put(v, "pos", spool * u)
    # The solenoid current is the command; only the spool position shows lag and stick-slip.
    ctx.put(v, "current", 0.2 + 1.4 * np.abs(cmd))


def _pilot(ctx: Ctx, st: CircuitState) -> None:
    if not st.circ.pilot or st.u_cmd is None:
        return
    plant = ctx.plant
    valves = [c for c in st.circ.pilot if plant.types[c] == "valve"]
    accs = [c for c in st.circ.pilot if plant.types[c] == "accumulator"]
    p_set = ctx.design("pilot_bar", 0) * (1.0 - 0.4 * ctx.s_any("pressure_drop", valves))
    p_set = p_set * (1.0 - 0.15 * ctx.s_any("leakage", valves))
    # Pilot oil is drawn at every spool movement; a soft pre-charge lets the pilot pressure dip.
    activity = np.clip(np.abs(np.diff(st.u_cmd, axis=2, prepend=st.u_cmd[:, :, :1])).sum(axis=1), 0, 1)
    weak = ctx.s_any("pressure_drop", accs)
    weak = weak + 2.0 * ctx.s_any("flow_restriction", valves)
    p = np.minimum(st.p_sup, p_set) * (1.0 - 0.08 * activity * (1.0 + 4.0 * weak) * (1.0 if accs else 2.0))
    for c in st.circ.pilot:
        ctx.put(c, "p", p)
        ctx.put(c, "p_in", p)
        ctx.put(c, "p_out", p)
        ctx.put(c, "flow", 0.03 * st.circ.q_nom * activity)
        if plant.types[c] == "accumulator":
            p0 = ctx.design("precharge_ratio", c) * p_set * (1.0 - 0.7 * ctx.s("pressure_drop", c))
            ctx.put(c, "level", 100.0 * np.clip(1.0 - (p0 / np.maximum(p, 1e-3)) ** (1 / KAPPA), 0, 1))
        if plant.types[c] == "valve":
            ctx.put(c, "pos", 2.0 * activity)
            ctx.put(c, "current", 0.2 + 1.4 * activity)


def _actuator(ctx: Ctx, st: CircuitState, i: int, a: int, back: np.ndarray) -> None:
    assert st.u is not None and st.p_work is not None and st.q_act is not None and st.q_cap is not None
    plant = ctx.plant
    u, p_work, q_act, q_cap = st.u[:, i], st.p_work[:, i], np.abs(st.q_act[:, i]), st.q_cap[:, i]
    s_leak, s_seal = ctx.s("leakage", a), ctx.s("seal_degradation", a)
    valve = plant.valve_of.get(a)
    s_vleak = ctx.s("leakage", valve) if valve is not None else 0.0
    extend, retract = u > 0.03, u < -0.03
    moving = extend | retract
    # Piston / internal leakage bypasses part of the flow across the piston or rotor.
    bypass = 0.8 * s_leak * q_cap * np.sqrt(np.clip(p_work / st.p_rated, 0, 2)) * moving
    q_eff = np.maximum(q_act * (1.0 - 0.06 * s_seal) - bypass, 0.0)
    ctx.put(a, "flow", q_act)
    if plant.types[a] == "cylinder":
        area = q_cap / 60000.0 / ctx.design("v_max", a)  # m2
        ratio = ctx.design("area_ratio", a, 0.02)
        stroke = ctx.design("stroke_mm", a, 0.01)
        drift = stroke * (0.004 * s_seal + 0.006 * s_leak + 0.004 * s_vleak)
        v = np.where(extend, q_eff / 60000.0 / area, np.where(retract, -q_eff / 60000.0 / (area * ratio), 0.0))
        v = 1000.0 * v - drift * ~moving
        x = np.empty_like(v)
        pos = ctx.op.uniform(0.25, 0.75, ctx.n) * stroke[:, 0]
        for k in range(ctx.n_samples):
            pos = np.clip(pos + v[:, k] * ctx.dt, 0.0, stroke[:, 0])
            x[:, k] = pos
        p_cap = np.where(retract, back, p_work)
        p_rod = np.where(extend, back + 0.5 * s_leak * p_work, np.where(retract, p_work / ratio * 0.6, 0.5 * back))
        ctx.put(a, "pos", x)
        # Extending draws the rod volume out of the tank (m2 x mm = litres).
        ctx.put(a, "oil_l", area * x * (1.0 - ratio))
        ctx.put(a, "p_a", p_cap)
        ctx.put(a, "p_b", p_rod)
        ctx.put(a, "force", (p_cap * area * 1e4 - p_rod * area * ratio * 1e4) / 100.0)
    else:
        disp = q_cap * 1000.0 / ctx.design("n_max", a)
        speed = q_eff * 1000.0 / disp + 40.0 * s_seal * ~moving
        s_cav = ctx.s("cavitation", a)
        noise = ctx.op.standard_normal((ctx.n, ctx.n_samples))
        low = back - (back + 0.8) * s_cav * np.abs(noise) * moving
        # Collapsing bubbles make both port pressures noisy; the low-pressure port dips below zero.
        p_a = np.where(retract, low, p_work) * (1.0 + 0.15 * s_cav * noise)
        p_b = np.where(retract, p_work, low) * (1.0 + 0.15 * s_cav * noise[:, ::-1])
        ctx.put(a, "speed", speed)
        ctx.put(a, "p_a", p_a)
        ctx.put(a, "p_b", p_b)
        ctx.put(a, "power", 1000.0 * 0.9 * p_work * q_eff / 600.0)
        ctx.put(a, "eff", 100.0 * 0.92 * np.where(moving, q_eff / np.maximum(q_act, 1e-6), 0.95))
    ctx.put(a, "p", ctx.get(a, "p_a"))  # type: ignore[arg-type]
    ctx.put(a, "ext_leak", 0.02 * s_seal * q_cap + 0.0 * q_act)
    ctx.put(a, "useful_kw", np.where(moving, p_work * q_eff / 600.0, 0.0))
