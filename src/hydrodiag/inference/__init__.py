"""The inference core: ModelManager, InferenceEngine and their request/response models.

Nothing here knows about HTTP; `hydrodiag.api` translates requests and errors.
"""

from hydrodiag.inference.engine import InferenceConfig, InferenceEngine
from hydrodiag.inference.manager import ModelManager, ServedModel, resolve_device
from hydrodiag.inference.schemas import (
    BatchPredictionRequest,
    BatchPredictionResponse,
    ComponentPrediction,
    DegradationInfo,
    PredictionRequest,
    PredictionResponse,
)

__all__ = [
    "BatchPredictionRequest",
    "BatchPredictionResponse",
    "ComponentPrediction",
    "DegradationInfo",
    "InferenceConfig",
    "InferenceEngine",
    "ModelManager",
    "PredictionRequest",
    "PredictionResponse",
    "ServedModel",
    "resolve_device",
]
