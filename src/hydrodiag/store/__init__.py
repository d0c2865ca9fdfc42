"""Prediction history per equipment (read by the degradation trend)."""

from hydrodiag.store.history import HealthPoint, HistoryStore, InMemoryHistoryStore

__all__ = ["HealthPoint", "HistoryStore", "InMemoryHistoryStore"]
