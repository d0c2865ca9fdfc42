"""Fixed-length windows from sensor series of any length, and their normalisation.

This is the one code path from raw values to model input used by training and serving alike:
UCI cycles (60 values at 1 Hz) go through `resample_rows` exactly as a posted series does.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from hydrodiag.taxonomy import QUANTITY_NAMES

# Channels per sensor node: level normalised by the quantity's training statistics; the shape of the
# series standardised on itself (keeps detail of small signals riding on a large offset); and the
# level relative to this sensor's own baseline on this machine (zeros where no baseline is known).
# Per-quantity scaling is what lets one model read any machine, but it squashes the small shifts
# that tell a 100 bar from a 90 bar accumulator on a 2 bar return-line sensor; the baseline channel
# keeps them, and it is what "unusual for this machine" means on a machine never seen in training.
SERIES_CHANNELS = 3
# Version of the encoding as a whole (channels, their order and scaling); kept in every checkpoint,
# so a model is never fed inputs encoded differently from those it was trained on.
FEATURE_VERSION = 1
# Scalar summaries per sensor node: mean level (quantity-normalised), log relative spread, mean
# level relative to the sensor's baseline, and whether a baseline is known (1/0).
STAT_FEATURES = 4


def resample_rows(values: np.ndarray, window: int) -> np.ndarray:
    """Linearly resample every row of a [rows, n] array (n >= 2) onto `window` evenly spaced points."""
    _, n = values.shape
    if n == window:
        return values.astype(np.float32, copy=False)
    position = np.linspace(0.0, n - 1, window)
    left = np.minimum(position.astype(np.int64), n - 2)
    frac = (position - left).astype(np.float32)
    data = values.astype(np.float32, copy=False)
    return data[:, left] * (1.0 - frac) + data[:, left + 1] * frac


def resample_windows(windows: np.ndarray, window: int) -> np.ndarray:
    """[n, sensors, t] -> [n, sensors, window]: many samples of equal length at once (training sets)."""
    n, sensors, t = windows.shape
    return resample_rows(windows.reshape(n * sensors, t), window).reshape(n, sensors, window)


def resample_series(series: list[np.ndarray] | np.ndarray, window: int) -> np.ndarray:
    """Resample series of possibly different lengths to one [len(series), window] array (a 2-D array:
    rows of one length, resampled in one pass with the same arithmetic)."""
    if isinstance(series, np.ndarray) and series.ndim == 2:
        return resample_rows(series, window)
    out = np.empty((len(series), window), dtype=np.float32)
    by_length: dict[int, list[int]] = {}
    for i, values in enumerate(series):
        by_length.setdefault(len(values), []).append(i)
    for length, idx in by_length.items():
        out[idx] = resample_rows(np.stack([series[i] for i in idx]), window) if length else 0.0
    return out


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Baseline = tuple[np.ndarray, np.ndarray, np.ndarray]  # per-sensor mean, std, known (1/0)
BASELINE_CACHE_SIZE = 256


def baseline_key(topology_id: str, sensor: str) -> str:
    return f"{topology_id}/{sensor}"


def _mean_std(arrays: list[np.ndarray]) -> tuple[float, float]:
    flat = np.concatenate([np.ravel(a) for a in arrays]).astype(np.float64)
    return float(flat.mean()), float(max(flat.std(), 1e-6))


@dataclass
class NormStats:
    """Per-quantity mean and standard deviation of training values (canonical units), and per-sensor
    baselines (mean, std) keyed by `baseline_key(topology_id, sensor)` for the machines it knows."""

    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    baselines: dict[str, tuple[float, float]] = field(default_factory=dict)
    # baseline_arrays per (topology id, sensor names): serving asks the same question on every request.
    _baseline_cache: dict[tuple[str, tuple[str, ...]], Baseline] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    _quantity_cache: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def to_dict(self) -> dict[str, dict[str, float] | dict[str, list[float]]]:
        return {"mean": dict(self.mean), "std": dict(self.std),
                "baselines": {k: [m, s] for k, (m, s) in self.baselines.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, float]]) -> NormStats:
        baselines = data.get("baselines", {})
        return cls(mean={k: float(v) for k, v in data["mean"].items()},
                   std={k: float(v) for k, v in data["std"].items()},
                   baselines={k: (float(v[0]), float(v[1])) for k, v in baselines.items()})  # type: ignore[index]

    @classmethod
    def fit(cls, values_by_quantity: dict[str, list[np.ndarray]],
            values_by_sensor: dict[str, list[np.ndarray]] | None = None) -> NormStats:
        stats = cls()
        for quantity, arrays in values_by_quantity.items():
            stats.mean[quantity], stats.std[quantity] = _mean_std(arrays)
        for key, arrays in (values_by_sensor or {}).items():
            stats.baselines[key] = _mean_std(arrays)
        return stats

    def add_baselines(self, topology_id: str, sensor_names: list[str], windows: np.ndarray) -> None:
        """Baselines of one machine from its operating data ([n, sensors, T]; no labels needed)."""
        for j, name in enumerate(sensor_names):
            self.baselines[baseline_key(topology_id, name)] = _mean_std([windows[:, j]])
        self._baseline_cache.clear()

    def without_machines(self, topology_ids: set[str]) -> NormStats:
        """A copy lacking the baselines of `topology_ids` (machines that exist only in training)."""
        kept = {k: v for k, v in self.baselines.items() if k.split("/", 1)[0] not in topology_ids}
        return NormStats(mean=dict(self.mean), std=dict(self.std), baselines=kept)

    def baseline_arrays(self, topology_id: str, sensor_names: list[str]) -> Baseline:
        """Mean, std and known (1/0) per sensor; unknown sensors get (0, 1, 0). Shared: do not modify."""
        def make() -> Baseline:
            found = [self.baselines.get(baseline_key(topology_id, name)) for name in sensor_names]
            return (np.array([b[0] if b else 0.0 for b in found], dtype=np.float32),
                    np.array([b[1] if b else 1.0 for b in found], dtype=np.float32),
                    np.array([1.0 if b else 0.0 for b in found], dtype=np.float32))

        return _memo(self._baseline_cache, (topology_id, tuple(sensor_names)), make)

    def arrays(self, quantities: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std per entry; quantities never seen in training get a neutral (0, 1) scale.
        Shared: do not modify."""
        return _memo(self._quantity_cache, tuple(quantities), lambda: (
            np.array([self.mean.get(q, 0.0) for q in quantities], dtype=np.float32),
            np.array([self.std.get(q, 1.0) for q in quantities], dtype=np.float32)))


