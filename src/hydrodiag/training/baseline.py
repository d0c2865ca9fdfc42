"""The random-forest baselines the evaluation report compares against.

Seven statistics of each sensor's cycle (mean, std, min, max, median, slope, mean absolute first
difference) feed one random forest per UCI target that classifies the grade directly, and, on
simulated windows, one multi-output forest that detects the 9 anomaly types of one machine.

A stronger reference (`hydrodiag ceiling`): gradient-boosted trees on every raw value of every
sensor and on their first differences, which can threshold one second of one sensor (the pressure
step after a valve switch); it answers how much of a UCI target the 1 Hz data allows at all, and
(`hydrodiag separability --model trees`) how separable a simulated machine's faults are.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

from hydrodiag.training.datasets.uci import TARGETS, Target, UciData


def window_statistics(raw: np.ndarray) -> np.ndarray:
    """[n, sensors, T] -> [n, sensors * 7] features."""
    t = np.arange(raw.shape[2], dtype=np.float64)
    t_centred = t - t.mean()
    slope = (raw * t_centred).sum(axis=2) / (t_centred**2).sum()
    features = np.stack(
        [raw.mean(2), raw.std(2), raw.min(2), raw.max(2), np.median(raw, axis=2), slope,
         np.abs(np.diff(raw, axis=2)).mean(2)],
        axis=2,
    )
    return features.reshape(raw.shape[0], -1)


def random_forest_grades(data: UciData, train: np.ndarray, test: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Predicted grade per target for the `test` cycles."""
    features = window_statistics(data.raw)
    predictions = {}
    for target in TARGETS:
        forest = RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=-1)
        forest.fit(features[train], data.profile[train, target.column])
        predictions[target.component] = forest.predict(features[test])
    return predictions


def random_forest_detections(train_series: np.ndarray, train_anomalies: np.ndarray, test_series: np.ndarray,
                             seed: int = 0) -> np.ndarray:
    """[n_test, 9] 0/1 detections of a forest trained on windows of the same machine (same sensors)."""
    return forest_detections(window_statistics(train_series.astype(np.float64)), train_anomalies,
                             window_statistics(test_series.astype(np.float64)), seed)


def forest_detections(train_features: np.ndarray, train_anomalies: np.ndarray, test_features: np.ndarray,
                      seed: int = 0) -> np.ndarray:
    """[n_test, 9] 0/1 detections of one multi-output forest on any per-window features."""
    forest = RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=-1, min_samples_leaf=2)
    forest.fit(train_features, train_anomalies.astype(int))
    return np.asarray(forest.predict(test_features), dtype=int)


def values_and_differences(raw: np.ndarray) -> np.ndarray:
    """[n, sensors, T] -> [n, sensors * (2T - 1)]: every value and every step-to-step change."""
    n = raw.shape[0]
    return np.concatenate([raw.reshape(n, -1), np.diff(raw, axis=2).reshape(n, -1)], axis=1)


def gradient_boosting_detections(train_features: np.ndarray, train_anomalies: np.ndarray, test_features: np.ndarray,
                                 seed: int = 0) -> np.ndarray:
    """[n_test, 9] 0/1 detections of gradient-boosted trees, one per anomaly type, on any per-window
    features; a type the training windows never (or always) show is predicted as they show it."""
    labels = train_anomalies.astype(int)
    detected = np.zeros((test_features.shape[0], labels.shape[1]), dtype=int)
    for j in range(labels.shape[1]):
        if labels[:, j].min() == labels[:, j].max():
            detected[:, j] = labels[0, j]
            continue
        model = HistGradientBoostingClassifier(max_iter=200, random_state=seed)
        detected[:, j] = model.fit(train_features, labels[:, j]).predict(test_features)
    return detected


def gradient_boosting_grades(data: UciData, train: np.ndarray, test: np.ndarray, targets: tuple[Target, ...] = TARGETS,
                             seed: int = 0) -> dict[str, np.ndarray]:
    """Predicted grade per target for the `test` cycles, from trees on `values_and_differences`."""
    features = values_and_differences(data.raw)
    predictions = {}
    for target in targets:
        model = HistGradientBoostingClassifier(max_iter=200, random_state=seed)
        model.fit(features[train], data.profile[train, target.column])
        predictions[target.component] = model.predict(features[test])
    return predictions
