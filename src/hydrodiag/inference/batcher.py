"""Dynamic batching: concurrent submissions share forward passes.

Rule: whenever the model is free, the worker takes everything queued at that moment (up to
`batch_size`) and runs it as one pass. A request that arrives while the model is idle is therefore
dispatched at once; requests that arrive during a pass wait only for that pass and then go
together. `max_wait_ms` applies only under load -- when requests were already queued as the previous
pass ended, the next batch may wait up to that long to fill up -- so it trades a bounded latency
for larger batches exactly when there is traffic to batch, and never delays an idle service.

The pass runs on one dedicated thread (torch releases the GIL inside its kernels), so the event
loop keeps accepting and parsing requests while the model computes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from hydrodiag.errors import EngineClosedError, QueueFullError

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class LatencyTracker:
    """Percentiles over the most recent `capacity` samples (a ring buffer: memory stays bounded)."""

    def __init__(self, capacity: int = 4096) -> None:
        self._samples: deque[float] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def add(self, milliseconds: float) -> None:
        with self._lock:
            self._samples.append(milliseconds)

    def summary(self) -> dict[str, float | int | None]:
        with self._lock:
            samples = np.fromiter(self._samples, dtype=np.float64, count=len(self._samples))
        if samples.size == 0:
            return {"count": 0, "p50": None, "p95": None, "p99": None, "mean": None}
        p50, p95, p99 = np.percentile(samples, [50, 95, 99])
        return {"count": int(samples.size), "p50": round(float(p50), 3), "p95": round(float(p95), 3),
                "p99": round(float(p99), 3), "mean": round(float(samples.mean()), 3)}


@dataclass
class _Entry(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    group: int


class DynamicBatcher(Generic[T, R]):
    """Queues items and feeds them to `process` (a blocking function on the worker thread) in batches.

    `process` receives a list of items and returns one result per item, in order. With
    `merge_submissions=False` a pass only holds items of one `submit_many` call (no dynamic batching
    across requests), which is what `use_dynamic_batching=False` means.
    """

    def __init__(
        self,
        process: Callable[[list[T]], list[R]],
        *,
        batch_size: int,
        max_queue_size: int,
        max_wait_ms: float = 0.0,
        merge_submissions: bool = True,
        thread_name: str = "hydrodiag-forward",
    ) -> None:
        if batch_size < 1 or max_queue_size < 1 or max_wait_ms < 0:
            raise ValueError("batch_size and max_queue_size must be >= 1 and max_wait_ms >= 0")
        self._process = process
        self.batch_size = batch_size
        self.max_queue_size = max_queue_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.merge_submissions = merge_submissions
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._queue: deque[_Entry[T, R]] = deque()
        self._groups = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._under_load = False
        self._closed = False
        self.processing = False
        self.submitted = 0
        self.rejected = 0
        self.dispatches = 0
        self.dispatched_items = 0
        self.max_dispatch_size = 0
        self.pass_latency = LatencyTracker()

    @property
    def queue_size(self) -> int:
        return len(self._queue)

    async def submit(self, item: T) -> R:
        return (await self.submit_many([item]))[0]

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        """Enqueue all items at once (or none: QueueFullError) and wait for their results."""
        if self._closed:
            raise EngineClosedError("the inference engine is shutting down")
        if not items:
            return []
        loop = self._bind_loop()
        if len(self._queue) + len(items) > self.max_queue_size:
            self.rejected += len(items)
            raise QueueFullError(self.max_queue_size, self._retry_after_s())
        group = next(self._groups)
        futures: list[asyncio.Future[R]] = []
        for item in items:
            future: asyncio.Future[R] = loop.create_future()
            futures.append(future)
            self._queue.append(_Entry(item, future, group))
        self.submitted += len(items)
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*futures))
        finally:
            # A failed or cancelled caller no longer wants the rest; the worker skips done futures.
            for future in futures:
                if not future.cancel() and not future.cancelled():
                    future.exception()  # marks a sibling's failure as seen (no "never retrieved" noise)

    def _retry_after_s(self) -> float:
        """Time to drain the queue at the recent pace, at least one second (Retry-After is whole seconds)."""
        p50 = self.pass_latency.summary()["p50"]
        passes = math.ceil(len(self._queue) / self.batch_size)
        return float(max(1, math.ceil(passes * float(p50 or 0.0) / 1000.0)))

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._worker is not None and not self._worker.done():
            return loop
        if self._loop is not None and self._loop is not loop and self._loop.is_running():
            raise RuntimeError("this engine is already serving another running event loop")
        if self._worker is not None and self._worker.done() and not self._worker.cancelled():
            error = self._worker.exception()
            if error is not None:
                logger.error("batching worker stopped unexpectedly; restarting it", exc_info=error)
        if self._loop is not loop:
            # Entries of a finished loop can never be answered; their callers are gone with it.
            self._queue.clear()
        self._loop = loop
        self._wakeup = asyncio.Event()
        self._worker = loop.create_task(self._run(), name="hydrodiag-batcher")
        return loop

    async def _run(self) -> None:
        assert self._loop is not None and self._wakeup is not None
        loop, wakeup = self._loop, self._wakeup
        while True:
            if not self._queue:
                self._under_load = False
                wakeup.clear()
                await wakeup.wait()
                continue
            if self._under_load and self.max_wait_s > 0 and len(self._queue) < self.batch_size:
                await self._top_up(wakeup)
            entries = self._take()
            if not entries:
                continue
            await self._dispatch(loop, entries)
            self._under_load = bool(self._queue)

    async def _top_up(self, wakeup: asyncio.Event) -> None:
        deadline = time.monotonic() + self.max_wait_s
        while len(self._queue) < self.batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), remaining)

    def _take(self) -> list[_Entry[T, R]]:
        entries: list[_Entry[T, R]] = []
        group = None
        while self._queue and len(entries) < self.batch_size:
            head = self._queue[0]
            if head.future.done():  # cancelled by its caller: no point computing it
                self._queue.popleft()
                continue
            if not self.merge_submissions and group is not None and head.group != group:
                break
            group = head.group
            entries.append(self._queue.popleft())
        return entries

    async def _dispatch(self, loop: asyncio.AbstractEventLoop, entries: list[_Entry[T, R]]) -> None:
        self.processing = True
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._process, [e.item for e in entries])
            if len(results) != len(entries):
                raise RuntimeError(f"processing returned {len(results)} results for {len(entries)} items")
        except asyncio.CancelledError:
            for entry in entries:
                if not entry.future.done():
                    entry.future.set_exception(EngineClosedError("the inference engine shut down"))
            raise
        except Exception as exc:
            for entry in entries:
                if not entry.future.done():
                    entry.future.set_exception(exc)
        else:
            for entry, result in zip(entries, results, strict=True):
                if not entry.future.done():
                    entry.future.set_result(result)
        finally:
            self.processing = False
            self.dispatches += 1
            self.dispatched_items += len(entries)
            self.max_dispatch_size = max(self.max_dispatch_size, len(entries))
            self.pass_latency.add((time.perf_counter() - started) * 1000.0)

    def stats(self) -> dict[str, Any]:
        return {
            "queue_size": len(self._queue),
            "processing": self.processing,
            "submitted": self.submitted,
            "rejected": self.rejected,
            "dispatches": self.dispatches,
            "mean_batch_size": round(self.dispatched_items / self.dispatches, 3) if self.dispatches else None,
            "max_batch_size_seen": self.max_dispatch_size,
            "pass_ms": self.pass_latency.summary(),
        }

    async def close(self) -> None:
        """Stop accepting work, fail what is still queued, and stop the worker."""
        self._closed = True
        while self._queue:
            entry = self._queue.popleft()
            if not entry.future.done():
                entry.future.set_exception(EngineClosedError("the inference engine shut down"))
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done():
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                if worker.get_loop() is asyncio.get_running_loop():
                    await worker
        self._executor.shutdown(wait=False, cancel_futures=True)