def _memo(cache: dict[K, V], key: K, make: Callable[[], V]) -> V:
    """`cache[key]`, made first if missing; the serving path asks the same questions on every request,
    and a cache that reaches BASELINE_CACHE_SIZE entries starts again empty."""
    value = cache.get(key)
    if value is None:
        if len(cache) >= BASELINE_CACHE_SIZE:
            cache.clear()
        value = cache[key] = make()
    return value


def _row_mean(values: np.ndarray, count: np.intp) -> np.ndarray:
    """`values.mean(axis=1, keepdims=True)` with the same operations (and so the same bits) as numpy's,
    without its Python wrapper: the request path encodes every posted window."""
    total = np.add.reduce(values, axis=1, keepdims=True)
    return np.true_divide(total, count, out=total, casting="unsafe")


def encode_windows(windows: np.ndarray, quantities: list[str], norm: NormStats,
                   baseline: Baseline | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[S, T] raw windows -> ([S, SERIES_CHANNELS, T] series features, [S, STAT_FEATURES] stats).

    Written out in numpy's own steps (mean, std, clip) so that it matches `mean`/`std`/`clip` bit for
    bit (tests/test_features.py keeps the plain formulation as the reference) at half the calls."""
    sensors, steps = windows.shape
    count = np.intp(steps)
    mean_q, std_q = norm.arrays(quantities)
    level = (windows - mean_q[:, None]) / std_q[:, None]
    centre = _row_mean(level, count)
    deviation = level - centre
    spread = np.sqrt(_row_mean(deviation * deviation, count))
    series = np.empty((sensors, SERIES_CHANNELS, steps), dtype=np.float32)
    np.minimum(np.maximum(level, -20), 20, out=series[:, 0])
    np.true_divide(deviation, spread + 1e-2, out=series[:, 1])
    stats = np.empty((sensors, STAT_FEATURES), dtype=np.float32)
    np.minimum(np.maximum(centre[:, 0], -20), 20, out=stats[:, 0])
    np.log(spread[:, 0] + 1e-3, out=stats[:, 1])
    if baseline is None:
        series[:, 2] = 0.0
        stats[:, 2:] = 0.0
        return series, stats
    mean_b, std_b, known_b = baseline
    known = known_b[:, None]
    relative = np.minimum(np.maximum((windows - mean_b[:, None]) / std_b[:, None], -20), 20) * known
    series[:, 2] = relative
    stats[:, 2] = _row_mean(relative, count)[:, 0]
    stats[:, 3] = known_b
    return series, stats


def quantity_index(quantity: str) -> int:
    return QUANTITY_NAMES.index(quantity)
