"""InferenceEngine: request -> graph -> dynamically batched forward pass -> response.

The engine holds a reference to the model it serves; `swap_model` loads and warms another
checkpoint and replaces that reference in one assignment, so a request is always answered by one
model from start to end (its graph is built for that model's window and normalisation, and the
forward pass groups graphs by the model they were built for).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hydrodiag.errors import InvalidInputError, ModelNotLoadedError
from hydrodiag.inference.batcher import DynamicBatcher, LatencyTracker
from hydrodiag.inference.forward import ForwardJob, ForwardStages
from hydrodiag.inference.manager import ModelManager, ServedModel, resolve_device
from hydrodiag.inference.metrics import BATCH_SIZE_BUCKETS, BucketHistogram
from hydrodiag.inference.postprocess import DiagnosisPolicy, GraphOutput, response_data
from hydrodiag.inference.preprocess import InputLimits, PreparedGraph, Preprocessor
from hydrodiag.inference.schemas import (
    BatchPredictionResponse,
    DegradationInfo,
    PredictionRequest,
    PredictionResponse,
)
from hydrodiag.inference.trend import TrendPolicy, estimate_degradation_series
from hydrodiag.settings import DEFAULT_MODEL_PATH, Settings, get_settings
from hydrodiag.store.history import HistoryStore, InMemoryHistoryStore
from hydrodiag.taxonomy import ANOMALY_TYPES
from hydrodiag.topology.schema import Topology
from hydrodiag.topology.templates import TopologyRegistry

logger = logging.getLogger(__name__)

# Requests with more raw values than this are preprocessed on a worker thread: parsing and
# resampling them takes long enough to stall every other connection on the event loop, while for
# a typical window the thread hand-off would cost more than the work.
INLINE_PREPROCESS_MAX_VALUES = 20_000


@dataclass(frozen=True)
class InferenceConfig:
    model_path: Path = DEFAULT_MODEL_PATH
    device: str = "auto"
    batch_size: int = 32
    pipeline_min_batch: int = 8
    max_queue_size: int = 256
    max_wait_ms: float = 0.0
    use_dynamic_batching: bool = True
    pin_memory: bool = True
    use_compile: bool = False
    compile_mode: str = "reduce-overhead"
    jit_trace: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_path", Path(self.model_path))
        if self.batch_size < 1 or self.max_queue_size < 1 or self.max_wait_ms < 0 or self.pipeline_min_batch < 0:
            raise ValueError("batch_size and max_queue_size must be >= 1, max_wait_ms and pipeline_min_batch >= 0")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> InferenceConfig:
        config = cls(
            model_path=settings.model_path, device=settings.device, batch_size=settings.batch_size,
            pipeline_min_batch=settings.pipeline_min_batch, max_queue_size=settings.max_queue_size,
            max_wait_ms=settings.max_wait_ms,
            use_dynamic_batching=settings.use_dynamic_batching, pin_memory=settings.pin_memory,
            use_compile=settings.use_compile, compile_mode=settings.compile_mode, jit_trace=settings.jit_trace,
        )
        return replace(config, **overrides)


@dataclass
class _Counters:
    predictions: int = 0
    invalid: int = 0
    failed: int = 0
    forward_passes: int = 0
    forward_graphs: int = 0
    started_at: float = field(default_factory=time.monotonic)


class InferenceEngine:
    def __init__(
        self,
        config: InferenceConfig | None = None,
        *,
        settings: Settings | None = None,
        manager: ModelManager | None = None,
        registry: TopologyRegistry | None = None,
        history: HistoryStore | None = None,
        auto_start: bool = True,
    ) -> None:
        """`auto_start`: the first prediction loads the model if nobody called `start()`; a server
        turns it off so that requests during start-up get ModelNotLoadedError (503) instead of waiting."""
        self.settings = settings or get_settings()
        self.config = config or InferenceConfig.from_settings(self.settings)
        self.manager = manager or ModelManager.instance(self.settings.model_cache_size)
        self.registry = registry or TopologyRegistry()
        self.history: HistoryStore = history or InMemoryHistoryStore(
            self.settings.history_max_points, self.settings.history_max_equipment
        )
        self.auto_start = auto_start
        self.policy = DiagnosisPolicy.from_settings(self.settings)
        self.trend_policy = TrendPolicy(
            min_points=self.settings.trend_min_points,
            min_span_hours=self.settings.trend_min_span_hours,
            critical_threshold=self.policy.critical_threshold,
        )
        self.preprocessor = Preprocessor(
            self.registry, InputLimits(self.settings.max_series_length, self.settings.max_sensors)
        )
        self._batcher: DynamicBatcher[ForwardJob, GraphOutput] = DynamicBatcher(
            ForwardStages(self, self.config.pin_memory),
            batch_size=self.config.batch_size,
            max_queue_size=self.config.max_queue_size,
            max_wait_ms=self.config.max_wait_ms,
            merge_submissions=self.config.use_dynamic_batching,
            pipeline_min_batch=self.config.pipeline_min_batch,
        )
        # equipment id -> topology id (PUT /equipment/{id}); used when a request names no topology.
        self.bindings: dict[str, str] = {}
        self.batch_sizes = BucketHistogram(BATCH_SIZE_BUCKETS)
        self._served: ServedModel | None = None
        self._start_lock: asyncio.Lock | None = None
        self._counters = _Counters()
        self._latency = LatencyTracker()

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def model(self) -> ServedModel | None:
        return self._served

    @property
    def is_loaded(self) -> bool:
        return self._served is not None

    def load(self, model_path: str | os.PathLike[str] | None = None) -> ServedModel:
        """Load (or fetch from the manager's cache) and warm up a checkpoint; make it the served one."""
        path = Path(model_path) if model_path is not None else self.config.model_path
        served = self.manager.load_model(path, device=self.config.device, use_compile=self.config.use_compile,
                                         compile_mode=self.config.compile_mode, use_trace=self.config.jit_trace)
        if served.warmup_time_s is None:
            self.manager.warmup(path, batch_size=self.config.batch_size)
        self._served = served  # one reference assignment: requests see the old or the new model, whole
        return served

    async def start(self) -> None:
        """Load the configured model without blocking the event loop (idempotent)."""
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._served is None:
                await asyncio.to_thread(self.load)

    async def swap_model(self, model_path: str | os.PathLike[str]) -> dict[str, Any]:
        """Serve another checkpoint from now on; in-flight requests finish on the model they started with."""
        served = await asyncio.to_thread(self.load, model_path)
        logger.info("now serving %s (version %s)", served.path, served.model_version)
        return served.info()

    async def close(self, drain_timeout_s: float = 0.0) -> None:
        """Stop: with `drain_timeout_s`, queued and running requests get that long to finish first."""
        deadline = time.monotonic() + drain_timeout_s
        while (self._batcher.queue_size or self._batcher.processing) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await self._batcher.close()

    def bind_equipment(self, equipment_id: str, topology_id: str) -> Topology:
        """Requests of this machine that name no topology get this one (it must be registered)."""
        topology = self.registry.get(topology_id)
        self.bindings[equipment_id] = topology_id
        return topology

    async def _current_model(self) -> ServedModel:
        served = self._served
        if served is None:
            if not self.auto_start:
                raise ModelNotLoadedError("the model is not loaded yet; retry shortly")
            await self.start()
            served = self._served
            assert served is not None
        return served

    # -- prediction ------------------------------------------------------------------------------

    async def predict(
        self, request: PredictionRequest, topology: Topology | None = None, *, request_id: str | None = None
    ) -> PredictionResponse:
        """One prediction. `topology` is the default for a request that names none."""
        return PredictionResponse.model_validate(await self.predict_data(request, topology, request_id=request_id))

    async def predict_data(
        self, request: PredictionRequest, topology: Topology | None = None, *, request_id: str | None = None
    ) -> dict[str, Any]:
        """`predict` as plain data, without the response model's validation pass: what a transport
        that encodes the answer itself wants (see `postprocess.response_data`)."""
        started = time.perf_counter()
        served = await self._current_model()
        prepared = await self._prepare([request], served, topology, batch=False)
        [output] = await self._batcher.submit_many([ForwardJob(prepared[0], served)])
        return self._respond(request, prepared[0], output, started, request_id)

    async def predict_batch(
        self, requests: Sequence[PredictionRequest], topology: Topology | None = None, *,
        request_id: str | None = None,
    ) -> BatchPredictionResponse:
        """Several predictions in as few forward passes as the batch size allows; all or nothing:
        one invalid item fails the call with an error naming `requests[i]`."""
        started = time.perf_counter()
        if not requests:
            raise InvalidInputError("requests", "at least one request is required")
        if len(requests) > self.settings.max_batch_items:
            self._counters.invalid += 1
            raise InvalidInputError(
                "requests", f"has {len(requests)} items; the limit is {self.settings.max_batch_items} (MAX_BATCH_ITEMS)"
            )
        served = await self._current_model()
        prepared = await self._prepare(list(requests), served, topology, batch=True)
        outputs: list[GraphOutput] = []
        # A batch larger than the queue could never be admitted whole; it goes in queue-sized parts.
        jobs = [ForwardJob(item, served) for item in prepared]
        step = self.config.max_queue_size
        for offset in range(0, len(jobs), step):
            outputs += await self._batcher.submit_many(jobs[offset : offset + step])
        predictions = [
            PredictionResponse.model_validate(
                self._respond(req, prep, out, started, None if request_id is None else f"{request_id}:{i}"))
            for i, (req, prep, out) in enumerate(zip(requests, prepared, outputs, strict=True))
        ]
        return BatchPredictionResponse(
            predictions=predictions,
            total_count=len(predictions),
            total_time_ms=round((time.perf_counter() - started) * 1000.0, 3),
            request_id=request_id,
        )

    async def _prepare(
        self, requests: list[PredictionRequest], served: ServedModel, topology: Topology | None, batch: bool
    ) -> list[PreparedGraph]:
        def run() -> list[PreparedGraph]:
            prepare = self.preprocessor.prepare
            return [
                prepare(req, served.checkpoint, self._default_topology(req, topology),
                        f"requests[{i}]." if batch else "")
                for i, req in enumerate(requests)
            ]

        values = sum(len(series) for req in requests for series in req.sensor_data.values())
        try:
            return await asyncio.to_thread(run) if values > INLINE_PREPROCESS_MAX_VALUES else run()
        except InvalidInputError:
            self._counters.invalid += 1
            raise

    def _default_topology(self, request: PredictionRequest, topology: Topology | None) -> Topology | None:
        """The caller's default, else the topology the machine is bound to (PUT /equipment/{id})."""
        if topology is not None or request.topology is not None or request.topology_id is not None:
            return topology
        bound = self.bindings.get(request.equipment_id)
        return self.registry.get(bound) if bound is not None else None

    # -- ForwardStages' observer: passed on the event loop, failed on the worker thread ----------

    def passed(self, graphs: int) -> None:
        self._counters.forward_passes += 1
        self._counters.forward_graphs += graphs
        self.batch_sizes.observe(graphs)

    def failed(self, graphs: int) -> None:
        self._counters.failed += graphs

    def _respond(
        self, request: PredictionRequest, prepared: PreparedGraph, output: GraphOutput, started: float,
        request_id: str | None,
    ) -> dict[str, Any]:
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        layout = prepared.layout
        self.history.append(
            request.equipment_id, request.timestamp, output.model_version, output.system_health,
            {cid: float(h) for cid, h in zip(layout.component_ids, output.component_health, strict=True)},
            {name: p for name, p in zip(ANOMALY_TYPES, output.system_probabilities.tolist(), strict=True)},
            elapsed_ms, request_id=request_id, topology_id=prepared.topology_id,
        )
        degradation = self._degradation(request.equipment_id, output)
        data = response_data(
            equipment_id=request.equipment_id, timestamp=request.timestamp, topology_id=prepared.topology_id,
            component_ids=layout.component_ids, component_types=layout.component_types, output=output,
            degradation=degradation, inference_time_ms=elapsed_ms, request_id=request_id, policy=self.policy,
        )
        self._counters.predictions += 1
        self._latency.add(elapsed_ms)
        return data

    def _degradation(self, equipment_id: str, output: GraphOutput) -> DegradationInfo:
        """Trend over the machine's recent points of the serving model version."""
        seconds, healths = self.history.trend_series(equipment_id, output.model_version,
                                                     self.settings.history_max_points)
        return estimate_degradation_series(seconds, healths, output.system_health, self.trend_policy)

    # -- monitoring ------------------------------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        served = self._served
        batcher = self._batcher.stats()
        counters = self._counters
        passes = counters.forward_passes
        return {
            "model_path": str(served.path if served else self.config.model_path),
            "device": str(served.device) if served else self._configured_device(),
            "batch_size": self.config.batch_size,
            "pipeline_min_batch": self.config.pipeline_min_batch,
            "model_device": str(next(served.module.parameters()).device) if served else None,
            "model_parameters": served.num_parameters() if served else None,
            "queue_size": batcher["queue_size"],
            "processing": batcher["processing"],
            "model_loaded": served is not None,
            "model_version": served.model_version if served else None,
            "model_metrics": served.checkpoint.metrics if served else None,
            "compiled": served.compiled if served else None,
            "traced": served.traced if served else None,
            "requests": counters.predictions,
            "batches": passes,
            "mean_batch_size": round(counters.forward_graphs / passes, 3) if passes else None,
            "max_batch_size_seen": batcher["max_batch_size_seen"],
            "rejected_queue_full": batcher["rejected"],
            "invalid_requests": counters.invalid,
            "failed_predictions": counters.failed,
            "latency_ms": self._latency.summary(),
            "forward_ms": batcher["pass_ms"],
            "max_queue_size": self.config.max_queue_size,
            "max_wait_ms": self.config.max_wait_ms,
            "dynamic_batching": self.config.use_dynamic_batching,
            "uptime_s": round(time.monotonic() - counters.started_at, 3),
        }

    def _configured_device(self) -> str:
        try:
            return str(resolve_device(self.config.device))
        except Exception:  # stats must answer even when the configured device is unusable
            return self.config.device
