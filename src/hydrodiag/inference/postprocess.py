"""Model output -> response: probabilities, statuses, detected anomalies, per-component detail.

Statuses and the detection threshold come from settings through `DiagnosisPolicy`; the mapping
itself lives in `hydrodiag.taxonomy` so that every status a user sees has one definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import torch

from hydrodiag.inference.schemas import (
    AnomalyInfo,
    ComponentPrediction,
    DegradationInfo,
    HealthInfo,
    PredictionResponse,
)
from hydrodiag.model.gnn import ModelOutput
from hydrodiag.settings import Settings
from hydrodiag.taxonomy import ANOMALY_TYPES, critical_threshold, status_for

# Six decimals are far below the model's resolution and keep responses short and stable across
# batch compositions (a batched pass may differ from a single one in the last float bits).
DECIMALS = 6


@dataclass(frozen=True)
class DiagnosisPolicy:
    status_thresholds: dict[str, float]
    anomaly_threshold: float

    @classmethod
    def from_settings(cls, settings: Settings) -> DiagnosisPolicy:
        return cls(status_thresholds=settings.status_thresholds, anomaly_threshold=settings.anomaly_threshold)

    @property
    def critical_threshold(self) -> float:
        return critical_threshold(self.status_thresholds)


@dataclass(frozen=True)
class GraphOutput:
    """One graph's share of a forward pass, on the CPU."""

    system_health: float
    system_probabilities: np.ndarray  # [num_anomalies]
    component_health: np.ndarray  # [num_components]
    component_probabilities: np.ndarray  # [num_components, num_anomalies]
    model_version: str


def probabilities(logits: torch.Tensor) -> np.ndarray:
    return torch.sigmoid(logits.float()).cpu().numpy()


def split_output(output: ModelOutput, num_graphs: int, model_version: str) -> list[GraphOutput]:
    """Cut a batched output into per-graph outputs (graphs keep their order inside a Batch)."""
    system_health = output.system_health.float().cpu().numpy()
    system_probs = probabilities(output.system_logits)
    component_health = output.component_health.float().cpu().numpy()
    component_probs = probabilities(output.component_logits)
    counts = torch.bincount(output.component_batch.cpu(), minlength=num_graphs).tolist()
    results, start = [], 0
    for g, count in enumerate(counts):
        results.append(
            GraphOutput(
                system_health=float(system_health[g]),
                system_probabilities=system_probs[g],
                component_health=component_health[start : start + count],
                component_probabilities=component_probs[start : start + count],
                model_version=model_version,
            )
        )
        start += count
    return results


def anomaly_predictions(probs: np.ndarray) -> dict[str, float]:
    return {name: round(float(p), DECIMALS) for name, p in zip(ANOMALY_TYPES, probs, strict=True)}


def detected_anomalies(probs: np.ndarray, threshold: float) -> list[str]:
    hits = [(float(p), name) for name, p in zip(ANOMALY_TYPES, probs, strict=True) if p >= threshold]
    return [name for _, name in sorted(hits, key=lambda hit: -hit[0])]


def build_components(
    component_ids: list[str], component_types: list[str], output: GraphOutput, policy: DiagnosisPolicy
) -> list[ComponentPrediction]:
    components = []
    for i, (cid, ctype) in enumerate(zip(component_ids, component_types, strict=True)):
        health = float(output.component_health[i])
        probs = output.component_probabilities[i]
        components.append(
            ComponentPrediction(
                id=cid,
                type=ctype,
                health=round(health, DECIMALS),
                status=status_for(health, policy.status_thresholds),
                anomaly_predictions=anomaly_predictions(probs),
                detected_anomalies=detected_anomalies(probs, policy.anomaly_threshold),
            )
        )
    return components


def build_response(
    *,
    equipment_id: str,
    timestamp: datetime,
    topology_id: str,
    component_ids: list[str],
    component_types: list[str],
    output: GraphOutput,
    degradation: DegradationInfo,
    inference_time_ms: float,
    request_id: str | None,
    policy: DiagnosisPolicy,
) -> PredictionResponse:
    return PredictionResponse(
        equipment_id=equipment_id,
        health=HealthInfo(
            score=round(output.system_health, DECIMALS),
            status=status_for(output.system_health, policy.status_thresholds),
        ),
        degradation=degradation,
        anomaly=AnomalyInfo(
            predictions=anomaly_predictions(output.system_probabilities),
            detected_anomalies=detected_anomalies(output.system_probabilities, policy.anomaly_threshold),
        ),
        components=build_components(component_ids, component_types, output, policy),
        inference_time_ms=round(inference_time_ms, 3),
        model_version=output.model_version,
        request_id=request_id,
        topology_id=topology_id,
        timestamp=timestamp,
    )
