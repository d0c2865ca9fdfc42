"""Bounded, thread-safe history of predictions per equipment.

The inference core only needs `append`, `recent` and `trend_series`, so it depends on the
`HistoryStore` protocol. The in-memory store serves library use and tests; the server uses the SQL store
(`store/sql.py`), which keeps an in-memory store as its read-through cache of recent points.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import numpy as np


def epoch_seconds(timestamp: datetime) -> float:
    """Seconds since 1970 of a timestamp; a naive one is read as UTC (as the API does)."""
    return (timestamp if timestamp.tzinfo is not None else timestamp.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True)
class HealthPoint:
    """One served prediction, reduced to what a trend or an audit needs."""

    timestamp: datetime
    model_version: str
    system_health: float
    component_health: dict[str, float] = field(default_factory=dict)
    anomalies: dict[str, float] = field(default_factory=dict)
    latency_ms: float = 0.0
    request_id: str | None = None
    topology_id: str | None = None


@runtime_checkable
class HistoryStore(Protocol):
    def append(
        self,
        equipment_id: str,
        timestamp: datetime,
        model_version: str,
        system_health: float,
        component_health: dict[str, float],
        anomalies: dict[str, float],
        latency_ms: float,
        *,
        request_id: str | None = None,
        topology_id: str | None = None,
    ) -> None: ...

    def recent(self, equipment_id: str, limit: int | None = None) -> list[HealthPoint]:
        """The equipment's latest points in arrival order (oldest first), at most `limit`."""
        ...

    def trend_series(self, equipment_id: str, model_version: str,
                     limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Epoch seconds and system health of those of the latest `limit` points that `model_version`
        produced, oldest first: what the trend is fitted on, as arrays."""
        ...


class _Machine:
    """One machine's recent points and, kept beside them, the columns its trend is fitted on.

    The request path reads those columns on every prediction, so they are numpy arrays that a read
    copies in one slice rather than deques it gathers value by value (that was ~5 % of the event
    loop's time per request under load). The arrays hold up to twice `max_points` values: appends
    fill them, and only when they are full are the live values moved back to the front, so an append
    costs O(1) amortised. They start small and grow, so a machine heard from once costs little.
    """

    INITIAL_CAPACITY = 16

    def __init__(self, max_points: int) -> None:
        self.max_points = max_points
        self.points: deque[HealthPoint] = deque(maxlen=max_points)
        self.version_counts: dict[str, int] = {}  # points per model version: is a fit's filter needed?
        capacity = min(self.INITIAL_CAPACITY, 2 * max_points)
        self._seconds = np.empty(capacity, dtype=np.float64)
        self._healths = np.empty(capacity, dtype=np.float64)
        self._start = 0
        self._end = 0

    @classmethod
    def of(cls, points: list[HealthPoint], max_points: int) -> _Machine:
        machine = cls(max_points)
        for point in points[-max_points:]:
            machine.add(point)
        return machine

    def add(self, point: HealthPoint) -> None:
        if len(self.points) == self.max_points:
            oldest = self.points[0].model_version
            left = self.version_counts[oldest] - 1
            if left:
                self.version_counts[oldest] = left
            else:
                del self.version_counts[oldest]
            self._start += 1
        self.points.append(point)
        self.version_counts[point.model_version] = self.version_counts.get(point.model_version, 0) + 1
        if self._end == len(self._seconds):
            self._make_room()
        self._seconds[self._end] = epoch_seconds(point.timestamp)
        self._healths[self._end] = point.system_health
        self._end += 1

    def _make_room(self) -> None:
        live = self._end - self._start
        capacity = len(self._seconds)
        if capacity < 2 * self.max_points:
            capacity = min(2 * capacity, 2 * self.max_points)
        for name in ("_seconds", "_healths"):
            old = getattr(self, name)
            new = np.empty(capacity, dtype=np.float64) if capacity != len(old) else old
            new[:live] = old[self._start : self._end]
            setattr(self, name, new)
        self._start, self._end = 0, live

    def columns(self, model_version: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the seconds and healths of the latest `limit` points `model_version` produced."""
        n = self._end - self._start
        first = self._start if limit is None or limit >= n else self._end - limit
        seconds = self._seconds[first : self._end].copy()
        healths = self._healths[first : self._end].copy()
        if self.version_counts.get(model_version, 0) == n:
            return seconds, healths
        same = np.fromiter((p.model_version == model_version for p in self.points), dtype=bool,
                           count=n)[first - self._start :]
        return seconds[same], healths[same]


class InMemoryHistoryStore:
    """Keeps the last `max_points` predictions of each of the `max_equipment` most recently seen
    machines; the machine not heard from the longest is forgotten first."""

    def __init__(self, max_points: int = 256, max_equipment: int = 10_000) -> None:
        if max_points < 1 or max_equipment < 1:
            raise ValueError("max_points and max_equipment must be at least 1")
        self.max_points = max_points
        self.max_equipment = max_equipment
        self._lock = threading.Lock()
        self._machines: OrderedDict[str, _Machine] = OrderedDict()

    def append(
        self,
        equipment_id: str,
        timestamp: datetime,
        model_version: str,
        system_health: float,
        component_health: dict[str, float],
        anomalies: dict[str, float],
        latency_ms: float,
        *,
        request_id: str | None = None,
        topology_id: str | None = None,
    ) -> None:
        point = HealthPoint(
            timestamp=timestamp,
            model_version=model_version,
            system_health=float(system_health),
            component_health=dict(component_health),
            anomalies=dict(anomalies),
            latency_ms=float(latency_ms),
            request_id=request_id,
            topology_id=topology_id,
        )
        self.add(equipment_id, point)

    def add(self, equipment_id: str, point: HealthPoint) -> None:
        with self._lock:
            machine = self._machines.get(equipment_id)
            if machine is None:
                machine = _Machine.of([], self.max_points)
                self._machines[equipment_id] = machine
                self._forget_oldest()
            else:
                self._machines.move_to_end(equipment_id)
            machine.add(point)

    def recent(self, equipment_id: str, limit: int | None = None) -> list[HealthPoint]:
        with self._lock:
            machine = self._machines.get(equipment_id)
            if machine is None or not machine.points:
                return []
            items = list(machine.points)
        return items if limit is None or limit >= len(items) else items[len(items) - limit :]

    def trend_series(self, equipment_id: str, model_version: str,
                     limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            machine = self._machines.get(equipment_id)
            if machine is None or not machine.points:
                return np.empty(0), np.empty(0)
            return machine.columns(model_version, limit)

    def contains(self, equipment_id: str) -> bool:
        with self._lock:
            return equipment_id in self._machines

    def seed(self, equipment_id: str, points: list[HealthPoint]) -> None:
        """Prime an equipment's history (oldest first) unless it is already known."""
        with self._lock:
            if equipment_id in self._machines:
                return
            self._machines[equipment_id] = _Machine.of(points, self.max_points)
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        while len(self._machines) > self.max_equipment:
            self._machines.popitem(last=False)

    def equipment_ids(self) -> list[str]:
        """Known equipment, least recently updated first."""
        with self._lock:
            return list(self._machines)

    def clear(self, equipment_id: str | None = None) -> None:
        with self._lock:
            if equipment_id is None:
                self._machines.clear()
            else:
                self._machines.pop(equipment_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._machines)
