"""Prometheus metrics: HTTP traffic measured here, the core's counters read at scrape time.

Each app has its own `CollectorRegistry`, so two apps in one process (tests) never share counts.
Routes are labelled by their template (`/equipment/{equipment_id}/history`), never by the raw
path, so label cardinality stays bounded; paths that match no route are labelled `unmatched`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hydrodiag.inference.engine import InferenceEngine
from hydrodiag.inference.peers import Peers
from hydrodiag.store.sql import HistoryDatabase

# Why a request was refused, by status, unless the handler named a finer reason (e.g. queue_full).
REJECT_REASONS = {400: "bad_request", 401: "unauthorized", 404: "not_found", 409: "conflict",
                  413: "body_too_large", 422: "invalid_input", 429: "rate_limited", 503: "unavailable"}
# Any other method token is labelled "other": clients must not be able to mint label values.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# WORKERS > 1: how often a worker shares its exposition with the others (what another worker's
# /metrics answer shows of it is at most this old).
SHARE_INTERVAL_S = 1.0
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

router = APIRouter()
# `_created` series double the output and no dashboard reads them.
disable_created_metrics()


class CoreCollector(Collector):
    """Engine, model and history-writer state, read when Prometheus scrapes."""

    def __init__(self, engine: InferenceEngine, history: HistoryDatabase | None) -> None:
        self.engine = engine
        self.history = history

    def collect(self) -> Iterator[Any]:
        stats = self.engine.get_stats()
        yield GaugeMetricFamily("hydrodiag_queue_depth", "Requests waiting for a forward pass.",
                                value=stats["queue_size"])
        yield GaugeMetricFamily("hydrodiag_forward_pass_running", "1 while the model computes a batch.",
                                value=1 if stats["processing"] else 0)
        yield CounterMetricFamily("hydrodiag_predictions", "Predictions answered.", value=stats["requests"])
        yield CounterMetricFamily("hydrodiag_forward_passes", "Forward passes run.", value=stats["batches"])
        yield CounterMetricFamily("hydrodiag_queue_rejections", "Requests refused because the queue was full.",
                                  value=stats["rejected_queue_full"])
        snap = self.engine.batch_sizes.snapshot()
        buckets = [(_bound(b), c) for b, c in zip(snap.buckets, snap.cumulative, strict=False)]
        buckets.append(("+Inf", snap.count))
        yield HistogramMetricFamily("hydrodiag_batch_size", "Graphs per forward pass.", buckets=buckets,
                                    sum_value=snap.total)
        info = InfoMetricFamily("hydrodiag_model", "The model serving requests.")
        served = self.engine.model
        if served is not None:
            info.add_metric([], {"version": served.model_version, "file": served.path.name,
                                 "device": str(served.device)})
        yield info
        yield GaugeMetricFamily("hydrodiag_model_loaded", "1 once a model serves.", value=1 if served else 0)
        if self.history is not None:
            writer = self.history.writer.stats()
            yield GaugeMetricFamily("hydrodiag_history_buffer_rows", "Prediction rows waiting for the database.",
                                    value=writer["buffered"])
            yield GaugeMetricFamily("hydrodiag_history_buffer_capacity", "HISTORY_BUFFER_SIZE.",
                                    value=writer["capacity"])
            yield CounterMetricFamily("hydrodiag_history_rows_written", "Prediction rows written.",
                                      value=writer["written"])
            yield CounterMetricFamily("hydrodiag_history_write_failures", "Failed batch writes (each retried).",
                                      value=writer["write_failures"])
            yield CounterMetricFamily("hydrodiag_history_rows_dropped", "Rows lost because the buffer was full.",
                                      value=writer["dropped"])


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class HttpMetrics:
    def __init__(self, engine: InferenceEngine, history: HistoryDatabase | None, peers: Peers | None = None) -> None:
        self.peers = peers
        self.registry = CollectorRegistry()
        self.requests = Counter("hydrodiag_http_requests", "HTTP requests by route template and status.",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("hydrodiag_http_request_duration_seconds", "HTTP request latency.",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_progress = Gauge("hydrodiag_http_requests_in_progress", "HTTP requests being handled.",
                                 ["method", "route"], registry=self.registry)
        self.rejected = Counter("hydrodiag_rejected_requests", "Requests refused, by reason.", ["reason"],
                                registry=self.registry)
        self.registry.register(CoreCollector(engine, history))

    def exposition(self) -> bytes:
        """This worker's metrics; with WORKERS > 1, every worker's, each series labelled `worker`
        (the others' as they shared them at most SHARE_INTERVAL_S ago)."""
        own = generate_latest(self.registry)
        if self.peers is None:
            return own
        by_worker = {self.peers.slot: own, **self.peers.others_metrics()}
        merged = CollectorRegistry()
        merged.register(_LabelledWorkers(by_worker))
        return generate_latest(merged)

    async def share(self) -> None:
        """WORKERS > 1: keep this worker's exposition where the others read it."""
        assert self.peers is not None
        while True:
            self.peers.share_metrics(generate_latest(self.registry))
            await asyncio.sleep(SHARE_INTERVAL_S)


class _LabelledWorkers(Collector):
    """Several workers' expositions as one, each sample labelled with the worker it came from."""

    def __init__(self, by_worker: dict[int, bytes]) -> None:
        self.by_worker = by_worker

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for slot in sorted(self.by_worker):
            for family in text_string_to_metric_families(self.by_worker[slot].decode("utf-8")):
                merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "worker": str(slot)}, sample.value)
        yield from families.values()


TEMPLATE_CACHE_SIZE = 4096


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics, routes: list[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self._app_routes = routes
        self._flat: list[BaseRoute] | None = None
        # (method, path) -> route template: matching walks every route's regex, on every request.
        # Bounded, because paths with parameters (/equipment/{id}/history) are as many as the ids.
        self._templates: dict[tuple[str, str], str] = {}

    @staticmethod
    def _flatten(routes: list[BaseRoute]) -> list[BaseRoute]:
        # FastAPI keeps included routers as one entry each; their routes carry the full paths.
        flat: list[BaseRoute] = []
        for route in routes:
            inner = getattr(route, "original_router", None)
            flat.extend(MetricsMiddleware._flatten(list(inner.routes)) if inner is not None else [route])
        return flat

    def _template(self, scope: Scope) -> str:
        key = (str(scope.get("method", "")), str(scope.get("path", "")))
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) >= TEMPLATE_CACHE_SIZE:
                self._templates.clear()
            template = self._templates[key] = self._match(scope)
        return template

    def _match(self, scope: Scope) -> str:
        if self._flat is None:  # built on the first request, once every router is included
            self._flat = self._flatten(self._app_routes)
        partial = None
        for route in self._flat:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return str(getattr(route, "path", "unmatched"))
            if match is Match.PARTIAL and partial is None:  # the path exists, not the method (405)
                partial = str(getattr(route, "path", "unmatched"))
        return partial or "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET"))
        method = method if method in METHODS else "other"
        route = self._template(scope)
        status = 500
        started = time.perf_counter()

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        gauge = self.metrics.in_progress.labels(method, route)
        gauge.inc()
        try:
            await self.app(scope, receive, send_recording)
        finally:
            gauge.dec()
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
            if status >= 400:
                reason = scope.get("state", {}).get("reject_reason") or REJECT_REASONS.get(status)
                if reason is None:
                    reason = "server_error" if status >= 500 else f"http_{status}"
                self.metrics.rejected.labels(reason).inc()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus exposition format."""
    registry: HttpMetrics = request.app.state.metrics
    return Response(registry.exposition(), media_type=CONTENT_TYPE_LATEST)
