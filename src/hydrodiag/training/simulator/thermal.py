"""Heat balance, temperatures, drives, coolers, tank, oil cleanliness and vibration.

Runs after the circuits are solved (it needs their losses and flows); only the oil viscosity,
which the circuits need first, comes from an estimate made before them (`prepare`).
"""

from __future__ import annotations

import numpy as np

from hydrodiag.training.simulator.components import RHO_CP
from hydrodiag.training.simulator.context import Ctx
from hydrodiag.training.simulator.hydraulics import CircuitState
from hydrodiag.training.simulator.plant import ROTATING

MAX_OIL_C = 110.0  # thermal cut-out: machines stop before the oil gets hotter


def prepare(ctx: Ctx, ambient: np.ndarray | None = None) -> None:
    """Ambient temperature, warm-up state and the oil viscosity the hydraulics use."""
    ctx.t_amb = ctx.op_uniform(-5.0, 40.0) if ambient is None else ambient
    warmed = ctx.op.random((ctx.n, 1)) < 0.8
    ctx.warm = np.where(warmed, ctx.op_uniform(0.85, 1.02), ctx.op_uniform(0.3, 0.85))
    estimate = ctx.t_amb + ctx.warm * float(ctx.plant.design["dT_design"][0]) * (0.6 + 0.4 * ctx.intensity)
    ctx.visc = np.exp(-0.035 * (estimate - 40.0))


def _mean(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).mean(axis=-1, keepdims=True)


def finish(ctx: Ctx, states: list[CircuitState], bypass: dict[int, np.ndarray]) -> None:
    plant = ctx.plant
    design = plant.design
    zero = np.zeros((ctx.n, 1))
    heat = zero.copy()
    p_ref = 0.0
    circuit_heat: list[np.ndarray] = []
    for st in states:
        circ = st.circ
        share = {"actuated": 0.35 * 0.5, "pressure_load": 0.8, "offline": 0.05}[circ.kind]
        p_ref += share * circ.p_relief * 0.8 * circ.q_nom / 600.0
        shaft = sum((_mean(ctx.ch[(p, "shaft_kw")]) for p in circ.pumps), zero)
        useful = sum((_mean(ctx.ch[(a, "useful_kw")]) for a in st.consumers if a >= 0), zero)
        # Work done on the loads partly returns as heat (lowering, braking); 60 % leaves the oil.
        circuit_heat.append(shaft - 0.6 * useful)
        heat = heat + circuit_heat[-1]
    coolers = plant.of_type("cooler")
    # The cooling system is sized on the healthy machine's mean heat load (calibrated once per
    # topology, see core._calibrate); the analytic estimate only serves that calibration run.
    if "heat_ref" in design:
        p_ref = float(design["heat_ref"][0])
    ctx.heat_kw = heat
    d_t = ctx.design("dT_design", 0, 0.1)
    g_nom = max(p_ref, 0.05) / d_t
    gamma = float(design["ambient_share"][0]) if coolers else 1.0
    eps_nom = {c: float(design["eps_nom"][c]) for c in coolers}
    # Cooler duty by effectiveness-NTU: Q = eps * C_min * (T_oil_in - T_ambient), where C_min is
    # the smaller of the air-side capacity rate (sized for the design temperature rise) and the
    # oil-side one (oil flow x volumetric heat capacity).
    g_cooler: dict[int, np.ndarray] = {}
    eps: dict[int, np.ndarray] = {}
    c_air = (1.0 - gamma) * g_nom / max(sum(eps_nom.values()), 1e-6)
    for c in coolers:
        eps[c] = eps_nom[c] * (1.0 - 0.97 * ctx.s("overheating", c)) * (1.0 - _mean(bypass.get(c, zero)))
        flow = ctx.get(c, "flow")
        c_oil = RHO_CP * _mean(flow) / 60.0 if flow is not None else np.full((ctx.n, 1), np.inf)
        g_cooler[c] = eps[c] * np.minimum(c_air, c_oil)
    g_total = gamma * g_nom + sum(g_cooler.values(), zero)
    t_ss = ctx.t_amb + heat / g_total
    t_start = ctx.t_amb + ctx.warm * (t_ss - ctx.t_amb)
    tau = ctx.op_uniform(600.0, 2400.0)
    t_oil = np.minimum(t_ss + (t_start - t_ss) * np.exp(-ctx.t / tau), MAX_OIL_C)
    ctx.put(-1, "t_oil", t_oil)

    for tank in plant.tanks:
        ctx.put(tank, "temp", t_oil)
    for comp in plant.suction:
        ctx.put(comp, "temp", t_oil)
    for st, c_heat in zip(states, circuit_heat, strict=True):
        _circuit_temperatures(ctx, st, t_oil, c_heat, g_cooler, eps)
    _drives(ctx, states, t_oil)
    _tank_and_particles(ctx, states)
    _vibration(ctx, states)


