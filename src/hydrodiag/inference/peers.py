"""What the worker processes of one server (WORKERS > 1) share: a generation counter of changes to
their common state, the checkpoint every worker must serve, and each worker's acknowledgement.

Registered topologies and equipment bindings live in the history database; the served checkpoint
lives here. A worker that changes either (a registration, a binding, an activation) applies it
itself, bumps the generation and waits until every worker that is up has applied it
(`wait_for_peers`), so that the caller's next request sees the change whichever worker answers
it. Each worker polls the generation and, when it moved, re-reads the shared state and
acknowledges the generation it read. A worker that is not up (starting, or being restarted by
the supervisor) acknowledges nothing and is not waited for: it reads the whole state when it
comes up.

The block also carries each worker's latest metrics exposition, so that whichever worker Prometheus
reaches answers for all of them.

The block is an anonymous shared mmap made by the supervisor before it forks the workers, so
reading the generation is a memory read, and the block needs no server.
"""

from __future__ import annotations

import asyncio
import fcntl
import mmap
import os
import struct
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydrodiag.errors import PeerSyncError

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_GENERATION_AT = 0
_PATH_LENGTH_AT = 8
_PATH_AT = 16
MAX_PATH_BYTES = 4080
_ACKS_AT = _PATH_AT + MAX_PATH_BYTES
# Each worker's latest metrics exposition (WORKERS > 1: any worker answers /metrics for all of them):
# a sequence number, the length, the text.
METRICS_SLOT_BYTES = 1 << 20
_METRICS_HEADER = 12
_READ_ATTEMPTS = 100
# Acknowledgement of a worker that is not up: generations start at 1.
NOT_UP = 0


