"""What every competitor server shares with hydrodiag: the checkpoint, the request -> graph path and
the output -> response mapping, all taken from hydrodiag's own modules, so that the servers differ
only in how they serve (threads, batching, framework), not in the work per request.

Kept to plain functions and dicts: this is the code a user wrapping the model in another framework
would write around hydrodiag's library.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from hydrodiag.features.graph import (
    TopologyLayout,
    build_graph,
    build_layout,
    validate_series,
    windows_from_series,
)
from hydrodiag.inference.postprocess import GraphOutput, anomaly_predictions, detected_anomalies, split_output
from hydrodiag.model.checkpoint import Checkpoint, load_checkpoint
from hydrodiag.settings import Settings
from hydrodiag.taxonomy import DEFAULT_ANOMALY_THRESHOLD, DEFAULT_STATUS_THRESHOLDS, status_for
from hydrodiag.topology.templates import TopologyRegistry

MAX_SERIES_LENGTH = 100_000


class ModelWrapper:
    """Checkpoint + graph building + forward + response dicts, as a plain library user would write it."""

    def __init__(self, model_path: str | Path) -> None:
        # The torch thread rule hydrodiag's server applies (TORCH_THREADS=0: one intra-op thread on a
        # machine with at most 2 CPUs). Left at torch's default, every process of a server spawns one
        # spinning thread per core: LitServe's two workers then starved the load generator on its
        # shared core (48 req/s at 4 clients, p99 over a second).
        threads = Settings().resolved_torch_threads
        if threads is not None:
            torch.set_num_threads(threads)
        self.checkpoint: Checkpoint = load_checkpoint(Path(model_path), device="cpu")
        self.model = self.checkpoint.model
        self.registry = TopologyRegistry()
        self._layouts: dict[tuple[str, tuple[str, ...]], TopologyLayout] = {}
        self._lock = threading.Lock()

    def layout(self, topology_id: str, names: list[str]) -> TopologyLayout:
        key = (topology_id, tuple(names))
        with self._lock:
            cached = self._layouts.get(key)
        if cached is None:
            cached = build_layout(self.registry.get(topology_id), names)
            with self._lock:
                self._layouts[key] = cached
        return cached

    def graph(self, request: dict[str, Any]) -> tuple[Data, TopologyLayout]:
        names = sorted(request["sensor_data"])
        layout = self.layout(request.get("topology_id") or "uci_test_rig", names)
        data = request["sensor_data"]
        series = {n: validate_series(n, data[n], "sensor_data", MAX_SERIES_LENGTH) for n in names}
        windows = windows_from_series(series, names, self.checkpoint.config.window)
        return build_graph(layout, windows, self.checkpoint.norm), layout

    def forward(self, graphs: list[Data]) -> list[GraphOutput]:
        batch = Batch.from_data_list(graphs)
        with torch.inference_mode():
            output = self.model.forward_batch(batch)
            return split_output(output, len(graphs), self.checkpoint.model_version)

    def warmup(self, request: dict[str, Any], sizes: tuple[int, ...] = (1, 8)) -> None:
        graph, _ = self.graph(request)
        for size in sizes:
            self.forward([graph] * size)

    @staticmethod
    def response(request: dict[str, Any], layout: TopologyLayout, output: GraphOutput) -> dict[str, Any]:
        probs = output.system_probabilities
        components = []
        for i, (cid, ctype) in enumerate(zip(layout.component_ids, layout.component_types, strict=True)):
            health = float(output.component_health[i])
            comp_probs = output.component_probabilities[i]
            components.append(
                {
                    "id": cid,
                    "type": ctype,
                    "health": round(health, 6),
                    "status": status_for(health, DEFAULT_STATUS_THRESHOLDS),
                    "anomaly_predictions": anomaly_predictions(comp_probs),
                    "detected_anomalies": detected_anomalies(comp_probs, DEFAULT_ANOMALY_THRESHOLD),
                }
            )
        return {
            "equipment_id": request["equipment_id"],
            "health": {
                "score": round(float(output.system_health), 6),
                "status": status_for(float(output.system_health), DEFAULT_STATUS_THRESHOLDS),
            },
            "anomaly": {
                "predictions": anomaly_predictions(np.asarray(probs)),
                "detected_anomalies": detected_anomalies(probs, DEFAULT_ANOMALY_THRESHOLD),
            },
            "components": components,
            "model_version": output.model_version,
        }