def _circuit_temperatures(ctx: Ctx, st: CircuitState, t_oil: np.ndarray, heat: np.ndarray,
                          g_cooler: dict[int, np.ndarray], eps: dict[int, np.ndarray]) -> None:
    plant, circ = ctx.plant, st.circ
    q_c = _mean(st.q_circuit) if st.q_circuit is not None else np.ones((ctx.n, 1))
    loss = sum((_mean(ctx.ch[(p, "loss_kw")]) for p in circ.pumps), np.zeros((ctx.n, 1)))
    t_press = t_oil + np.clip(loss / (RHO_CP * np.maximum(q_c, 1e-3) / 60.0), 0.0, 8.0)
    for p in circ.pumps:
        ref = _reference(ctx, "loss_ref", p, 0.1 * float(st.p_rated.mean()) * circ.q_nom / len(circ.pumps) / 600.0)
        ctx.put(p, "temp", t_oil + 5.0 * _mean(ctx.ch[(p, "loss_kw")]) / ref + 35.0 * ctx.s("overheating", p))
    for c in [*circ.pressure_side, *circ.pilot]:
        drop = ctx.get(c, "p_diff")
        local = 0.0 if drop is None else 0.04 * np.clip(_mean(drop) + 0.15 * (drop - _mean(drop)), 0.0, 250.0)
        ctx.put(c, "temp", t_press + local)
    for a in st.consumers:
        if a >= 0:
            ctx.put(a, "temp", t_press + 0.02 * _mean(ctx.ch[(a, "p_a")]))
    q_ret = _mean(st.q_return) if st.q_return is not None else q_c
    t_ret = t_oil + np.clip(heat / (RHO_CP * np.maximum(q_ret, 1e-3) / 60.0), 0.0, 15.0)
    outlet: dict[int, np.ndarray] = {}
    for c in circ.return_side:
        if plant.types[c] != "cooler":
            continue
        flow = _mean(ctx.ch[(c, "flow")])
        g = g_cooler.get(c, np.zeros((ctx.n, 1)))
        eps_oil = np.clip(g / (RHO_CP * np.maximum(flow, 1e-3) / 60.0), 0.0, 0.9)
        outlet[c] = t_ret - eps_oil * (t_ret - ctx.t_amb)
        ctx.put(c, "temp_in", t_ret)
        ctx.put(c, "temp_out", outlet[c])
        ctx.put(c, "temp", t_ret)
        ctx.put(c, "cooling_power", g * np.maximum(t_ret - ctx.t_amb, 0.0))
        ctx.put(c, "eff", 100.0 * eps[c])
        fan = np.clip(0.3 + (t_oil - 40.0) / 25.0, 0.3, 1.0)
        ctx.put(c, "speed", ctx.design("fan_rpm", c) * fan)
        ctx.put(c, "power", ctx.design("fan_w", c) * fan**3)
    for c in circ.return_side:
        if plant.types[c] != "cooler":
            cooled = [k for k in outlet if plant.reach[k, c]]
            ctx.put(c, "temp", outlet[cooled[0]] if cooled else t_ret)


