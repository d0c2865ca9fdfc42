"""The UCI hydraulic test rig (ZeMA, UCI id 447) at 1 Hz: loading, label mapping, graphs.

Label mapping (issue 2): component health 0 = worst recorded grade, 1 = nominal --
cooler efficiency % -> x/100; valve switching % -> (x-73)/27; pump leakage 0/1/2 -> 1/0.5/0;
accumulator pre-charge bar -> (x-90)/40. Anomalies: degraded cooler -> overheating, valve lag ->
valve_stiction, pump leakage -> leakage, reduced accumulator pressure -> pressure_drop; a component
at health 1.0 has none of its anomaly.

The rig's design of experiment tells more than the four graded conditions, and that is used too:
only those four were varied; every other component (motors, load valve, cooling pump, filter,
tank) was kept nominal and none of the other five failure modes was introduced. So those
components are labelled healthy and those anomaly types absent. Without this the heads for them
never learn what a healthy rig looks like: the interim model trained with them masked called the
tank critical and raised cavitation alarms on nominal cycles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hydrodiag.errors import DatasetError
from hydrodiag.features.graph import build_layout
from hydrodiag.features.window import NormStats, resample_windows
from hydrodiag.taxonomy import ANOMALY_TYPES
from hydrodiag.topology.schema import Topology
from hydrodiag.topology.templates import TopologyRegistry
from hydrodiag.training.samples import LabelSet, NormValues, labelled_graphs

TOPOLOGY_ID = "uci_test_rig"
NUM_CYCLES = 2205
SAMPLES_PER_CYCLE = 60


@dataclass(frozen=True)
class Target:
    """One graded condition of the rig: profile column, grades, health mapping, anomaly type."""

    component: str
    column: int
    grades: tuple[float, ...]
    to_health: Callable[[np.ndarray], np.ndarray]
    anomaly: str

    def health(self, raw: np.ndarray) -> np.ndarray:
        return np.clip(self.to_health(np.asarray(raw, dtype=np.float64)), 0.0, 1.0)

    def grade_healths(self) -> np.ndarray:
        return self.health(np.array(self.grades))

    def nearest_grade(self, predicted_health: np.ndarray) -> np.ndarray:
        """Grade whose health is closest to each prediction (how accuracy is scored)."""
        healths = self.grade_healths()
        index = np.abs(np.asarray(predicted_health)[:, None] - healths[None, :]).argmin(axis=1)
        return np.array(self.grades)[index]


TARGETS: tuple[Target, ...] = (
    Target("cooler", 0, (3.0, 20.0, 100.0), lambda x: x / 100.0, "overheating"),
    Target("valve", 1, (73.0, 80.0, 90.0, 100.0), lambda x: (x - 73.0) / 27.0, "valve_stiction"),
    Target("pump", 2, (0.0, 1.0, 2.0), lambda x: 1.0 - x / 2.0, "leakage"),
    Target("accumulator", 3, (90.0, 100.0, 115.0, 130.0), lambda x: (x - 90.0) / 40.0, "pressure_drop"),
)


@dataclass
class UciData:
    topology: Topology
    sensor_names: list[str]
    raw: np.ndarray  # [cycles, sensors, 60] in each sensor's unit
    profile: np.ndarray  # [cycles, 5]

    @property
    def num_cycles(self) -> int:
        return int(self.raw.shape[0])

    def combinations(self) -> np.ndarray:
        """Integer id of each cycle's (cooler, valve, pump, accumulator) combination."""
        _, ids = np.unique(self.profile[:, :4], axis=0, return_inverse=True)
        return ids.ravel()


def load_uci(data_dir: Path, topology: Topology | None = None) -> UciData:
    data_dir = Path(data_dir)
    if data_dir.name != "uci_hydraulic_1hz" and (data_dir / "uci_hydraulic_1hz").is_dir():
        data_dir = data_dir / "uci_hydraulic_1hz"
    topology = topology or TopologyRegistry().get(TOPOLOGY_ID)
    names = [s.name for s in topology.sensors]
    matrices = []
    for name in names:
        path = data_dir / f"{name}.txt"
        if not path.is_file():
            raise DatasetError(f"UCI data: missing sensor file {path}")
        matrix = np.loadtxt(path, dtype=np.float64)
        if matrix.shape != (NUM_CYCLES, SAMPLES_PER_CYCLE):
            raise DatasetError(f"UCI data: {path} has shape {matrix.shape}, expected (2205, 60)")
        matrices.append(matrix)
    profile_path = data_dir / "profile.txt"
    if not profile_path.is_file():
        raise DatasetError(f"UCI data: missing {profile_path}")
    profile = np.loadtxt(profile_path, dtype=np.float64)
    return UciData(topology=topology, sensor_names=names, raw=np.stack(matrices, axis=1), profile=profile)


def uci_labels(data: UciData, cycles: np.ndarray) -> LabelSet:
    component_ids = [c.id for c in data.topology.components]
    n, c, k = len(cycles), len(component_ids), len(ANOMALY_TYPES)
    labels = LabelSet(
        component_health=np.ones((n, c)), component_health_mask=np.ones((n, c)),
        component_anomalies=np.zeros((n, c, k)), component_anomaly_mask=np.ones((n, c, k)),
        system_health=np.ones(n), system_health_mask=np.ones(n),
        system_anomalies=np.zeros((n, k)), system_anomaly_mask=np.ones((n, k)),
    )
    for target in TARGETS:
        ci = component_ids.index(target.component)
        ai = ANOMALY_TYPES.index(target.anomaly)
        health = target.health(data.profile[cycles, target.column])
        faulty = (health < 1.0).astype(np.float64)
        labels.component_health[:, ci] = health
        labels.component_anomalies[:, ci, ai] = faulty
        labels.system_anomalies[:, ai] = np.maximum(labels.system_anomalies[:, ai], faulty)
        labels.system_health = np.minimum(labels.system_health, health)
    return labels


def uci_windows(data: UciData, cycles: np.ndarray, window: int) -> np.ndarray:
    """[n, sensors, window] through the same resampling as serving (features.window)."""
    return resample_windows(data.raw[cycles], window)


def add_uci_norm_values(values: NormValues, data: UciData, cycles: np.ndarray) -> None:
    values.add(build_layout(data.topology, data.sensor_names), data.raw[cycles])


def uci_graphs(data: UciData, cycles: np.ndarray, norm: NormStats, window: int,
               without_baseline: np.ndarray | None = None) -> list:
    layout = build_layout(data.topology, data.sensor_names)
    return labelled_graphs(layout, uci_windows(data, cycles, window), norm, uci_labels(data, cycles), "uci",
                           without_baseline)
