"""Counters of the inference core, kept as plain numbers; `api/metrics.py` exposes them to
Prometheus at scrape time, so the core depends on no metrics library."""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass

# Batch sizes are small integers; these bounds resolve "mostly single" from "well batched".
BATCH_SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class HistogramSnapshot:
    buckets: tuple[float, ...]
    cumulative: tuple[int, ...]  # observations <= each bound, then the +Inf total
    total: float
    count: int


class BucketHistogram:
    """A thread-safe histogram with fixed bounds (the shape Prometheus expects)."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = tuple(sorted(buckets))
        self._counts = [0] * (len(self.buckets) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        with self._lock:
            self._counts[index] += 1
            self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            counts = list(self._counts)
            total = self._sum
        cumulative, running = [], 0
        for count in counts:
            running += count
            cumulative.append(running)
        return HistogramSnapshot(self.buckets, tuple(cumulative), total, running)