class WorkerGroup:
    """The shared block of `workers` processes; create it before forking them.

    No lock a dead process could keep: the generation and the model path change under a POSIX
    record lock on a temporary file (the kernel releases it when its holder dies), and each metrics
    slot has a single writer and a sequence number that readers check (a seqlock)."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("a worker group needs at least one worker")
        self.workers = workers
        self._metrics_at = _ACKS_AT + 8 * workers
        # Anonymous mmaps are MAP_SHARED, so forks share it; pages never written take no memory.
        self._block = mmap.mmap(-1, self._metrics_at + METRICS_SLOT_BYTES * workers)
        self._lock_file = tempfile.TemporaryFile()  # noqa: SIM115 -- lives as long as the group
        _U64.pack_into(self._block, _GENERATION_AT, 1)

    def peer(self, slot: int, timeout_s: float = 30.0) -> Peers:
        if not 0 <= slot < self.workers:
            raise ValueError(f"slot {slot} outside 0..{self.workers - 1}")
        return Peers(self, slot, timeout_s)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.lockf(self._lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._lock_file, fcntl.LOCK_UN)

    # -- generation, model path, acknowledgements -------------------------------------------------

    def generation(self) -> int:
        return int(_U64.unpack_from(self._block, _GENERATION_AT)[0])

    def model_path(self) -> Path | None:
        """The checkpoint every worker must serve; None until the first activation."""
        with self._locked():
            length = _U32.unpack_from(self._block, _PATH_LENGTH_AT)[0]
            raw = bytes(self._block[_PATH_AT : _PATH_AT + length])
        return Path(raw.decode("utf-8")) if length else None

    def bump(self, model_path: Path | None = None) -> int:
        """A new generation (and, with `model_path`, the checkpoint to serve from now on)."""
        raw = str(model_path).encode("utf-8") if model_path is not None else b""
        if len(raw) > MAX_PATH_BYTES:
            raise ValueError(f"model path longer than {MAX_PATH_BYTES} bytes")
        with self._locked():
            if model_path is not None:
                self._block[_PATH_AT : _PATH_AT + len(raw)] = raw
                _U32.pack_into(self._block, _PATH_LENGTH_AT, len(raw))
            generation = self.generation() + 1
            _U64.pack_into(self._block, _GENERATION_AT, generation)
        return generation

    def acknowledged(self, slot: int) -> int:
        return int(_U64.unpack_from(self._block, _ACKS_AT + 8 * slot)[0])

    def acknowledge(self, slot: int, generation: int) -> None:
        _U64.pack_into(self._block, _ACKS_AT + 8 * slot, generation)

    def mark_down(self, slot: int) -> None:
        """The supervisor saw this worker exit: nobody waits for it until it is up again, and its
        metrics leave the exposition (its replacement's counters start from zero, as after a restart)."""
        self.acknowledge(slot, NOT_UP)
        self.put_metrics(slot, b"")

    # -- metrics slots (seqlock: one writer per slot) ---------------------------------------------

    def put_metrics(self, slot: int, exposition: bytes) -> None:
        at = self._metrics_at + METRICS_SLOT_BYTES * slot
        if len(exposition) > METRICS_SLOT_BYTES - _METRICS_HEADER:
            exposition = b""  # far beyond any real exposition: better absent than cut mid-line
        sequence = _U64.unpack_from(self._block, at)[0]
        sequence += 1 if sequence % 2 == 0 else 2  # odd while writing (a writer that died mid-way: even it)
        _U64.pack_into(self._block, at, sequence)
        _U32.pack_into(self._block, at + 8, len(exposition))
        self._block[at + _METRICS_HEADER : at + _METRICS_HEADER + len(exposition)] = exposition
        _U64.pack_into(self._block, at, sequence + 1)

    def metrics(self, slot: int) -> bytes:
        """The slot's latest complete exposition (empty if it keeps changing under the reader)."""
        at = self._metrics_at + METRICS_SLOT_BYTES * slot
        for _ in range(_READ_ATTEMPTS):
            before = _U64.unpack_from(self._block, at)[0]
            if before % 2 == 0:
                length = min(_U32.unpack_from(self._block, at + 8)[0], METRICS_SLOT_BYTES - _METRICS_HEADER)
                text = bytes(self._block[at + _METRICS_HEADER : at + _METRICS_HEADER + length])
                if _U64.unpack_from(self._block, at)[0] == before:
                    return text
            time.sleep(0)
        return b""


class Peers:
    """One worker's view of its group."""

    POLL_S = 0.005

    def __init__(self, group: WorkerGroup, slot: int, timeout_s: float = 30.0) -> None:
        self.group = group
        self.slot = slot
        self.timeout_s = timeout_s

    def describe(self) -> dict[str, int]:
        return {"slot": self.slot, "workers": self.group.workers, "pid": os.getpid()}

    def generation(self) -> int:
        return self.group.generation()

    def model_path(self) -> Path | None:
        return self.group.model_path()

    async def publish(self, what: str, model_path: Path | None = None) -> None:
        """This worker changed the shared state (stored it, applied it itself): make every other worker
        that is up apply it before the caller hears back. Raises PeerSyncError naming the laggards."""
        generation = self.group.bump(model_path)
        lagging = await self.wait_for_peers(generation, self.timeout_s)
        if lagging:
            raise PeerSyncError(what, lagging, self.timeout_s)

    def acknowledge(self, generation: int) -> None:
        """This worker serves the state of `generation` (or a later one)."""
        self.group.acknowledge(self.slot, generation)

    def share_metrics(self, exposition: bytes) -> None:
        self.group.put_metrics(self.slot, exposition)

    def others_metrics(self) -> dict[int, bytes]:
        """The latest exposition each other worker shared (workers that shared none are left out)."""
        shared = {slot: self.group.metrics(slot) for slot in range(self.group.workers) if slot != self.slot}
        return {slot: text for slot, text in shared.items() if text}

    def lagging(self, generation: int) -> list[int]:
        """Slots of the workers that are up but have not applied `generation` yet."""
        return [
            slot for slot in range(self.group.workers)
            if slot != self.slot and NOT_UP < self.group.acknowledged(slot) < generation
        ]

    async def wait_for_peers(self, generation: int, timeout_s: float) -> list[int]:
        """Wait until every other worker that is up has applied `generation`; the slots still
        lagging when `timeout_s` ran out (empty: all applied)."""
        deadline = time.monotonic() + timeout_s
        while (lagging := self.lagging(generation)) and time.monotonic() < deadline:
            await asyncio.sleep(self.POLL_S)
        return lagging
