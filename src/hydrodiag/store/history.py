"""Bounded, thread-safe history of predictions per equipment.

The trend estimator only needs `append` and `recent`, so it depends on the `HistoryStore`
protocol. The in-memory store serves library use and tests; the server uses the SQL store
(`store/sql.py`), which keeps an in-memory store as its read-through cache of recent points.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable


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


class InMemoryHistoryStore:
    """Keeps the last `max_points` predictions of each of the `max_equipment` most recently seen
    machines; the machine not heard from the longest is forgotten first."""

    def __init__(self, max_points: int = 256, max_equipment: int = 10_000) -> None:
        if max_points < 1 or max_equipment < 1:
            raise ValueError("max_points and max_equipment must be at least 1")
        self.max_points = max_points
        self.max_equipment = max_equipment
        self._lock = threading.Lock()
        self._points: OrderedDict[str, deque[HealthPoint]] = OrderedDict()

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
            points = self._points.get(equipment_id)
            if points is None:
                points = deque(maxlen=self.max_points)
                self._points[equipment_id] = points
                while len(self._points) > self.max_equipment:
                    self._points.popitem(last=False)
            else:
                self._points.move_to_end(equipment_id)
            points.append(point)

    def recent(self, equipment_id: str, limit: int | None = None) -> list[HealthPoint]:
        with self._lock:
            points = self._points.get(equipment_id)
            if not points:
                return []
            items = list(points)
        return items if limit is None or limit >= len(items) else items[len(items) - limit :]

    def contains(self, equipment_id: str) -> bool:
        with self._lock:
            return equipment_id in self._points

    def seed(self, equipment_id: str, points: list[HealthPoint]) -> None:
        """Prime an equipment's history (oldest first) unless it is already known."""
        with self._lock:
            if equipment_id in self._points:
                return
            self._points[equipment_id] = deque(points[-self.max_points :], maxlen=self.max_points)
            while len(self._points) > self.max_equipment:
                self._points.popitem(last=False)

    def equipment_ids(self) -> list[str]:
        """Known equipment, least recently updated first."""
        with self._lock:
            return list(self._points)

    def clear(self, equipment_id: str | None = None) -> None:
        with self._lock:
            if equipment_id is None:
                self._points.clear()
            else:
                self._points.pop(equipment_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._points)
