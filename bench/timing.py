"""The timing loop the probes share: warm up, then the median of single calls."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_ms(call: Callable[[], Any], repeats: int, warmup: int = 10) -> float:
    """Median milliseconds of `repeats` calls of `call`, after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times)
