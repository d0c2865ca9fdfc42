"""One forward pass over queued graphs, in the batcher's three stages (`batcher.PassStages`).

`prepare` (event loop): group the graphs by the model they were built for (two models only around
a swap), collate each group, pin and copy it to the device. `run` (worker thread): the model on each
group under `torch.inference_mode`, outputs brought back to the CPU -- nothing else, because every
torch call from Python on this thread waits for the GIL the busy event loop holds. `finish` (event
loop): cut each group's output per graph and put the graphs back in queue order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

import torch

from hydrodiag.inference.collate import collate, on_device
from hydrodiag.inference.manager import ServedModel
from hydrodiag.inference.postprocess import GraphOutput, split_output
from hydrodiag.inference.preprocess import PreparedGraph
from hydrodiag.model.gnn import ModelOutput

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ForwardJob:
    """A graph and the model it was built for (its window and normalisation)."""

    prepared: PreparedGraph
    served: ServedModel


@dataclass(frozen=True)
class _Group:
    served: ServedModel
    positions: list[int]  # where the group's graphs stand in the pass
    batch: Any


class PassObserver(Protocol):
    def passed(self, graphs: int) -> None: ...

    def failed(self, graphs: int) -> None: ...


class ForwardStages:
    def __init__(self, observer: PassObserver, pin_memory: bool) -> None:
        self.observer = observer
        self.pin_memory = pin_memory

    def prepare(self, jobs: list[ForwardJob]) -> list[_Group]:
        positions: dict[int, list[int]] = {}
        for i, job in enumerate(jobs):
            positions.setdefault(id(job.served), []).append(i)
        groups = []
        for indices in positions.values():
            served = jobs[indices[0]].served
            batch = on_device(collate([jobs[i].prepared.graph for i in indices]), served.device, self.pin_memory)
            groups.append(_Group(served, indices, batch))
        return groups

    def run(self, groups: list[_Group]) -> list[ModelOutput]:
        outputs = []
        for group in groups:
            try:
                with torch.inference_mode():
                    output = group.served(group.batch)
                    if group.served.device.type != "cpu":  # waits for the device here, off the event loop
                        output = _on_cpu(output)
            except Exception:
                self.observer.failed(len(group.positions))
                logger.exception("forward pass over %d graphs failed", len(group.positions))
                raise
            outputs.append(output)
        return outputs

    def finish(self, groups: list[_Group], outputs: list[ModelOutput]) -> list[GraphOutput]:
        results: list[GraphOutput | None] = [None] * sum(len(group.positions) for group in groups)
        for group, output in zip(groups, outputs, strict=True):
            for position, graph in zip(group.positions, split_output(output, len(group.positions),
                                                                     group.served.model_version), strict=True):
                results[position] = graph
            self.observer.passed(len(group.positions))
        return [r for r in results if r is not None]


def _on_cpu(output: ModelOutput) -> ModelOutput:
    moved: dict[str, Any] = {f.name: getattr(output, f.name).cpu() for f in fields(output)}
    return replace(output, **moved)

