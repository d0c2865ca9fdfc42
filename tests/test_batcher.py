"""DynamicBatcher's scheduling with stand-in stages: when passes start, what each stage runs on, errors."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from hydrodiag.errors import EngineClosedError
from hydrodiag.inference.batcher import DynamicBatcher


class Recorder:
    """Doubles each item; records pass sizes and the thread each stage ran on."""

    def __init__(self, gate: threading.Event | None = None, fail_in: str | None = None) -> None:
        self.gate = gate
        self.fail_in = fail_in
        self.passes: list[list[int]] = []
        self.threads: dict[str, set[int]] = {"prepare": set(), "run": set(), "finish": set()}

    def prepare(self, items: list[int]) -> list[int]:
        self.threads["prepare"].add(threading.get_ident())
        if self.fail_in == "prepare":
            raise ValueError("cannot collate")
        self.passes.append(list(items))
        return items

    def run(self, prepared: list[int]) -> list[int]:
        self.threads["run"].add(threading.get_ident())
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail_in == "run":
            raise RuntimeError("forward failed")
        return [2 * x for x in prepared]

    def finish(self, prepared: list[int], ran: list[int]) -> list[int]:
        self.threads["finish"].add(threading.get_ident())
        if self.fail_in == "finish":
            raise RuntimeError("cannot split")
        return ran


async def test_an_idle_batcher_starts_the_pass_inside_submit_and_queues_the_rest() -> None:
    gate = threading.Event()
    stages = Recorder(gate)
    batcher: DynamicBatcher[int, int] = DynamicBatcher(stages, batch_size=4, max_queue_size=64)
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0)  # the first submit runs up to its await: its pass has started
    assert stages.passes == [[0]] and batcher.processing
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 10)]
    await asyncio.sleep(0.05)
    assert stages.passes == [[0]]  # the others wait for the model, queued
    gate.set()
    assert await first == 0 and await asyncio.gather(*rest) == [2 * i for i in range(1, 10)]
    # Each pass takes everything queued when the previous one ended, up to batch_size.
    assert stages.passes == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]
    loop_thread = threading.get_ident()
    assert stages.threads["prepare"] == stages.threads["finish"] == {loop_thread}
    assert stages.threads["run"] and loop_thread not in stages.threads["run"]
    await batcher.close()


@pytest.mark.parametrize("stage", ["prepare", "run", "finish"])
async def test_a_failing_stage_fails_its_pass_and_the_batcher_goes_on(stage: str) -> None:
    stages = Recorder(fail_in=stage)
    batcher: DynamicBatcher[int, int] = DynamicBatcher(stages, batch_size=8, max_queue_size=64)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ValueError if stage == "prepare" else RuntimeError) for r in results)
    stages.fail_in = None
    assert await batcher.submit(21) == 42
    assert not batcher.processing and batcher.queue_size == 0
    await batcher.close()


async def test_close_fails_queued_and_running_items() -> None:
    gate = threading.Event()
    batcher: DynamicBatcher[int, int] = DynamicBatcher(Recorder(gate), batch_size=2, max_queue_size=64)
    calls: list[asyncio.Future[Any]] = [asyncio.ensure_future(batcher.submit(i)) for i in range(5)]
    await asyncio.sleep(0.05)
    await batcher.close()
    gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, EngineClosedError) for r in results)
    with pytest.raises(EngineClosedError):
        await batcher.submit(9)


async def test_under_load_the_next_pass_waits_up_to_max_wait_to_fill() -> None:
    gate = threading.Event()
    stages = Recorder(gate)
    batcher: DynamicBatcher[int, int] = DynamicBatcher(stages, batch_size=4, max_queue_size=64, max_wait_ms=200.0)
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(batcher.submit(1))  # queued while the model is busy: traffic
    await asyncio.sleep(0.01)
    gate.set()
    await first
    await asyncio.sleep(0.05)
    assert stages.passes == [[0]]  # pass 2 is filling, not started
    late = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3)]
    await asyncio.sleep(0.05)
    assert stages.passes == [[0]]
    last = asyncio.ensure_future(batcher.submit(4))  # the fourth queued item fills the batch: it goes now
    await asyncio.sleep(0)
    assert stages.passes == [[0], [1, 2, 3, 4]]
    assert await asyncio.gather(second, *late, last) == [2, 4, 6, 8]
    await batcher.close()


async def queued_behind_one_pass(count: int, **options: Any) -> tuple[list[int], Recorder]:
    """Items 1..count queued while item 0's pass holds the model, then the model released: results, stages."""
    gate = threading.Event()
    stages = Recorder(gate)
    batcher: DynamicBatcher[int, int] = DynamicBatcher(stages, max_queue_size=64, **options)
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, count + 1)]
    await asyncio.sleep(0.01)
    gate.set()
    results = list(await asyncio.gather(first, *rest))
    await batcher.close()
    return results, stages


async def test_a_long_queue_is_split_so_answers_flow_while_the_model_runs_the_rest() -> None:
    results, stages = await queued_behind_one_pass(20, batch_size=8, pipeline_min_batch=3)
    assert results == [2 * i for i in range(21)]
    # Half the queue per pass (at most batch_size, at least pipeline_min_batch), in order, nothing lost.
    assert [len(p) for p in stages.passes] == [1, 8, 6, 3, 3]
    assert [x for p in stages.passes for x in p] == list(range(21))


@pytest.mark.parametrize(("queued", "floor", "wait_ms", "passes"), [
    (5, 5, 0.0, [1, 5]),  # no longer than the floor: one pass
    (10, 2, 50.0, [1, 8, 2]),  # MAX_WAIT_MS asks for full batches: no split
])
async def test_short_queues_and_filling_batches_are_not_split(queued: int, floor: int, wait_ms: float,
                                                              passes: list[int]) -> None:
    _, stages = await queued_behind_one_pass(queued, batch_size=8, pipeline_min_batch=floor, max_wait_ms=wait_ms)
    assert [len(p) for p in stages.passes] == passes
