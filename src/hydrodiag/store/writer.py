"""A bounded buffer between the request path and the database, drained by one background thread.

A prediction is answered before its row is written: `put` only appends to the buffer (or, when the
buffer is full, drops the row, counts it and logs it). The writer thread inserts rows in batches; a
failed batch stays at the head of the buffer and is retried with exponential backoff, so a database
outage delays rows instead of losing them, up to `capacity` rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import Any

from hydrodiag.os_threads import name_os_thread

logger = logging.getLogger(__name__)

Row = dict[str, Any]
# Logging every dropped row during an outage would flood the log; one line per interval says how many.
_DROP_LOG_INTERVAL_S = 10.0
_MIN_BACKOFF_S = 0.05


class BufferedWriter:
    def __init__(
        self,
        write: Callable[[list[Row]], None],
        *,
        capacity: int,
        batch_size: int,
        flush_interval_s: float,
        retry_max_s: float,
        name: str = "hydrodiag-history-writer",
    ) -> None:
        if capacity < 1 or batch_size < 1 or flush_interval_s <= 0 or retry_max_s <= 0:
            raise ValueError("capacity and batch_size must be >= 1; intervals must be positive")
        self._write = write
        self.capacity = capacity
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retry_max_s = retry_max_s
        self._name = name
        self._rows: deque[Row] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._abandon = False
        self._flush_waiters = 0
        self.accepted = 0  # rows ever buffered; rows leave in order, so `written` catches up with it
        self.written = 0
        self.write_failures = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._drops_since_log = 0
        self._last_drop_log = 0.0

    # -- producer side (request path: never blocks on the database) -------------------------------

    def put(self, row: Row) -> bool:
        """Buffer one row; False (counted and logged) when the buffer is full."""
        with self._cond:
            if len(self._rows) >= self.capacity:
                self.dropped += 1
                self._drops_since_log += 1
                now = time.monotonic()
                if now - self._last_drop_log >= _DROP_LOG_INTERVAL_S:
                    logger.error("history buffer full (%d rows, database unavailable: %s); dropped %d row(s)",
                                 self.capacity, self.last_error or "writes too slow", self._drops_since_log)
                    self._drops_since_log = 0
                    self._last_drop_log = now
                return False
            self._rows.append(row)
            self.accepted += 1
            # Wake the writer for the first row (it then waits up to the flush interval for more)
            # and when a full batch is ready.
            if len(self._rows) == 1 or len(self._rows) >= self.batch_size:
                self._cond.notify_all()
            return True

    @property
    def size(self) -> int:
        return len(self._rows)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def flush(self, timeout_s: float) -> bool:
        """Wait until every row buffered before this call is written (True) or the timeout passes
        (False). Rows that arrive meanwhile are not waited for, so a flush ends under steady load."""
        with self._cond:
            target = self.accepted
            self._flush_waiters += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self.written >= target, timeout=timeout_s)
            finally:
                self._flush_waiters -= 1

    def close(self, timeout_s: float) -> bool:
        """Write what is buffered (retrying for up to `timeout_s`), then stop. True when nothing is lost."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        with self._cond:
            self._abandon = True  # a thread still retrying gives up at its next wake-up
            self._cond.notify_all()
            left = len(self._rows)
        if left:
            logger.error("history writer stopped with %d unwritten row(s): %s", left, self.last_error)
        self._thread = None
        return left == 0

    # -- writer thread ---------------------------------------------------------------------------

    def _next_batch(self) -> list[Row] | None:
        with self._cond:
            while not self._rows:
                if self._stopping or self._abandon:
                    return None
                self._cond.wait()
            if len(self._rows) < self.batch_size and not (self._stopping or self._flush_waiters):
                # Wait a little for a fuller batch: one insert of many rows costs about one of few.
                self._cond.wait(self.flush_interval_s)
            if self._abandon:
                return None
            return list(islice(self._rows, self.batch_size))

    def _run(self) -> None:
        name_os_thread()
        backoff = 0.0
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._write(batch)
            except Exception as exc:  # any database error: keep the rows, back off, try again
                backoff = min(max(_MIN_BACKOFF_S, backoff * 2), self.retry_max_s)
                with self._cond:
                    self.write_failures += 1
                    self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
                    logger.warning("history write of %d row(s) failed (%s); %d buffered, retry in %.2fs",
                                   len(batch), self.last_error, len(self._rows), backoff)
                    self._cond.wait_for(lambda: self._abandon, timeout=backoff)
                continue
            backoff = 0.0
            with self._cond:
                for _ in batch:
                    self._rows.popleft()
                self.written += len(batch)
                if self.last_error is not None:
                    logger.info("history writes resumed; %d row(s) still buffered", len(self._rows))
                    self.last_error = None
                self._cond.notify_all()

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {"buffered": len(self._rows), "capacity": self.capacity, "written": self.written,
                    "write_failures": self.write_failures, "dropped": self.dropped, "last_error": self.last_error}
