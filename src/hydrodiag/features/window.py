"""Fixed-length windows from sensor series of any length, and their normalisation.

This is the one code path from raw values to model input used by training and serving alike:
UCI cycles (60 values at 1 Hz) go through `resample_rows` exactly as a posted series does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hydrodiag.taxonomy import QUANTITY_NAMES

# Channels per sensor node: level normalised by the quantity's training statistics, and the shape
# of the series standardised on itself (keeps detail of small signals riding on a large offset).
SERIES_CHANNELS = 2
# Scalar summaries per sensor node: mean level (quantity-normalised) and log relative spread.
STAT_FEATURES = 2


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


def resample_series(series: list[np.ndarray], window: int) -> np.ndarray:
    """Resample series of possibly different lengths to one [len(series), window] array."""
    out = np.empty((len(series), window), dtype=np.float32)
    by_length: dict[int, list[int]] = {}
    for i, values in enumerate(series):
        by_length.setdefault(len(values), []).append(i)
    for length, idx in by_length.items():
        out[idx] = resample_rows(np.stack([series[i] for i in idx]), window) if length else 0.0
    return out


@dataclass
class NormStats:
    """Per-quantity mean and standard deviation of training values (canonical units)."""

    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {"mean": dict(self.mean), "std": dict(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, float]]) -> NormStats:
        return cls(mean={k: float(v) for k, v in data["mean"].items()},
                   std={k: float(v) for k, v in data["std"].items()})

    @classmethod
    def fit(cls, values_by_quantity: dict[str, list[np.ndarray]]) -> NormStats:
        stats = cls()
        for quantity, arrays in values_by_quantity.items():
            flat = np.concatenate([np.ravel(a) for a in arrays]).astype(np.float64)
            stats.mean[quantity] = float(flat.mean())
            stats.std[quantity] = float(max(flat.std(), 1e-6))
        return stats

    def arrays(self, quantities: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std per entry; quantities never seen in training get a neutral (0, 1) scale."""
        mean = np.array([self.mean.get(q, 0.0) for q in quantities], dtype=np.float32)
        std = np.array([self.std.get(q, 1.0) for q in quantities], dtype=np.float32)
        return mean, std


def encode_windows(windows: np.ndarray, quantities: list[str], norm: NormStats) -> tuple[np.ndarray, np.ndarray]:
    """[S, T] raw windows -> ([S, SERIES_CHANNELS, T] series features, [S, STAT_FEATURES] stats)."""
    mean_q, std_q = norm.arrays(quantities)
    level = (windows - mean_q[:, None]) / std_q[:, None]
    centre = level.mean(axis=1, keepdims=True)
    spread = level.std(axis=1, keepdims=True)
    shape = (level - centre) / (spread + 1e-2)
    series = np.stack([np.clip(level, -20, 20), shape], axis=1).astype(np.float32)
    stats = np.concatenate([np.clip(centre, -20, 20), np.log(spread + 1e-3)], axis=1).astype(np.float32)
    return series, stats


def quantity_index(quantity: str) -> int:
    return QUANTITY_NAMES.index(quantity)
