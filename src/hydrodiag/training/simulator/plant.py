"""Static analysis of a topology into the lumped hydraulic plant that the simulator integrates.

Runs once per topology (cached): which pumps feed which components (circuits), which side of the
actuators a component sits on, which valve meters which actuator, and the machine's design values.
Design values come from a generator seeded by the topology's identity, so every window of one
topology describes the same machine model; per-unit spread is added later, per window.
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from hydrodiag.topology.schema import Topology

ACTUATORS = ("cylinder", "hydraulic_motor")
DRIVERS = ("electric_motor", "engine")
ROTATING = ("pump", "electric_motor", "engine", "hydraulic_motor", "cooler")


@dataclass
class Circuit:
    """Pumps sharing a pressure line, and what they feed.

    kind: "actuated" (cylinders / hydraulic motors move loads), "pressure_load" (no actuator; the
    last valve imposes the load pressure, like the UCI rig's proportional relief valve) or
    "offline" (no valve and no actuator: a cooling / filtration loop).
    """

    kind: str
    pumps: list[int]
    members: list[int]
    actuators: list[int] = field(default_factory=list)
    pressure_side: list[int] = field(default_factory=list)
    return_side: list[int] = field(default_factory=list)
    load_valves: list[int] = field(default_factory=list)
    pilot: list[int] = field(default_factory=list)
    # Design values of the circuit (bar, l/min).
    p_relief: float = 0.0
    q_nom: float = 0.0


@dataclass
class Plant:
    topology_id: str
    ids: list[str]
    types: list[str]
    n_real: int  # components of the topology; a virtual supply pump may follow them
    reach: np.ndarray  # [C, C] bool: hydraulic path i -> j not through a tank or another pump
    reach_fwd: np.ndarray  # [C, C] bool: as reach, but not through an actuator (supply side only)
    distance: np.ndarray  # [C, C] undirected hop count over all edges (large when unconnected)
    circuits: list[Circuit]
    circuit_of: np.ndarray  # [C] index of the circuit a component belongs to, -1 if none
    driver_of: dict[int, int | None]  # pump -> electric motor / engine on its shaft
    valve_of: dict[int, int | None]  # actuator -> nearest upstream valve that meters it
    path_lines: dict[int, list[tuple[float, float]]]  # component -> (length_m, diameter_mm) from pump
    after_cooler: set[int]  # return-side components downstream of a cooler (see cooled oil)
    tanks: list[int]
    suction: dict[int, list[int]]  # component upstream of pumps (suction filter...) -> those pumps
    design: dict[str, np.ndarray]  # per-component design values (nan where not applicable)

    def of_type(self, *types: str) -> list[int]:
        return [i for i, t in enumerate(self.types) if t in types]


def _parents(start: int, succ: list[list[int]], blocked: set[int]) -> dict[int, int]:
    """Breadth-first parent of every node reachable without expanding through `blocked` nodes."""
    parents = {start: start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node != start and node in blocked:
            continue
        for nxt in succ[node]:
            if nxt not in parents:
                parents[nxt] = node
                queue.append(nxt)
    return parents


def _bfs(start: int, succ: list[list[int]], blocked: set[int]) -> dict[int, int]:
    """Hop count from start to every node reachable without expanding through `blocked` nodes."""
    parents = _parents(start, succ, blocked)
    hops = {start: 0}
    for node in parents:  # breadth-first order: a node's parent always comes before it
        if node != start:
            hops[node] = hops[parents[node]] + 1
    return hops


def _design_rng(topology: Topology) -> np.random.Generator:
    key = topology.id + "|" + ",".join(f"{c.id}:{c.type}" for c in topology.components)
    return np.random.default_rng(zlib.crc32(key.encode("utf-8")))


def build_plant(topology: Topology) -> Plant:
    ids = [c.id for c in topology.components]
    types = [c.type for c in topology.components]
    index = {cid: i for i, cid in enumerate(ids)}
    n_real = len(ids)
    hyd_edges = [e for e in topology.edges if e.type == "hydraulic_line"]
    if "pump" not in types:
        # A machine without a declared pump still needs a flow source: a hidden supply pump
        # feeding every hydraulic component that has no hydraulic predecessor.
        ids.append("__supply__")
        types.append("pump")
    count = len(ids)
    succ: list[list[int]] = [[] for _ in range(count)]
    line_of: dict[tuple[int, int], tuple[float | None, float | None]] = {}
    for e in hyd_edges:
        s, t = index[e.source], index[e.target]
        succ[s].append(t)
        line_of[(s, t)] = (e.length_m, e.diameter_mm)
    if count > n_real:
        has_pred = {index[e.target] for e in hyd_edges}
        for i in range(n_real):
            if i not in has_pred and types[i] not in ("tank", *DRIVERS):
                succ[n_real].append(i)

    undirected: list[list[int]] = [[] for _ in range(count)]
    for e in topology.edges:
        s, t = index[e.source], index[e.target]
        undirected[s].append(t)
        undirected[t].append(s)
    for i in succ[n_real] if count > n_real else []:
        undirected[n_real].append(i)
        undirected[i].append(n_real)
    distance = np.full((count, count), 99, dtype=np.int64)
    for i in range(count):
        for j, d in _bfs(i, undirected, set()).items():
            distance[i, j] = d

    tanks = [i for i, t in enumerate(types) if t == "tank"]
    pumps = [i for i, t in enumerate(types) if t == "pump"]
    blocked = set(tanks) | set(pumps)
    reach = np.zeros((count, count), dtype=bool)
    reaches_tank = np.zeros(count, dtype=bool)
    for i in range(count):
        for j in _bfs(i, succ, blocked):
            if j != i and j not in tanks and not (j in pumps and i != j):
                reach[i, j] = True
            if j in tanks:
                reaches_tank[i] = True

    # Return lines run back through the valve block, so "downstream" on the supply side must not
    # pass through an actuator: otherwise every valve would seem to feed every consumer.
    actuators = {i for i, t in enumerate(types) if t in ACTUATORS}
    reach_fwd = np.zeros((count, count), dtype=bool)
    fwd_hops = np.full((count, count), 99, dtype=np.int64)
    for i in range(count):
        for j, hops in _bfs(i, succ, blocked | actuators).items():
            if j != i and j not in tanks and j not in pumps:
                reach_fwd[i, j] = True
                fwd_hops[i, j] = hops

    circuits, circuit_of = _circuits(types, pumps, reach, reach_fwd, reaches_tank, succ)
    suction: dict[int, list[int]] = {}
    for i in range(count):
        if circuit_of[i] < 0 and types[i] not in ("tank", "pump", *DRIVERS):
            fed = [p for p in _bfs(i, succ, blocked) if p in pumps]
            if fed:
                suction[i] = fed
    _adopt_orphans(types, circuits, circuit_of, set(suction) | set(tanks))

    driver_of: dict[int, int | None] = {}
    for p in pumps:
        coupled = [index[e.source if e.target == ids[p] else e.target] for e in topology.edges
                   if e.type == "mechanical_coupling" and ids[p] in (e.source, e.target)]
        drivers = [d for d in coupled if types[d] in DRIVERS]
        if not drivers:
            candidates = sorted((distance[p, d], d) for d in range(n_real) if types[d] in DRIVERS)
            drivers = [candidates[0][1]] if candidates and candidates[0][0] < 99 else []
        driver_of[p] = drivers[0] if drivers else None

    valve_of: dict[int, int | None] = {}
    path_lines: dict[int, list[tuple[float, float]]] = {}
    for circ in circuits:
        for a in circ.actuators:
            upstream = [v for v in circ.members if types[v] == "valve" and reach_fwd[v, a]]
            valve_of[a] = min(upstream, key=lambda v: (fwd_hops[v, a], v)) if upstream else None
        for p in circ.pumps:
            parents = _parents(p, succ, blocked)
            for m in circ.members:
                if m in parents and m not in path_lines:
                    path_lines[m] = _lines_to(m, parents, line_of)

    after_cooler = {j for circ in circuits for c in circ.return_side if types[c] == "cooler"
                    for j in circ.return_side if reach[c, j]}
    plant = Plant(topology.id, ids, types, n_real, reach, reach_fwd, distance, circuits, circuit_of, driver_of,
                  valve_of, path_lines, after_cooler, tanks, suction, {})
    _design(plant, _design_rng(topology))
    return plant


def _circuits(types: list[str], pumps: list[int], reach: np.ndarray, reach_fwd: np.ndarray,
              reaches_tank: np.ndarray, succ: list[list[int]]) -> tuple[list[Circuit], np.ndarray]:
    # Pumps whose reach overlaps share one pressure line (e.g. two main pumps on one valve block).
    groups: list[list[int]] = []
    for p in pumps:
        merged = [g for g in groups if any((reach[p] & reach[q]).any() for q in g)]
        for g in merged:
            groups.remove(g)
        groups.append(sorted({p, *(q for g in merged for q in g)}))
    circuit_of = np.full(len(types), -1, dtype=np.int64)
    circuits: list[Circuit] = []
    for group in groups:
        members = sorted({int(j) for p in group for j in np.flatnonzero(reach[p]) if j not in group})
        acts = [m for m in members if types[m] in ACTUATORS]
        circ = Circuit(kind="offline", pumps=group, members=members, actuators=acts)
        valves = [m for m in members if types[m] == "valve"]
        if acts:
            circ.kind = "actuated"
            feeds = {m for m in members if m not in acts and any(reach_fwd[m, a] for a in acts)}
            circ.pilot = sorted({int(j) for v in valves if v not in feeds and not reaches_tank[v]
                                 for j in [v, *np.flatnonzero(reach[v])] if j in members})
            accs = {m for m in members if types[m] == "accumulator" and m not in circ.pilot}
            # A valve teed off the pressure line straight to tank is a relief / unloading valve: it
            # sees supply pressure although it feeds no actuator.
            line = set(group) | accs | {m for m in feeds if types[m] != "valve"}
            relief = {v for v in valves if v not in feeds and v not in circ.pilot and reaches_tank[v]
                      and any(v in succ[u] for u in line)}
            circ.pressure_side = sorted(feeds | accs | relief)
        elif valves:
            circ.kind = "pressure_load"
            circ.load_valves = [v for v in valves if not any(reach[v, w] for w in valves if w != v)]
            feeds = {m for m in members if any(reach[m, v] for v in circ.load_valves)}
            accs = {m for m in members if types[m] == "accumulator"}
            circ.pressure_side = sorted(feeds | accs | set(circ.load_valves))
        taken = set(circ.pressure_side) | set(acts) | set(circ.pilot)
        circ.return_side = [m for m in members if m not in taken]
        for i in [*group, *members]:
            if circuit_of[i] < 0:
                circuit_of[i] = len(circuits)
        circuits.append(circ)
    return circuits, circuit_of


def _adopt_orphans(types: list[str], circuits: list[Circuit], circuit_of: np.ndarray, skip: set[int]) -> None:
    """Hydraulic components no pump reaches (missing edges) join the first circuit that fits them."""
    if not circuits:
        return
    main = next((i for i, c in enumerate(circuits) if c.kind == "actuated"), 0)
    for i, ctype in enumerate(types):
        if circuit_of[i] >= 0 or ctype in (*DRIVERS, "tank", "pump") or i in skip:
            continue
        circ = circuits[main]
        circ.members.append(i)
        if ctype in ACTUATORS and circ.kind == "actuated":
            circ.actuators.append(i)
        elif ctype in ("valve", "accumulator", "manifold") and circ.kind != "offline":
            circ.pressure_side.append(i)
        else:
            circ.return_side.append(i)
        circuit_of[i] = main


def _lines_to(target: int, parents: dict[int, int], line_of: dict) -> list[tuple[float, float]]:
    lines = []
    node = target
    while parents[node] != node:
        length, diameter = line_of.get((parents[node], node), (None, None))
        lines.append((length or 0.0, diameter or 0.0))  # 0 = unspecified, sized from flow later
        node = parents[node]
    return lines


def _design(plant: Plant, rng: np.random.Generator) -> None:
    """Design values of the machine model (see docs/SIMULATOR.md, 'Design values')."""
    count = len(plant.types)
    d: dict[str, np.ndarray] = {}

    def put(name: str, members: list[int], lo: float, hi: float, log: bool = False) -> None:
        arr = d.setdefault(name, np.full(count, np.nan))
        for i in members:
            arr[i] = np.exp(rng.uniform(np.log(lo), np.log(hi))) if log else rng.uniform(lo, hi)

    every = list(range(count))
    put("displacement_cc", plant.of_type("pump"), 10.0, 125.0, log=True)
    put("leak_coeff", plant.of_type("pump"), 0.03, 0.07)
    put("eta_hm", plant.of_type("pump"), 0.88, 0.94)
    put("n_set", plant.of_type("engine"), 1600.0, 2000.0)
    put("n_set", plant.of_type("electric_motor"), 1500.0, 1500.0)
    put("vib_base", every, 0.4, 1.6)
    put("q_share", plant.of_type(*ACTUATORS), 0.5, 0.9)
    put("v_max", plant.of_type("cylinder"), 0.05, 0.4)
    put("stroke_mm", plant.of_type("cylinder"), 400.0, 2500.0)
    put("area_ratio", plant.of_type("cylinder"), 0.45, 0.7)
    put("n_max", plant.of_type("hydraulic_motor"), 600.0, 2500.0)
    put("tau_valve", plant.of_type("valve"), 0.03, 0.12)
    put("spool_mm", plant.of_type("valve"), 5.0, 12.0)
    put("v0_seconds", plant.of_type("accumulator"), 2.0, 8.0)
    put("precharge_ratio", plant.of_type("accumulator"), 0.55, 0.8)
    put("dp_clean", plant.of_type("filter"), 0.3, 1.2)
    put("dp_bypass", plant.of_type("filter"), 3.0, 5.0)
    put("dp_cooler", plant.of_type("cooler"), 0.3, 1.5)
    put("eps_nom", plant.of_type("cooler"), 0.3, 0.55)
    put("fan_rpm", plant.of_type("cooler"), 1200.0, 3000.0)
    put("fan_w", plant.of_type("cooler"), 300.0, 3000.0, log=True)
    put("level0", plant.tanks, 60.0, 85.0)
    put("iso_code", plant.tanks, 14.0, 17.0)
    plant.design = d
    main = [p for c in plant.circuits if c.kind != "offline" for p in c.pumps]
    for circ in plant.circuits:
        if circ.kind == "offline" and main:
            # A cooling / filtration loop is sized on the working circuit it serves.
            for p in circ.pumps:
                d["displacement_cc"][p] = rng.uniform(0.5, 1.5) * float(np.mean(d["displacement_cc"][main]))
    for circ in plant.circuits:
        if any(plant.types[m] == "accumulator" for m in circ.pressure_side):
            # With an accumulator on the line, consumers are sized for peaks above pump delivery.
            for a in circ.actuators:
                d["q_share"][a] = rng.uniform(1.6, 2.5)
    for circ in plant.circuits:
        lo, hi = {"actuated": (200.0, 350.0), "pressure_load": (150.0, 250.0), "offline": (6.0, 15.0)}[circ.kind]
        circ.p_relief = float(rng.uniform(lo, hi))
        n_rated = [1500.0 if (dr := plant.driver_of.get(p)) is None else float(d["n_set"][dr]) for p in circ.pumps]
        circ.q_nom = float(sum(d["displacement_cc"][p] * n / 1000.0 * 0.95 for p, n in zip(circ.pumps, n_rated,
                                                                                            strict=True)))
    # Thermal design: temperature rise above ambient at the design heat load, and the share of heat
    # that leaves through tank and pipe walls rather than the cooler.
    plant.design["dT_design"] = np.array([rng.uniform(15.0, 35.0)])
    plant.design["ambient_share"] = np.array([rng.uniform(0.2, 0.4)])
    plant.design["tank_minutes"] = np.array([rng.uniform(1.5, 3.0)])
    plant.design["pilot_bar"] = np.array([rng.uniform(30.0, 45.0)])
