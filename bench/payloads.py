"""Realistic request bodies: one real UCI cycle (17 sensors x 60 values) and a simulated excavator window.

The bodies are written to files once per run; every server and every load generator posts exactly
the same bytes. Several equipment ids rotate so the health-history store sees a realistic fleet
instead of one machine with an ever-growing history.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UCI_SENSORS = (
    "PS1",
    "PS2",
    "PS3",
    "PS4",
    "PS5",
    "PS6",
    "EPS1",
    "FS1",
    "FS2",
    "TS1",
    "TS2",
    "TS3",
    "TS4",
    "VS1",
    "CE",
    "CP",
    "SE",
)
UCI_TOPOLOGY = "uci_test_rig"
EXCAVATOR_TOPOLOGY = "excavator"
DEFAULT_CYCLE = 0


@dataclass(frozen=True)
class Payload:
    """One kind of request, with bodies for single and batch predictions."""

    name: str
    topology_id: str
    sensor_data: dict[str, list[float]]
    source: str

    @property
    def num_sensors(self) -> int:
        return len(self.sensor_data)

    @property
    def num_values(self) -> int:
        return sum(len(v) for v in self.sensor_data.values())

    def item(self, equipment_id: str) -> dict[str, Any]:
        return {
            "equipment_id": equipment_id,
            "topology_id": self.topology_id,
            "sensor_data": self.sensor_data,
        }

    def single_bodies(self, count: int) -> list[bytes]:
        return [json.dumps(self.item(f"bench-{self.name}-{i:04d}")).encode() for i in range(count)]

    def batch_body(self, size: int) -> bytes:
        items = [self.item(f"bench-{self.name}-batch-{i:04d}") for i in range(size)]
        return json.dumps({"requests": items}).encode()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "topology_id": self.topology_id,
            "sensors": self.num_sensors,
            "values": self.num_values,
            "body_bytes": len(self.single_bodies(1)[0]),
            "source": self.source,
        }


def uci_cycle(data_dir: Path, cycle: int = DEFAULT_CYCLE) -> Payload:
    """Row `cycle` of every sensor file of the UCI rig (one 60-second load cycle)."""
    sensor_data: dict[str, list[float]] = {}
    for name in UCI_SENSORS:
        path = data_dir / f"{name}.txt"
        with path.open(encoding="utf-8") as handle:
            line = next(itertools.islice(handle, cycle, None), None)
        if line is None:
            raise ValueError(f"{path} has no cycle {cycle}")
        sensor_data[name] = [float(v) for v in line.split()]
    return Payload("uci_cycle", UCI_TOPOLOGY, sensor_data, f"{data_dir} cycle {cycle}")


def excavator_window(seed: int = 0) -> tuple[Payload | None, str]:
    """A simulated excavator window, or None and the reason when the simulator is not available."""
    try:
        from hydrodiag.topology.templates import TopologyRegistry
        from hydrodiag.training.simulator import simulate  # type: ignore[import-not-found]
    except ImportError as exc:
        return None, f"excavator payload skipped: simulator not importable ({exc})"
    try:
        topology = TopologyRegistry().get(EXCAVATOR_TOPOLOGY)
        batch = simulate(topology, 1, seed=seed)
        series = batch.series[0]
        sensor_data = {str(name): [round(float(v), 4) for v in series[j]] for j, name in enumerate(batch.sensor_names)}
    except Exception as exc:  # a simulator still being written must not break the benchmark
        return None, f"excavator payload skipped: simulate() failed ({type(exc).__name__}: {exc})"
    return Payload(
        "excavator_window",
        EXCAVATOR_TOPOLOGY,
        sensor_data,
        f"hydrodiag.training.simulator.simulate(excavator, 1, seed={seed})",
    ), ""


def load_payloads(
    data_dir: Path, cycle: int = DEFAULT_CYCLE, with_excavator: bool = True
) -> tuple[list[Payload], list[str]]:
    payloads, notes = [uci_cycle(data_dir, cycle)], []
    if with_excavator:
        excavator, note = excavator_window()
        if excavator is not None:
            payloads.append(excavator)
        else:
            notes.append(note)
    return payloads, notes


def write_bodies(payload: Payload, directory: Path, singles: int = 64, batch: int = 32) -> dict[str, Path]:
    """Bodies as files: `single` holds one request body per line (the load generators rotate them)."""
    directory.mkdir(parents=True, exist_ok=True)
    single = directory / f"{payload.name}.single.ndjson"
    single.write_bytes(b"\n".join(payload.single_bodies(singles)) + b"\n")
    batch_path = directory / f"{payload.name}.batch{batch}.json"
    batch_path.write_bytes(payload.batch_body(batch))
    return {"single": single, "batch": batch_path}
