"""Degradation rate and time to failure from a machine's own recent health history.

The rate is the least-squares slope of system health against time (health lost per hour) over the
history points of the serving model version, this prediction included. Health from another model
version is left out: a retrained model may score the same machine differently, and mixing the two
would show a step as a trend. Too little history gives no number at all, and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from hydrodiag.inference.schemas import DegradationInfo
from hydrodiag.store.history import epoch_seconds

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
    seconds = np.array([epoch_seconds(ts) for ts, _ in points], dtype=np.float64)
    healths = np.array([health for _, health in points], dtype=np.float64)
    return estimate_degradation_series(seconds, healths, current_health, policy)


def estimate_degradation_series(
    seconds: np.ndarray, healths: np.ndarray, current_health: float, policy: TrendPolicy
) -> DegradationInfo:
    """`estimate_degradation` on the two columns of the points (epoch seconds, system health), as the
    history store keeps them for the request path."""
    n = len(seconds)
    if len(healths) != n:
        raise ValueError(f"{n} times but {len(healths)} health values")
    hours = (seconds - seconds.min()) / 3600.0 if n else seconds
    span = float(hours.max()) if n else 0.0
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


def _least_squares_slope(x: np.ndarray, y: np.ndarray) -> float:
    dx = x - x.mean()
    sxx = float(dx @ dx)
    if sxx == 0.0:
        return 0.0
    return float(dx @ (y - y.mean())) / sxx
