"""`hydrodiag simulate`: simulate a topology and write an .npz plus a JSON sidecar of metadata."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hydrodiag.taxonomy import ANOMALY_TYPES, QUANTITIES
from hydrodiag.topology.schema import Topology
from hydrodiag.topology.templates import TopologyRegistry, load_template_file
from hydrodiag.training.simulator.core import SimulatedBatch, simulate, simulate_degradation
from hydrodiag.training.simulator.faults import DETECTION_FLOOR

PROGRESS_FROM = 2048  # windows; below that a progress bar only flickers


def resolve_topology(name: str) -> Topology:
    """A shipped template id, or a path to a topology JSON file."""
    path = Path(name)
    if path.suffix == ".json" or path.exists():
        return load_template_file(path)
    return TopologyRegistry().get(name, field="--topology")


def sidecar_path(out: Path) -> Path:
    return out.with_suffix(".json")


def write_batch(batch: SimulatedBatch, topology: Topology, out: Path, settings: dict[str, object]) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as handle:
        np.savez_compressed(
            handle,
            series=batch.series,
            component_health=batch.component_health,
            component_anomalies=batch.component_anomalies.astype(np.uint8),
            system_health=batch.system_health,
            system_anomalies=batch.system_anomalies.astype(np.uint8),
            severities=batch.severities,
            sensor_names=np.array(batch.sensor_names),
            sensor_quantities=np.array(batch.sensor_quantities),
            sensor_components=np.array(batch.sensor_components),
            component_ids=np.array(batch.component_ids),
            anomaly_types=np.array(ANOMALY_TYPES),
        )
    meta = {
        "format": "hydrodiag-simulated/1",
        "data_file": out.name,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "topology_id": batch.topology_id,
        "windows": len(batch),
        "samples_per_window": int(batch.series.shape[2]),
        "sample_rate_hz": batch.sample_rate_hz,
        "settings": settings,
        "sensors": [{"name": n, "quantity": q, "unit": QUANTITIES[q].unit, "component": c}
                    for n, q, c in zip(batch.sensor_names, batch.sensor_quantities, batch.sensor_components,
                                       strict=True)],
        "component_ids": batch.component_ids,
        "anomaly_types": list(ANOMALY_TYPES),
        "labels": {
            "component_health": "1 - severity of the worst anomaly present on the component (1 = nominal)",
            "component_anomalies": f"1 where the injected severity >= {DETECTION_FLOOR}",
            "system_health": "min over components",
            "system_anomalies": "any over components",
            "severities": f"injected severity in [0, 1]; faults below {DETECTION_FLOOR} are simulated "
                          "but labelled healthy",
        },
        "counts": {
            "healthy_windows": int((batch.system_health >= 1.0).sum()),
            "windows_with": {a: int(batch.system_anomalies[:, i].sum()) for i, a in enumerate(ANOMALY_TYPES)},
        },
        "topology": topology.model_dump(mode="json", exclude_none=True),
        "docs": "docs/SIMULATOR.md",
    }
    side = sidecar_path(out)
    side.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return side


def run_simulate(topology: str, windows: int, seed: int, out: Path, samples: int, rate: float,
                 fault_fraction: float, max_faults: int, anomaly: str | None, component: str | None,
                 degradation: bool, echo: Callable[[str], None] = print) -> tuple[Path, Path]:
    """Simulate, write `out` (.npz) and its JSON sidecar; returns both paths."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    topo = resolve_topology(topology)
    if degradation and (anomaly is None or component is None):
        raise ValueError("--degradation needs both --anomaly and --component")
    settings: dict[str, object] = {"seed": seed, "mode": "degradation" if degradation else "random",
                                   "anomaly": anomaly, "component": component}
    columns = (TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=windows < PROGRESS_FROM, transient=True) as progress:
        task = progress.add_task("simulate", total=windows)

        def advance(done: int) -> None:
            progress.update(task, completed=done)

        if degradation:
            assert anomaly is not None and component is not None
            batch = simulate_degradation(topo, component, anomaly, windows, seed=seed, n_samples=samples,
                                         sample_rate_hz=rate, progress=advance)
        else:
            faults = _fault_filter(topo, anomaly, component)
            settings.update({"fault_fraction": fault_fraction, "max_faults": max_faults})
            batch = simulate(topo, windows, n_samples=samples, sample_rate_hz=rate, fault_fraction=fault_fraction,
                             max_faults=max_faults, seed=seed, faults=faults, progress=advance)
    side = write_batch(batch, topo, out, settings)
    healthy = int((batch.system_health >= 1.0).sum())
    echo(f"wrote {len(batch)} windows x {len(batch.sensor_names)} sensors x {batch.series.shape[2]} samples "
         f"of '{topo.id}' ({healthy} healthy) to {out} (metadata: {side})")
    return out, side


def _fault_filter(topology: Topology, anomaly: str | None, component: str | None) -> list[tuple[str, str]] | None:
    if anomaly is None and component is None:
        return None
    from hydrodiag.training.simulator.faults import compatible_anomalies

    if anomaly is not None and anomaly not in ANOMALY_TYPES:
        raise ValueError(f"--anomaly: unknown type '{anomaly}'; known: {', '.join(ANOMALY_TYPES)}")
    ids = [component] if component is not None else [c.id for c in topology.components]
    types = {c.id: c.type for c in topology.components}
    if component is not None and component not in types:
        raise ValueError(f"--component: '{component}' is not a component of '{topology.id}'")
    pairs = [(cid, a) for cid in ids for a in compatible_anomalies(types[cid]) if anomaly in (None, a)]
    if not pairs:
        raise ValueError(f"no component of '{topology.id}' can carry {anomaly}"
                         + (f" (component '{component}' is a {types[component]})" if component else ""))
    return pairs
