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


@dataclass
class _Machine:
    """One machine's recent points and, kept beside them, the columns its trend is fitted on (the
    request path reads those on every prediction; gathering them from the points cost about a tenth
    of the server's time under load)."""

    points: deque[HealthPoint]
    seconds: deque[float]
    healths: deque[float]
    versions: deque[str]

    @classmethod
    def of(cls, points: list[HealthPoint], max_points: int) -> _Machine:
        kept = points[-max_points:]
        return cls(deque(kept, maxlen=max_points), deque(map(epoch_seconds, (p.timestamp for p in kept)),
                                                         maxlen=max_points),
                   deque((p.system_health for p in kept), maxlen=max_points),
                   deque((p.model_version for p in kept), maxlen=max_points))

    def add(self, point: HealthPoint) -> None:
        self.points.append(point)
        self.seconds.append(epoch_seconds(point.timestamp))
        self.healths.append(point.system_health)
        self.versions.append(point.model_version)


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
            n = len(machine.points)
            seconds = np.fromiter(machine.seconds, dtype=np.float64, count=n)
            healths = np.fromiter(machine.healths, dtype=np.float64, count=n)
            mixed = machine.versions.count(model_version) != n
            same = np.fromiter((v == model_version for v in machine.versions), dtype=bool, count=n) if mixed else None
        start = 0 if limit is None or limit >= n else n - limit
        if same is None:
            return seconds[start:], healths[start:]
        keep = same[start:]
        return seconds[start:][keep], healths[start:][keep]

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
