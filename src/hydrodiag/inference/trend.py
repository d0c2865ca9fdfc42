"""Degradation rate and time to failure from a machine's own recent health history.

The rate is the least-squares slope of system health against time (health lost per hour) over the
history points of the serving model version, this prediction included. Health from another model
version is left out: a retrained model may score the same machine differently, and mixing the two
would show a step as a trend. Too little history gives no number at all, and says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import repeat
from operator import mul, sub, truediv

from hydrodiag.inference.schemas import DegradationInfo

# A fitted line that moves health by less than this over the whole history is called stable: such a
# drift is below what a health score expresses and nobody can act on it. Anything larger is reported
# as degrading or improving, with its rate -- a sudden drop is a trend a user must hear about.
STABLE_HEALTH_CHANGE = 0.01


@dataclass(frozen=True)
class TrendPolicy:
    min_points: int
    min_span_hours: float
    critical_threshold: float


def estimate_degradation(
    points: Sequence[tuple[datetime, float]], current_health: float, policy: TrendPolicy
) -> DegradationInfo:
    """`points` are (timestamp, system health) pairs, the current prediction included."""
    timestamps = [ts for ts, _ in points]
    healths = [health for _, health in points]
    return estimate_degradation_series(timestamps, healths, current_health, policy)


def estimate_degradation_series(
    timestamps: Sequence[datetime], healths: Sequence[float], current_health: float, policy: TrendPolicy
) -> DegradationInfo:
    """`estimate_degradation` on the two columns of the points (the request path's form: up to
    HISTORY_MAX_POINTS points per request, so every per-point step below runs in C (map/fsum over
    lists) -- the same float operations in the same order as a Python loop, so the same results)."""
    n = len(timestamps)
    hours = _hours_since_first(timestamps)
    span = max(hours) - min(hours) if hours else 0.0
    if n < policy.min_points:
        return _insufficient(n, span, f"insufficient history: {n} of {policy.min_points} points")
    if span < policy.min_span_hours:
        required = policy.min_span_hours
        message = f"insufficient history: points span {span:.3g} h of the required {required:g} h"
        return _insufficient(n, span, message)

    rate = 0.0 - _least_squares_slope(hours, healths)  # 0.0 -: never -0.0
    if abs(rate) * span < STABLE_HEALTH_CHANGE:
        return DegradationInfo(rate=rate, time_to_failure_hours=None, trend_status="stable",
                               points_used=n, span_hours=span, message=None)
    if rate > 0:
        margin = current_health - policy.critical_threshold
        ttf = 0.0 if margin <= 0 else margin / rate
        return DegradationInfo(rate=rate, time_to_failure_hours=ttf, trend_status="degrading",
                               points_used=n, span_hours=span, message=None)
    return DegradationInfo(rate=rate, time_to_failure_hours=None, trend_status="improving",
                           points_used=n, span_hours=span, message=None)


def _insufficient(n: int, span: float, message: str) -> DegradationInfo:
    return DegradationInfo(rate=None, time_to_failure_hours=None, trend_status="insufficient_history",
                           points_used=n, span_hours=span, message=message)


def _hours_since_first(timestamps: Sequence[datetime]) -> list[float]:
    """(ts - first).total_seconds() / 3600 for each timestamp."""
    if not timestamps:
        return []
    origin = min(timestamps)
    return list(map(truediv, map(timedelta.total_seconds, map(sub, timestamps, repeat(origin))), repeat(3600.0)))


def _least_squares_slope(x: Sequence[float], y: Sequence[float]) -> float:
    n = len(x)
    if len(y) != n:
        raise ValueError(f"{n} times but {len(y)} health values")
    mean_x = math.fsum(x) / n
    mean_y = math.fsum(y) / n
    dx = list(map(sub, x, repeat(mean_x)))
    sxx = math.fsum(map(pow, dx, repeat(2)))  # (xi - mean_x) ** 2
    if sxx == 0.0:
        return 0.0
    return math.fsum(map(mul, dx, map(sub, y, repeat(mean_y)))) / sxx
