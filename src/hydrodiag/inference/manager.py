"""ModelManager: loads checkpoints once, keeps the most recently used in memory, places them on a
device, traces (or optionally compiles) them, and warms them up.

One manager per process (`ModelManager.instance()`), because a model held twice costs its memory
twice; tests construct their own. Thread-safe: a lock per checkpoint path makes two threads asking
for the same file wait for one load instead of loading it twice, while different files load in
parallel.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from hydrodiag.errors import DeviceUnavailableError, ModelNotLoadedError
from hydrodiag.features.graph import EncodedGraph, build_layout, encode_graph
from hydrodiag.inference.collate import collate
from hydrodiag.inference.tracing import TracedModel, trace_model
from hydrodiag.model.checkpoint import Checkpoint, load_checkpoint
from hydrodiag.model.gnn import ModelOutput
from hydrodiag.topology.templates import TEMPLATE_DIR, load_template_file

logger = logging.getLogger(__name__)

WARMUP_TOPOLOGY_FILE = TEMPLATE_DIR / "uci_test_rig.json"


def resolve_device(device: str) -> torch.device:
    """'auto' -> first CUDA device if there is one, else CPU; 'cuda[:n]' must exist."""
    name = device.strip().lower()
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device '{device}' requested but CUDA is not available (torch {torch.__version__}); "
                "use DEVICE=auto or DEVICE=cpu"
            )
        suffix = name.partition(":")[2]
        index = int(suffix) if suffix.isdigit() else 0 if name == "cuda" else -1
        if not 0 <= index < torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"device '{device}' does not exist: {torch.cuda.device_count()} CUDA device(s) visible"
            )
        return torch.device("cuda", index)
    raise DeviceUnavailableError(f"unknown device '{device}': expected auto, cpu, cuda or cuda:<index>")


def _summary(exc: BaseException) -> str:
    """`Type: first line of the message`, for logs and model info."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


@dataclass(frozen=True)
class _FileStamp:
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> _FileStamp | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        return cls(stat.st_size, stat.st_mtime_ns)


