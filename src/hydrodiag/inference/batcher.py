"""Dynamic batching: concurrent submissions share forward passes.

Rule: whenever the model is free, everything queued at that moment (up to `batch_size`) goes into
one pass -- except that a long queue is split (`pipeline_min_batch`): the pass takes half of it,
never fewer than `pipeline_min_batch`, so the event loop answers the first half while the model
runs the second instead of idling until one large pass ends (on 2 CPU cores: ~22 % more requests
per second at 16 clients, README's PIPELINE_MIN_BATCH). A request that arrives while the model is
idle is therefore dispatched at once, from inside its own submit call; requests that arrive during
a pass wait only for that pass and then go together. `max_wait_ms` applies only under load -- when
requests were already queued as the previous pass ended, the next batch may wait up to that long to
fill up -- so it trades a bounded latency for larger batches exactly when there is traffic to batch,
and never delays an idle service.

A pass has three stages (`PassStages`): `prepare` (collate) and `finish` (cut the output per item)
run on the event loop's thread, `run` (the forward pass) on one dedicated thread. A traced model
releases the GIL for its whole pass, so the event loop keeps accepting, parsing and answering
requests while the model computes; any Python work on the dedicated thread would instead wait for
the busy event loop to hand over the GIL -- up to a switch interval -- at every torch call. Passes are
started from the submit call and from the end of the previous pass -- before that pass's callers are
resumed -- never from a task that waits its turn on the event loop: a burst of requests then flows
through the model in a pipeline, the first one at once, instead of in lockstep waves where the
model idles while the loop prepares a whole wave and the loop idles while the model runs it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from hydrodiag.errors import EngineClosedError, QueueFullError
from hydrodiag.os_threads import name_os_thread

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class PassStages(Protocol[T, R_co]):
    """What one pass does with its items: `prepare` and `finish` on the event loop, `run` on the
    worker thread (keep Python out of it: see the module docstring)."""

    def prepare(self, items: list[T]) -> Any: ...

    def run(self, prepared: Any) -> Any: ...

    def finish(self, prepared: Any, ran: Any) -> Sequence[R_co]: ...


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
    """Queues items and feeds them to `stages` in batches: one result per item, in order. With
    `merge_submissions=False` a pass only holds items of one `submit_many` call (no dynamic batching
    across requests), which is what `use_dynamic_batching=False` means.
    """

    def __init__(
        self,
        stages: PassStages[T, R],
        *,
        batch_size: int,
        max_queue_size: int,
        max_wait_ms: float = 0.0,
        merge_submissions: bool = True,
        pipeline_min_batch: int = 0,
        thread_name: str = "hydrodiag-forward",
    ) -> None:
        """`pipeline_min_batch`: 0 = every pass takes up to `batch_size`; n = a queue longer than n is
        split, the pass taking half of it but at least n (not with `max_wait_ms`, which asks for
        full batches)."""
        if batch_size < 1 or max_queue_size < 1 or max_wait_ms < 0 or pipeline_min_batch < 0:
            raise ValueError("batch_size and max_queue_size must be >= 1, max_wait_ms and pipeline_min_batch >= 0")
        self._stages = stages
        self.batch_size = batch_size
        # Resolved once: with max_wait_ms the caller asks for full batches, so no queue is split.
        self._split_floor = 0 if max_wait_ms > 0 else pipeline_min_batch
        self.max_queue_size = max_queue_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.merge_submissions = merge_submissions
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name,
                                            initializer=name_os_thread)
        self._queue: deque[_Entry[T, R]] = deque()
        self._groups = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: list[_Entry[T, R]] = []
        self._fill_timer: asyncio.TimerHandle | None = None
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
        self._pump()
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
        if self._loop is loop:
            return loop
        if self._loop is not None and self._loop.is_running() and not self._loop.is_closed():
            raise RuntimeError("this engine is already serving another running event loop")
        # Entries of a finished loop can never be answered; their callers are gone with it.
        self._queue.clear()
        self._in_flight = []
        self._fill_timer = None
        self.processing = False
        self._loop = loop
        return loop

    def _pump(self) -> None:
        """Start a pass if the model is free and there is work (on the event loop's thread)."""
        if self.processing or self._closed:
            return
        if not self._queue:
            self._under_load = False
            return
        if self._fill_timer is not None:
            if len(self._queue) < self.batch_size:
                return  # still filling; the timer starts the pass
            self._fill_timer.cancel()
            self._fill_timer = None
        elif self._under_load and self.max_wait_s > 0 and len(self._queue) < self.batch_size:
            assert self._loop is not None
            self._fill_timer = self._loop.call_later(self.max_wait_s, self._filled)
            return
        entries = self._take()
        if entries:
            self._start(entries)

    def _filled(self) -> None:
        self._fill_timer = None
        self._under_load = False  # the wait is over: go with what is queued
        self._pump()

    def _take(self) -> list[_Entry[T, R]]:
        entries: list[_Entry[T, R]] = []
        group = None
        limit = self._pass_size()
        while self._queue and len(entries) < limit:
            head = self._queue[0]
            if head.future.done():  # cancelled by its caller: no point computing it
                self._queue.popleft()
                continue
            if not self.merge_submissions and group is not None and head.group != group:
                break
            group = head.group
            entries.append(self._queue.popleft())
        return entries

    def _pass_size(self) -> int:
        """How many queued items the next pass may take (cancelled ones it skips do not count)."""
        if not self._split_floor:
            return self.batch_size
        return min(self.batch_size, max(self._split_floor, (len(self._queue) + 1) // 2))

    def _start(self, entries: list[_Entry[T, R]]) -> None:
        assert self._loop is not None
        started = time.perf_counter()
        try:
            prepared = self._stages.prepare([e.item for e in entries])
        except Exception as exc:
            self._fail(entries, exc)
            self._pump()
            return
        self.processing = True
        self._in_flight = entries
        future = self._loop.run_in_executor(self._executor, self._stages.run, prepared)
        future.add_done_callback(lambda done: self._finish(entries, started, prepared, done))

    @staticmethod
    def _fail(entries: list[_Entry[T, R]], error: BaseException) -> None:
        for entry in entries:
            if not entry.future.done():
                entry.future.set_exception(error)

    def _finish(self, entries: list[_Entry[T, R]], started: float, prepared: Any, done: asyncio.Future[Any]) -> None:
        self.processing = False
        self._in_flight = []
        self.dispatches += 1
        self.dispatched_items += len(entries)
        self.max_dispatch_size = max(self.max_dispatch_size, len(entries))
        self.pass_latency.add((time.perf_counter() - started) * 1000.0)
        self._under_load = bool(self._queue)
        self._pump()  # the next pass starts before this one's callers run
        if done.cancelled():
            self._fail(entries, EngineClosedError("the inference engine shut down"))
            return
        try:
            error = done.exception()
            if error is not None:
                raise error
            results = self._stages.finish(prepared, done.result())
            if len(results) != len(entries):
                raise RuntimeError(f"processing returned {len(results)} results for {len(entries)} items")
        except Exception as exc:
            self._fail(entries, exc)
            return
        for entry, result in zip(entries, results, strict=True):
            if not entry.future.done():
                entry.future.set_result(result)

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
        """Stop accepting work; fail what is queued or still computing; stop the worker thread."""
        self._closed = True
        if self._fill_timer is not None:
            self._fill_timer.cancel()
            self._fill_timer = None
        closing = [*self._queue, *self._in_flight]
        self._queue.clear()
        for entry in closing:
            if not entry.future.done():
                entry.future.set_exception(EngineClosedError("the inference engine shut down"))
        self._executor.shutdown(wait=False, cancel_futures=True)
