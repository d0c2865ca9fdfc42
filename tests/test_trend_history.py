"""Degradation trend and history store on exact numbers (no model involved)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from hydrodiag.inference.trend import TrendPolicy, estimate_degradation, estimate_degradation_series
from hydrodiag.store import HistoryStore, InMemoryHistoryStore

START = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = TrendPolicy(min_points=3, min_span_hours=0.5, critical_threshold=0.3)


def series(*healths: float, step_hours: float = 1.0) -> list[tuple[datetime, float]]:
    return [(START + timedelta(hours=step_hours * i), h) for i, h in enumerate(healths)]


def test_too_few_points_gives_no_number() -> None:
    trend = estimate_degradation(series(0.9, 0.8), 0.8, POLICY)
    assert trend.rate is None and trend.time_to_failure_hours is None
    assert trend.trend_status == "insufficient_history"
    assert trend.message == "insufficient history: 2 of 3 points"


def test_too_short_a_span_gives_no_number() -> None:
    trend = estimate_degradation(series(0.9, 0.8, 0.7, step_hours=0.1), 0.7, POLICY)
    assert trend.rate is None and "span" in (trend.message or "")


def test_linear_decline() -> None:
    trend = estimate_degradation(series(0.9, 0.8, 0.7, 0.6), 0.6, POLICY)
    assert trend.trend_status == "degrading"
    assert trend.rate == pytest.approx(0.1)
    assert trend.time_to_failure_hours == pytest.approx((0.6 - 0.3) / 0.1)
    assert trend.points_used == 4 and trend.span_hours == pytest.approx(3.0)


def test_already_below_critical_fails_now() -> None:
    trend = estimate_degradation(series(0.4, 0.3, 0.2), 0.2, POLICY)
    assert trend.trend_status == "degrading" and trend.time_to_failure_hours == 0.0


def test_improving_and_flat_have_no_time_to_failure() -> None:
    improving = estimate_degradation(series(0.5, 0.6, 0.7), 0.7, POLICY)
    assert improving.trend_status == "improving" and improving.rate == pytest.approx(-0.1)
    assert improving.time_to_failure_hours is None
    flat = estimate_degradation(series(0.8, 0.8, 0.8), 0.8, POLICY)
    assert flat.trend_status == "stable" and flat.rate == 0.0 and flat.time_to_failure_hours is None


def test_a_negligible_drift_is_stable() -> None:
    trend = estimate_degradation(series(0.800, 0.801, 0.799, 0.798), 0.798, POLICY)
    assert trend.trend_status == "stable" and trend.time_to_failure_hours is None
    assert trend.rate is not None and trend.rate > 0  # the fitted number is still reported


def test_a_sudden_drop_is_degrading() -> None:
    trend = estimate_degradation(series(0.93, 0.93, 0.22, step_hours=2.0), 0.22, POLICY)
    assert trend.trend_status == "degrading" and trend.time_to_failure_hours == 0.0


def test_out_of_order_timestamps() -> None:
    points = series(0.9, 0.8, 0.7)
    trend = estimate_degradation([points[2], points[0], points[1]], 0.7, POLICY)
    assert trend.rate == pytest.approx(0.1)


def _add(store: InMemoryHistoryStore, equipment: str, hours: float, health: float) -> None:
    store.append(equipment, START + timedelta(hours=hours), "1.0.0", health, {"pump": health}, {}, 1.0)


def test_store_is_bounded_per_equipment_and_overall() -> None:
    store = InMemoryHistoryStore(max_points=3, max_equipment=2)
    assert isinstance(store, HistoryStore)
    for i in range(5):
        _add(store, "a", i, 1.0 - 0.1 * i)
    assert [p.system_health for p in store.recent("a")] == pytest.approx([0.8, 0.7, 0.6])
    assert [p.system_health for p in store.recent("a", limit=2)] == pytest.approx([0.7, 0.6])
    _add(store, "b", 0, 0.5)
    _add(store, "a", 6, 0.5)  # a is now more recent than b
    _add(store, "c", 0, 0.5)  # evicts b
    assert store.equipment_ids() == ["a", "c"]
    assert store.recent("b") == [] and len(store) == 2


def test_store_under_threads() -> None:
    store = InMemoryHistoryStore(max_points=1000, max_equipment=100)

    def writer(worker: int) -> None:
        for i in range(200):
            _add(store, f"eq{worker % 4}", i, 0.5)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(store.equipment_ids()) == ["eq0", "eq1", "eq2", "eq3"]
    assert all(len(store.recent(f"eq{i}")) == 400 for i in range(4))


def test_trend_series_are_the_serving_versions_points_among_the_latest() -> None:
    store = InMemoryHistoryStore(max_points=6)
    for i, version in enumerate(["1.0.0", "1.0.0", "2.0.0", "1.0.0", "2.0.0", "2.0.0", "1.0.0"]):
        store.append("m", START + timedelta(hours=i), version, 1.0 - 0.1 * i, {}, {}, 1.0)
    # point 0 has left the bounded history; of the latest 5 (points 2..6), 2.0.0 produced 2, 4, 5
    seconds, healths = store.trend_series("m", "2.0.0", limit=5)
    assert (seconds - START.timestamp()).tolist() == [2 * 3600.0, 4 * 3600.0, 5 * 3600.0]
    assert healths.tolist() == pytest.approx([0.8, 0.6, 0.5])
    seconds, healths = store.trend_series("m", "1.0.0")
    assert healths.tolist() == pytest.approx([0.9, 0.7, 0.4])
    assert [a.size for a in store.trend_series("unknown", "1.0.0")] == [0, 0]


def test_trend_from_store_columns_equals_trend_from_points() -> None:
    store = InMemoryHistoryStore()
    naive = datetime(2026, 1, 1)  # naive: read as UTC, as the API reads it
    for i, health in enumerate([0.95, 0.91, 0.9, 0.84, 0.8]):
        store.append("m", naive + timedelta(hours=2 * i), "1.0.0", health, {}, {}, 1.0)
    seconds, healths = store.trend_series("m", "1.0.0")
    from_columns = estimate_degradation_series(seconds, healths, 0.8, POLICY)
    points = [(START + timedelta(hours=2 * i), p.system_health) for i, p in enumerate(store.recent("m"))]
    assert from_columns == estimate_degradation(points, 0.8, POLICY)
    assert from_columns.trend_status == "degrading" and from_columns.span_hours == pytest.approx(8.0)


def test_trend_columns_match_the_points_through_growth_eviction_and_version_changes() -> None:
    """The store's numpy trend columns (grown, compacted in place) against a plain list of the same
    points, for histories shorter and longer than the cap and with model versions interleaved."""
    import random

    import numpy as np

    from hydrodiag.store.history import epoch_seconds

    rng = random.Random(3)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for max_points in (1, 2, 3, 17, 40):
        store = InMemoryHistoryStore(max_points=max_points)
        kept: list[tuple[float, float, str]] = []
        for i in range(300):
            version = "v2" if 100 <= i < 180 and rng.random() < 0.4 else "v1"
            health, at = rng.random(), start + timedelta(minutes=i)
            store.append("m", at, version, health, {}, {}, 1.0)
            kept = [*kept, (epoch_seconds(at), health, version)][-max_points:]
            for wanted in ("v1", "v2"):
                for limit in (None, 1, 5, max_points, 1000):
                    seconds, healths = store.trend_series("m", wanted, limit)
                    expected = [p for p in (kept if limit is None else kept[-limit:]) if p[2] == wanted]
                    assert np.array_equal(seconds, [p[0] for p in expected]), (max_points, i, wanted, limit)
                    assert np.array_equal(healths, [p[1] for p in expected]), (max_points, i, wanted, limit)
