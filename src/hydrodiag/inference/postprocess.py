"""Model output -> response: probabilities, statuses, detected anomalies, per-component detail.

Statuses and the detection threshold come from settings through `DiagnosisPolicy`; the mapping
itself lives in `hydrodiag.taxonomy` so that every status a user sees has one definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import torch

from hydrodiag.inference.schemas import DegradationInfo
from hydrodiag.inference.tracing import ScoredOutput
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


def _numpy(tensor: torch.Tensor, float32: bool = True) -> np.ndarray:
    # A CPU tensor of the wanted dtype (what a CPU pass gives) converts without a torch operation,
    # each of which would hand the GIL to another thread and have to win it back.
    if float32 and tensor.dtype != torch.float32:
        tensor = tensor.float()
    return tensor.numpy() if tensor.device.type == "cpu" else tensor.cpu().numpy()


def split_output(output: ModelOutput, num_graphs: int, model_version: str) -> list[GraphOutput]:
    """Cut a batched output into per-graph outputs (graphs keep their order inside a Batch)."""
    system_health = _numpy(output.system_health)
    component_health = _numpy(output.component_health)
    if isinstance(output, ScoredOutput):  # the traced pass computed them (inference/tracing.py)
        system_probs = _numpy(output.system_probabilities)
        component_probs = _numpy(output.component_probabilities)
    else:
        system_probs = probabilities(output.system_logits)
        component_probs = probabilities(output.component_logits)
    counts = np.bincount(_numpy(output.component_batch, float32=False), minlength=num_graphs).tolist()
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


def rounded(values: np.ndarray) -> Any:
    """`round(float(v), DECIMALS)` of every value, as (nested) Python lists, in one numpy pass.

    The same numbers as Python's round: model outputs are float32, so v * 10**6 lies much farther
    from a rounding midpoint than float64's error in that product, and rint picks the same integer
    n; n / 10**6 is then the double nearest that decimal, which is what round() returns.
    """
    return np.round(np.asarray(values, dtype=np.float64), DECIMALS).tolist()


def anomaly_predictions(probs: np.ndarray) -> dict[str, float]:
    return dict(zip(ANOMALY_TYPES, rounded(probs), strict=True))


def _detected(probs: list[float], hits: list[bool]) -> list[str]:
    if not any(hits):
        return []
    found = [(p, name) for name, p, hit in zip(ANOMALY_TYPES, probs, hits, strict=True) if hit]
    return [name for _, name in sorted(found, key=lambda hit: -hit[0])]


def detected_anomalies(probs: np.ndarray, threshold: float) -> list[str]:
    """Types at or above `threshold`, most likely first (the comparison in the array's own dtype)."""
    return _detected(np.asarray(probs).tolist(), (np.asarray(probs) >= threshold).tolist())


def _components(
    component_ids: list[str], component_types: list[str], output: GraphOutput, policy: DiagnosisPolicy
) -> list[dict[str, Any]]:
    """The components' part of a response as plain data (`response_data`)."""
    thresholds = policy.status_thresholds
    health = output.component_health.tolist()
    probs = output.component_probabilities.tolist()
    hits = (output.component_probabilities >= policy.anomaly_threshold).tolist()
    return [
        {
            "id": cid,
            "type": ctype,
            "health": health_rounded,
            "status": status_for(h, thresholds),
            "anomaly_predictions": dict(zip(ANOMALY_TYPES, p_rounded, strict=True)),
            "detected_anomalies": _detected(p, hit),
        }
        for cid, ctype, h, health_rounded, p, p_rounded, hit in zip(
            component_ids, component_types, health, rounded(output.component_health), probs,
            rounded(output.component_probabilities), hits, strict=True,
        )
    ]


def response_data(
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
) -> dict[str, Any]:
    """A response as plain data: every field of `PredictionResponse`, in its order, with the types it
    would hold after validation, so that a caller encoding it as JSON (orjson, UTC as `Z`) gets byte
    for byte what `model_dump_json()` of the validated response gives without that validation pass,
    the largest share of building a response (tests/test_response_data.py holds it to that)."""
    return {
        "equipment_id": equipment_id,
        "health": {
            "score": round(output.system_health, DECIMALS),
            "status": status_for(output.system_health, policy.status_thresholds),
        },
        "degradation": dict(degradation),
        "anomaly": {
            "predictions": anomaly_predictions(output.system_probabilities),
            "detected_anomalies": detected_anomalies(output.system_probabilities, policy.anomaly_threshold),
        },
        "components": _components(component_ids, component_types, output, policy),
        "inference_time_ms": round(inference_time_ms, 3),
        "model_version": output.model_version,
        "request_id": request_id,
        "topology_id": topology_id,
        "timestamp": timestamp,
    }