class ServedModel:
    """A loaded checkpoint on its device, callable on a torch_geometric Batch.

    By default the forward pass runs as a TorchScript trace made at load (`inference.tracing`: it
    releases the GIL for the whole pass); with `use_compile`, torch.compile is used instead. A trace
    that fails its check against the eager model at load, and a compiled callable that fails
    (compilation happens lazily, on the first calls), leave the model eager, with a warning:
    serving slower beats not serving.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        device: torch.device,
        path: Path,
        load_time_s: float,
        use_compile: bool,
        compile_mode: str | None,
        stamp: _FileStamp | None,
        use_trace: bool = False,
    ) -> None:
        self.checkpoint = checkpoint
        self.module = checkpoint.model
        self.device = device
        self.path = path
        self.loaded_at = datetime.now(UTC)
        self.load_time_s = load_time_s
        self.use_compile = use_compile
        self.compile_mode = compile_mode
        self.warmup_time_s: float | None = None
        self._stamp = stamp
        self._compiled: Callable[..., ModelOutput] | None = None
        self.compile_error: str | None = None
        self.use_trace = use_trace and not use_compile
        self._traced: TracedModel | None = None
        self.trace_error: str | None = None
        self.trace_failures = 0  # passes the trace failed at run time (then run eagerly)
        if self.use_trace:
            self._trace()
        if use_compile:
            try:
                self._compiled = torch.compile(self.module, mode=compile_mode, dynamic=True)
            except Exception as exc:  # any compiler problem must degrade to eager, never fail a load
                self._fall_back(exc)

    @property
    def model_version(self) -> str:
        return self.checkpoint.model_version

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    @property
    def traced(self) -> bool:
        return self._traced is not None

    def _trace(self) -> None:
        """Trace on 2 example graphs; check on 3 of which one has fewer sensors (another layout)."""
        try:
            graphs = example_graphs(self.checkpoint, 3)
            example = collate(graphs[:2]).to(self.device)
            check = collate([*graphs[:2], example_graphs(self.checkpoint, 1, sensors=9)[0]]).to(self.device)
            self._traced = trace_model(self.module, example, check)
        except Exception as exc:  # a model that cannot be traced is served eagerly, never refused
            self.trace_error = _summary(exc)
            logger.warning("tracing failed for %s (%s); serving the eager model", self.path, self.trace_error)

    def num_parameters(self) -> int:
        return self.module.num_parameters()

    def __call__(self, batch: Any) -> ModelOutput:
        traced = self._traced
        if traced is not None:
            try:
                return traced(batch)
            except Exception as exc:  # an input the trace does not hold for: this pass goes eager
                self.trace_failures += 1
                logger.warning("traced forward pass failed for %s (%s); this pass runs eagerly", self.path,
                               _summary(exc))
        args = (batch.series, batch.stats, batch.node_kind, batch.node_type, batch.edge_index,
                batch.edge_attr, batch.batch, int(batch.num_graphs))
        compiled = self._compiled
        if compiled is not None:
            try:
                return compiled(*args)
            except Exception as exc:  # compiled or recompiled graph failed: eager is the safe path
                self._fall_back(exc)
        return self.module(*args)

    def _fall_back(self, exc: BaseException) -> None:
        self._compiled = None
        self.compile_error = _summary(exc)
        logger.warning("torch.compile failed for %s (%s); serving the eager model", self.path,
                       self.compile_error)

    def matches(self, device: torch.device, use_compile: bool, compile_mode: str | None, use_trace: bool) -> bool:
        return (self.device, self.use_compile, self.compile_mode if self.use_compile else None, self.use_trace) == (
            device, use_compile, compile_mode if use_compile else None, use_trace and not use_compile)

    def info(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "device": str(self.device),
            "num_parameters": self.num_parameters(),
            "model_version": self.model_version,
            "loaded_at": self.loaded_at.isoformat(),
            "load_time_s": round(self.load_time_s, 4),
            "warmup_time_s": None if self.warmup_time_s is None else round(self.warmup_time_s, 4),
            "compiled": self.compiled,
            "compile_mode": self.compile_mode if self.use_compile else None,
            "compile_error": self.compile_error,
            "traced": self.traced,
            "trace_error": self.trace_error,
            "trace_failures": self.trace_failures,
            "config": self.checkpoint.config.to_dict(),
            "metrics": self.checkpoint.metrics,
            "training": self.checkpoint.training,
        }


def example_graphs(checkpoint: Checkpoint, count: int, sensors: int | None = None) -> list[EncodedGraph]:
    """`count` real graphs of the UCI test rig with plausible (mean +- std) synthetic series; with
    `sensors`, only that many of its sensors (another layout of the same machine)."""
    topology = load_template_file(WARMUP_TOPOLOGY_FILE)
    names = [sensor.name for sensor in topology.sensors][:sensors]
    layout = build_layout(topology, names)
    mean, std = checkpoint.norm.arrays(layout.sensor_quantities)
    window = checkpoint.config.window
    phase = np.linspace(0.0, 2.0 * math.pi, window, dtype=np.float32)
    graphs = []
    for i in range(count):
        wave = np.sin(phase[None, :] + 0.37 * i + np.arange(len(names), dtype=np.float32)[:, None])
        graphs.append(encode_graph(layout, mean[:, None] + 0.5 * std[:, None] * wave, checkpoint.norm))
    return graphs


def release_free_heap() -> None:
    """Hand the heap pages freed after loading and warm-up back to the OS (glibc keeps them otherwise).

    Loading parses the checkpoint and warm-up builds a batch of 32 example graphs; what they free stays
    in the process's resident memory until glibc is asked to trim. Elsewhere (musl, macOS) a no-op.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class ModelManager:
    """LRU cache of served models keyed by resolved checkpoint path."""

    _instance: ClassVar[ModelManager | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, capacity: int = 2) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._lock = threading.RLock()
        self._path_locks: dict[str, threading.Lock] = {}
        self._cache: OrderedDict[str, ServedModel] = OrderedDict()
        self.loads = 0  # checkpoint files actually read; tells a cache hit from a reload

    @classmethod
    def instance(cls, capacity: int | None = None) -> ModelManager:
        """The process-wide manager; `capacity` applies when this call creates it."""
        with cls._instance_lock:
            if cls._instance is None:
                if capacity is None:
                    from hydrodiag.settings import get_settings

                    capacity = get_settings().model_cache_size
                cls._instance = cls(capacity)
            return cls._instance

    @staticmethod
    def _key(model_path: str | os.PathLike[str]) -> str:
        return str(Path(model_path).expanduser().resolve())

    def _path_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._path_locks.setdefault(key, threading.Lock())

    def load_model(
        self,
        model_path: str | os.PathLike[str],
        device: str = "auto",
        use_compile: bool = False,
        compile_mode: str = "reduce-overhead",
        use_trace: bool = True,
    ) -> ServedModel:
        """The served model for this checkpoint, loading it unless an identical one is cached.

        A cached model is reused when device, trace and compile options match and the file has not
        changed on disk since it was read; otherwise the file is loaded again and replaces it.
        `use_trace` runs the forward pass as a TorchScript trace (see `ServedModel`); `use_compile`
        takes precedence over it.
        """
        key = self._key(model_path)
        target = resolve_device(device)
        with self._path_lock(key):
            path = Path(key)
            stamp = _FileStamp.of(path)
            with self._lock:
                cached = self._cache.get(key)
                if cached is not None and stamp is not None and cached._stamp == stamp and cached.matches(
                    target, use_compile, compile_mode, use_trace
                ):
                    self._cache.move_to_end(key)
                    return cached
            started = time.perf_counter()
            checkpoint = load_checkpoint(path, device=target)
            served = ServedModel(checkpoint, target, path, 0.0, use_compile, compile_mode if use_compile else None,
                                 stamp, use_trace)
            served.load_time_s = time.perf_counter() - started
            with self._lock:
                self.loads += 1
                self._cache[key] = served
                self._cache.move_to_end(key)
                while len(self._cache) > self.capacity:
                    evicted, _ = self._cache.popitem(last=False)
                    logger.info("model cache full (capacity %d): evicted %s", self.capacity, evicted)
            logger.info("loaded model %s version %s on %s in %.2fs", path, served.model_version, target,
                        served.load_time_s)
            return served

    def get_model(self, model_path: str | os.PathLike[str]) -> ServedModel:
        key = self._key(model_path)
        with self._lock:
            served = self._cache.get(key)
            if served is None:
                raise ModelNotLoadedError(f"model '{model_path}' is not loaded; call load_model first")
            self._cache.move_to_end(key)
            return served

    def get_model_info(self, model_path: str | os.PathLike[str]) -> dict[str, Any]:
        return self.get_model(model_path).info()

    def warmup(self, model_path: str | os.PathLike[str], batch_size: int = 32) -> float:
        """Run the model on real graphs of 1 and `batch_size` machines; returns the seconds spent.

        The first forward pass pays one-off costs (allocator growth, kernel selection, compilation
        when compiled); paying them here keeps them out of the first user's latency.
        """
        served = self.get_model(model_path)
        started = time.perf_counter()
        graphs = example_graphs(served.checkpoint, max(1, batch_size))
        with torch.inference_mode():
            for size in sorted({1, max(1, batch_size)}):
                batch = collate(graphs[:size]).to(served.device)
                served(batch)
        if served.device.type == "cuda":
            torch.cuda.synchronize(served.device)
        served.warmup_time_s = time.perf_counter() - started
        release_free_heap()
        return served.warmup_time_s

    def list_cached_models(self) -> list[str]:
        """Cached checkpoint paths, least recently used first."""
        with self._lock:
            return list(self._cache)

    def clear_cache(self, model_path: str | os.PathLike[str] | None = None) -> None:
        with self._lock:
            if model_path is None:
                self._cache.clear()
            else:
                self._cache.pop(self._key(model_path), None)
