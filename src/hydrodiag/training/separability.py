"""How well a simulated machine's faults can be told from its normal, with and without commissioning.

Issue 3's held-out-topology test scores each window as a new unit in a new situation, read against
what is normal for the machine type. This measures how much of that test the windows allow at all,
and what commissioning each unit (its own healthy readings, `hydrodiag commission`) would add: one
random forest on the baseline's seven window statistics per sensor, trained on a fleet of units and
scored on new units of the same machine, with three readings of a window:

- `fleet`: the statistics as measured (what the held-out test gives a model),
- `own unit`: the window standardised by its unit's commissioning mean and spread per sensor, plus
  each statistic minus its mean over the unit's commissioning windows,
- `both`: the two side by side.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hydrodiag.topology.schema import Topology
from hydrodiag.training.baseline import forest_detections, window_statistics
from hydrodiag.training.evaluate import detection_metrics
from hydrodiag.training.simulator import Fleet, simulate_fleet

READINGS = ("fleet", "own unit", "both")


def readings(fleet: Fleet) -> dict[str, np.ndarray]:
    """Per-window features of every reading in READINGS (each statistic computed once)."""
    measured = window_statistics(fleet.observed.series.astype(np.float64))
    commissioning = fleet.commissioning.astype(np.float64)  # [U, K, S, T]
    units = fleet.unit_of_window
    mean = commissioning.mean(axis=(1, 3))[units][:, :, None]  # [N, S, 1]
    spread = commissioning.std(axis=(1, 3))[units][:, :, None] + 1e-6
    u, k, s, t = commissioning.shape
    usual = window_statistics(commissioning.reshape(u * k, s, t)).reshape(u, k, -1).mean(axis=1)
    own_unit = np.concatenate([window_statistics((fleet.observed.series - mean) / spread), measured - usual[units]],
                              axis=1)
    return {"fleet": measured, "own unit": own_unit, "both": np.concatenate([measured, own_unit], axis=1)}


def separability(topology: Topology, *, train_units: int, test_units: int, commissioning_windows: int,
                 windows_per_unit: int, seed: int = 0) -> dict[str, Any]:
    """Detection scores (`evaluate.detection_metrics`) of each reading on new units of `topology`."""
    train = simulate_fleet(topology, train_units, commissioning_windows, windows_per_unit, seed=seed)
    test = simulate_fleet(topology, test_units, commissioning_windows, windows_per_unit, seed=seed + 1)
    labels = np.asarray(train.observed.system_anomalies)
    train_features, test_features = readings(train), readings(test)
    scores = {reading: detection_metrics(test.observed, forest_detections(train_features[reading], labels,
                                                                          test_features[reading], seed))
              for reading in READINGS}
    return {"topology": topology.id, "train_units": train_units, "test_units": test_units,
            "commissioning_windows": commissioning_windows, "windows_per_unit": windows_per_unit,
            "seed": seed, "readings": scores}