def _drives(ctx: Ctx, states: list[CircuitState], t_oil: np.ndarray) -> None:
    plant = ctx.plant
    shaft: dict[int, np.ndarray] = {}
    rated: dict[int, float] = {}
    for st in states:
        for p in st.circ.pumps:
            d = plant.driver_of.get(p)
            if d is None:
                continue
            shaft[d] = shaft.get(d, 0.0) + ctx.ch[(p, "shaft_kw")]
            rated[d] = rated.get(d, 0.0) + st.circ.p_relief * 0.8 * st.circ.q_nom / len(st.circ.pumps) / 540.0
    for d in plant.of_type("electric_motor", "engine"):
        # Rated power: twice the healthy machine's mean shaft power (calibrated), else an estimate.
        p_rated = max(2.0 * _reference(ctx, "shaft_ref", d, rated.get(d, 5.0) / 2.0), 1.0)
        kw = shaft.get(d, 0.03 * p_rated + 0.0 * ctx.demand)
        load = np.clip(kw / p_rated, 0.0, 1.5)
        s_hot = ctx.s("overheating", d)
        if plant.types[d] == "electric_motor":
            eta = ctx.vary(0.93, 0.01) * (1.0 - 0.1 * s_hot) * (1.0 - 0.15 * np.exp(-6.0 * load))
            electric = kw / eta + 0.01 * p_rated
            ctx.put(d, "power", 1000.0 * electric)
            ctx.put(d, "current", 1000.0 * electric / (np.sqrt(3.0) * 400.0 * 0.85))
            ctx.put(d, "eff", 100.0 * kw / electric)
            ctx.put(d, "temp", ctx.t_amb + 35.0 * _mean(load) + 45.0 * s_hot + 0.0 * t_oil)
        else:
            ctx.put(d, "power", 1000.0 * (kw + 0.03 * p_rated))
            ctx.put(d, "eff", 100.0 * (0.25 + 0.13 * np.clip(load, 0, 1)) * (1.0 - 0.15 * s_hot))
            # The thermostat holds the coolant near 88 degC unless the radiator cannot keep up.
            hot_day = np.maximum(ctx.t_amb - 30.0, 0.0) * 0.4
            ctx.put(d, "temp", ctx.vary(88.0, 0.02) + 4.0 * _mean(load) + hot_day + 25.0 * s_hot + 0.0 * t_oil)


def _tank_and_particles(ctx: Ctx, states: list[CircuitState]) -> None:
    plant = ctx.plant
    design = plant.design
    n, steps = ctx.n, ctx.n_samples
    q_total = sum(st.circ.q_nom for st in states) or 1.0
    volume = ctx.design("tank_minutes", 0) * q_total
    leak = np.zeros((n, steps))
    displaced = np.zeros((n, steps))
    returned = np.zeros((n, steps))
    for st in states:
        if st.external_leak is not None:
            leak = leak + st.external_leak
        returned = returned + (st.q_return if st.q_return is not None else 0.0)
        for c in st.circ.return_side:
            if plant.types[c] == "manifold":
                leak = leak + 0.15 * ctx.s("leakage", c) * st.circ.q_nom
        for a in st.consumers:
            if a >= 0:
                leak = leak + ctx.ch[(a, "ext_leak")]
                if (a, "oil_l") in ctx.ch:
                    oil = ctx.ch[(a, "oil_l")]
                    displaced = displaced + oil - oil[:, :1]
    # Oil lost to the outside lowers the level within the window and, because top-ups lag behind,
    # also the level the window starts from.
    lost = np.cumsum(leak, axis=1) * ctx.dt / 60.0
    start = leak.mean(axis=1, keepdims=True) / q_total * 60.0
    dirt_tank = ctx.s_any("contamination", plant.tanks)
    filters = plant.of_type("filter")
    dirt_filter = ctx.s_any("contamination", filters)
    code = ctx.vary(float(np.nanmean(design["iso_code"])) if plant.tanks else 16.0, 0.04)
    code = code + 7.0 * dirt_tank + 2.5 * dirt_filter
    for tank in plant.tanks:
        level0 = ctx.design("level0", tank, 0.05) - start
        ctx.put(tank, "level", level0 - 100.0 * (lost + displaced) / volume)
        ctx.put(tank, "flow", returned)
        ctx.put(tank, "p", 0.02 + 0.0 * returned)
        ctx.put(tank, "particles", code)
    for f in filters:
        # A counter behind the filter sees fewer particles, unless the element is loaded and bypasses.
        ctx.put(f, "particles", code - 2.0 * (1.0 - ctx.s("contamination", f)))


