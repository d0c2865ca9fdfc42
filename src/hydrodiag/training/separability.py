"""How well a simulated machine's faults can be told from its normal, with and without commissioning.

Issue 3's held-out-topology test scores each window as a new unit in a new situation, read against
what is normal for the machine type. This measures how much of that test the windows allow at all,
and what commissioning each unit (its own healthy readings, `hydrodiag commission`) would add: a
model trained on a fleet of units and scored on new units of the same machine, with three readings
of a window:

- `fleet`: the window as measured (what the held-out test gives a model),
- `own unit`: the window standardised by its unit's commissioning mean and spread per sensor, plus
  each statistic minus its mean over the unit's commissioning windows,
- `both`: the two side by side.

Two models (MODELS): `forest`, the baseline's random forest on seven window statistics per sensor;
`trees`, gradient-boosted trees on those statistics and on every value and step-to-step change of
each sensor (the features of `hydrodiag ceiling`), which can threshold a single second of one sensor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hydrodiag.topology.schema import Topology
from hydrodiag.training.baseline import (
    forest_detections,
    gradient_boosting_detections,
    values_and_differences,
    window_statistics,
)
from hydrodiag.training.evaluate import detection_metrics
from hydrodiag.training.simulator import Fleet, simulate_fleet

READINGS = ("fleet", "own unit", "both")
Detector = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]
# Each model with whether it also reads every value and change of the series (`readings(every_value)`).
MODELS: dict[str, tuple[Detector, bool]] = {"forest": (forest_detections, False),
                                            "trees": (gradient_boosting_detections, True)}


def readings(fleet: Fleet, every_value: bool = False) -> dict[str, np.ndarray]:
    """Per-window features of every reading in READINGS (each statistic computed once); with
    `every_value`, each reading also carries every value and change of the series it reads."""
    series = fleet.observed.series.astype(np.float64)
    measured = window_statistics(series)
    commissioning = fleet.commissioning.astype(np.float64)  # [U, K, S, T]
    units = fleet.unit_of_window
    mean = commissioning.mean(axis=(1, 3))[units][:, :, None]  # [N, S, 1]
    spread = commissioning.std(axis=(1, 3))[units][:, :, None] + 1e-6
    u, k, s, t = commissioning.shape
    usual = window_statistics(commissioning.reshape(u * k, s, t)).reshape(u, k, -1).mean(axis=1)
    standardised = (series - mean) / spread
    own_unit = np.concatenate([window_statistics(standardised), measured - usual[units]], axis=1)
    if every_value:
        measured = np.concatenate([measured, values_and_differences(series)], axis=1)
        own_unit = np.concatenate([own_unit, values_and_differences(standardised)], axis=1)
    return {"fleet": measured, "own unit": own_unit, "both": np.concatenate([measured, own_unit], axis=1)}


def separability(topology: Topology, *, train_units: int, test_units: int, commissioning_windows: int,
                 windows_per_unit: int, seed: int = 0, model: str = "forest",
                 chosen: tuple[str, ...] = READINGS) -> dict[str, Any]:
    """Detection scores (`evaluate.detection_metrics`) of `model` for each `chosen` reading on new units
    of `topology`."""
    if model not in MODELS:
        raise ValueError(f"unknown model '{model}'; known: {', '.join(MODELS)}")
    unknown = [reading for reading in chosen if reading not in READINGS]
    if unknown or not chosen:
        raise ValueError(f"readings must be among {', '.join(READINGS)}; got {', '.join(chosen) or 'none'}")
    train = simulate_fleet(topology, train_units, commissioning_windows, windows_per_unit, seed=seed)
    test = simulate_fleet(topology, test_units, commissioning_windows, windows_per_unit, seed=seed + 1)
    labels = np.asarray(train.observed.system_anomalies)
    detect, every_value = MODELS[model]
    train_features, test_features = readings(train, every_value), readings(test, every_value)
    scores = {reading: detection_metrics(test.observed, detect(train_features[reading], labels,
                                                               test_features[reading], seed))
              for reading in chosen}
    return {"topology": topology.id, "model": model, "train_units": train_units, "test_units": test_units,
            "commissioning_windows": commissioning_windows, "windows_per_unit": windows_per_unit,
            "seed": seed, "readings": scores}