def _vibration(ctx: Ctx, states: list[CircuitState]) -> None:
    plant = ctx.plant
    design = plant.design
    n, steps = ctx.n, ctx.n_samples
    rotating = [c for c in range(len(plant.types)) if plant.types[c] in ROTATING and (c, "speed") in ctx.ch]
    # Only what a vibration sensor reads is computed: the components it sits on and, for a
    # non-rotating one, the rotating machine whose vibration reaches it.
    wanted = set(range(len(plant.types))) if ctx.vibration_read is None else set(ctx.vibration_read)
    nearest = {c: min(rotating, key=lambda r: (plant.distance[c, r], r)) for c in wanted if c not in rotating
               and rotating}
    p_rated = {p: st.p_rated for st in states for p in st.circ.pumps}
    for c in rotating:
        if c not in wanted and c not in nearest.values():
            continue
        ctype = plant.types[c]
        speed = np.abs(ctx.ch[(c, "speed")])
        ref = {"pump": 1500.0, "electric_motor": 1500.0}.get(ctype)
        if ref is None:
            key = {"engine": "n_set", "hydraulic_motor": "n_max", "cooler": "fan_rpm"}[ctype]
            ref = float(design[key][c])
        ratio = speed / ref
        base = ctx.design("vib_base", c, 0.15) * (2.5 if ctype == "engine" else 1.0) * ratio
        ripple = 0.6 * ctx.ch[(c, "p_out")] / p_rated[c] if c in p_rated else 0.0
        # Imbalance / misalignment: a once-per-revolution component growing with speed squared,
        # beating slowly against the twice-per-revolution one.
        s_vib = ctx.s("vibration_anomaly", c)
        beat = 1.0 + 0.5 * np.sin(2 * np.pi * ctx.t / ctx.op_uniform(4.0, 12.0) + ctx.op_uniform(0.0, 6.3))
        imbalance = 7.0 * s_vib * ratio**2 * beat
        # Cavitation: broadband, erratic, growing with flow.
        s_cav = ctx.s("cavitation", c)
        flow = ctx.ch.get((c, "flow"), np.ones((n, steps)))
        q_ref = _flow_reference(ctx, states, c)
        cav = 6.0 * s_cav * np.abs(flow) / q_ref * np.abs(1.0 + 0.8 * ctx.op.standard_normal((n, steps)))
        rms = np.sqrt(base**2 + ripple**2 + imbalance**2 + cav**2 + 0.01)
        ctx.put(c, "vib", rms * (1.0 + 0.03 * ctx.op.standard_normal((n, steps))))
    for c in sorted(wanted):
        if c in rotating:
            continue
        near = nearest.get(c)
        carried = 0.0
        if near is not None and plant.distance[c, near] < 99:
            carried = 0.3 * 0.5 ** (plant.distance[c, near] - 1) * ctx.ch[(near, "vib")]
        flow_c = ctx.ch.get((c, "flow"))
        circ = plant.circuit_of[c]
        q_nom = states[circ].circ.q_nom if circ >= 0 else 1.0
        turbulence = 0.15 * np.abs(flow_c) / q_nom if flow_c is not None else 0.0
        ctx.put(c, "vib", np.asarray(0.1 + carried + turbulence))


def _flow_reference(ctx: Ctx, states: list[CircuitState], c: int) -> float:
    design = ctx.plant.design
    if ctx.plant.types[c] == "pump":
        return float(design["displacement_cc"][c]) * 1.5
    circ = ctx.plant.circuit_of[c]
    if ctx.plant.types[c] == "hydraulic_motor" and circ >= 0:
        return float(design["q_share"][c]) * states[circ].circ.q_nom
    return 1.0


def _reference(ctx: Ctx, name: str, component: int, fallback: float) -> float:
    values = ctx.plant.design.get(name)
    if values is None or not np.isfinite(values[component]) or values[component] <= 0:
        return max(fallback, 1e-6)
    return float(values[component])
