"""Open Inference Protocol (KServe v2) paths beside the REST API, for Triton/KServe/MLServer clients.

Tensor mapping (documented in README.md):
- request: one input tensor per sensor, `name` = sensor name, `shape` = [T] or [1, T], `datatype`
  FP16/FP32/FP64 (integers accepted too), `data` = the series (flat, row-major). Request
  `parameters`: `equipment_id` (required), `topology_id` (optional; else the machine's binding or
  inference from sensor names), `timestamp` (optional, ISO 8601).
- response: `system_health` FP32 [1]; `system_anomaly_probabilities` FP32 [9]; `component_health`
  FP32 [C]; `component_anomaly_probabilities` FP32 [C, 9] (row-major); `component_ids` BYTES [C];
  `anomaly_types` BYTES [9]; response `parameters` carry the statuses, detected anomalies,
  degradation and request id. A request's `outputs` list may select tensors by name.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from hydrodiag import __version__
from hydrodiag.api.errors import ErrorBody, request_id_of
from hydrodiag.api.state import engine_of
from hydrodiag.errors import InvalidInputError, ModelNotLoadedError, NotFoundError
from hydrodiag.inference.lifecycle import ModelLifecycle
from hydrodiag.inference.schemas import FiniteFloat, PredictionRequest, PredictionResponse
from hydrodiag.taxonomy import ANOMALY_TYPES

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])

MODEL_NAME = "hydrodiag"
NUMERIC_DATATYPES = ("FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
                     "UINT64")
OUTPUT_NAMES = ("system_health", "system_anomaly_probabilities", "component_health",
                "component_anomaly_probabilities", "component_ids", "anomaly_types")
ParameterValue = StrictStr | StrictBool | StrictInt | StrictFloat
ModelName = Annotated[str, Path(min_length=1, max_length=128)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown model name or version."},
    422: {"model": ErrorBody, "description": "Invalid tensors or parameters; `error` names the field."},
    503: {"model": ErrorBody, "description": "Queue full or model not loaded."},
}


class InferInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128, description="Sensor name.")
    shape: list[Annotated[int, Field(ge=0, le=10_000_000)]] = Field(min_length=1, max_length=2)
    datatype: Literal[NUMERIC_DATATYPES]  # type: ignore[valid-type]
    data: list[FiniteFloat]
    parameters: dict[str, ParameterValue] | None = None


class RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Literal[OUTPUT_NAMES]  # type: ignore[valid-type]
    parameters: dict[str, ParameterValue] | None = None


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(None, max_length=128)
    parameters: dict[str, ParameterValue] | None = None
    inputs: list[InferInput] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


class OutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: Literal["FP32", "BYTES"]
    data: list[float] | list[str]


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None
    parameters: dict[str, ParameterValue | None]
    outputs: list[OutputTensor]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]



def _check_model(request: Request, name: str, version: str | None = None) -> str:
    if name != MODEL_NAME:
        raise NotFoundError(f"unknown model '{name}'; this server serves '{MODEL_NAME}'")
    served = engine_of(request).model
    if served is None:
        raise ModelNotLoadedError("the model is not loaded yet; retry shortly")
    if version is not None and version != served.model_version:
        raise NotFoundError(f"model version '{version}' is not the active one ('{served.model_version}'); "
                            "activate it with POST /models/{version}/activate")
    return served.model_version


def _ready(request: Request) -> bool:
    return engine_of(request).model is not None and bool(getattr(request.app.state, "store_ready", True))


@router.get("", response_model=ServerMetadata)
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name=MODEL_NAME, version=__version__, extensions=[])


@router.get("/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", responses={503: {"description": "Not ready yet."}})
async def server_ready(request: Request) -> Any:
    ready = _ready(request)
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@router.get("/models/{name}/ready", responses={404: _ERRORS[404], 503: {"description": "Not ready yet."}})
async def model_ready(name: ModelName, request: Request) -> Any:
    if name != MODEL_NAME:
        raise NotFoundError(f"unknown model '{name}'; this server serves '{MODEL_NAME}'")
    ready = _ready(request)
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


@router.get("/models/{name}", response_model=ModelMetadata, responses=_ERRORS)
async def model_metadata(name: ModelName, request: Request) -> ModelMetadata:
    """Versions: the active one first, then the others under the model directory."""
    active = _check_model(request, name)
    lifecycle: ModelLifecycle | None = getattr(request.app.state, "lifecycle", None)
    others = sorted({f.version for f in lifecycle.scan() if f.version and f.version != active}) if lifecycle else []
    return ModelMetadata(
        name=MODEL_NAME, versions=[active, *others], platform="pytorch",
        inputs=[TensorMetadata(name="<sensor name>", datatype="FP64", shape=[-1])],
        outputs=[TensorMetadata(name="system_health", datatype="FP32", shape=[1]),
                 TensorMetadata(name="system_anomaly_probabilities", datatype="FP32", shape=[len(ANOMALY_TYPES)]),
                 TensorMetadata(name="component_health", datatype="FP32", shape=[-1]),
                 TensorMetadata(name="component_anomaly_probabilities", datatype="FP32",
                                shape=[-1, len(ANOMALY_TYPES)]),
                 TensorMetadata(name="component_ids", datatype="BYTES", shape=[-1]),
                 TensorMetadata(name="anomaly_types", datatype="BYTES", shape=[len(ANOMALY_TYPES)])],
    )


@router.post("/models/{name}/infer", response_model=InferResponse, responses=_ERRORS)
async def infer(name: ModelName, body: InferRequest, request: Request) -> InferResponse:
    """One diagnosis in OIP tensors (see the module docstring for the mapping)."""
    _check_model(request, name)
    return await _infer(body, request)


@router.post("/models/{name}/versions/{version}/infer", response_model=InferResponse, responses=_ERRORS)
async def infer_version(name: ModelName, version: Annotated[str, Path(min_length=1, max_length=128)],
                        body: InferRequest, request: Request) -> InferResponse:
    """As `/infer`, refused (404) unless `version` is the active version."""
    _check_model(request, name, version)
    return await _infer(body, request)


async def _infer(body: InferRequest, request: Request) -> InferResponse:
    prediction_request = to_prediction_request(body)
    response = await engine_of(request).predict(prediction_request, request_id=request_id_of(request))
    wanted = {o.name for o in body.outputs} if body.outputs else set(OUTPUT_NAMES)
    return InferResponse(model_name=MODEL_NAME, model_version=response.model_version, id=body.id,
                         parameters=_response_parameters(response),
                         outputs=[t for t in _output_tensors(response) if t.name in wanted])


def to_prediction_request(body: InferRequest) -> PredictionRequest:
    params = body.parameters or {}
    equipment_id = params.get("equipment_id")
    if not isinstance(equipment_id, str):
        raise InvalidInputError("parameters.equipment_id", "required: the machine's id as a string")
    sensor_data: dict[str, list[float]] = {}
    for i, tensor in enumerate(body.inputs):
        field = f"inputs[{i}]"
        if tensor.name in sensor_data:
            raise InvalidInputError(f"{field}.name", f"sensor '{tensor.name}' appears twice")
        if len(tensor.shape) == 2 and tensor.shape[0] != 1:
            raise InvalidInputError(f"{field}.shape", "must be [T] or [1, T] (one series per sensor)")
        if math.prod(tensor.shape) != len(tensor.data):
            raise InvalidInputError(f"{field}.data", f"has {len(tensor.data)} values; shape {tensor.shape} "
                                    f"needs {math.prod(tensor.shape)}")
        sensor_data[tensor.name] = tensor.data
    fields: dict[str, Any] = {"equipment_id": equipment_id, "sensor_data": sensor_data}
    for key in ("topology_id", "timestamp"):
        if key in params:
            fields[key] = params[key]
    unknown = sorted(set(params) - {"equipment_id", "topology_id", "timestamp"})
    if unknown:
        raise InvalidInputError(f"parameters.{unknown[0]}", "unknown parameter (known: equipment_id, "
                                "topology_id, timestamp)")
    try:
        return PredictionRequest.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        where = "parameters." + loc[0] if loc and loc[0] in fields and loc[0] != "sensor_data" else "inputs"
        if loc and loc[0] == "sensor_data" and len(loc) > 1:
            names = list(sensor_data)
            where = f"inputs[{names.index(loc[1])}].data" if loc[1] in names else "inputs"
        raise InvalidInputError(where, str(err["msg"]).removeprefix("Value error, ")) from None


def _response_parameters(response: PredictionResponse) -> dict[str, ParameterValue | None]:
    degradation = response.degradation
    return {
        "equipment_id": response.equipment_id,
        "topology_id": response.topology_id,
        "request_id": response.request_id,
        "timestamp": response.timestamp.isoformat(),
        "health_status": response.health.status,
        "detected_anomalies": ",".join(response.anomaly.detected_anomalies),
        "component_statuses": ",".join(f"{c.id}:{c.status}" for c in response.components),
        "degradation_rate": degradation.rate,
        "time_to_failure_hours": degradation.time_to_failure_hours,
        "trend_status": degradation.trend_status,
        "inference_time_ms": response.inference_time_ms,
    }


def _output_tensors(response: PredictionResponse) -> list[OutputTensor]:
    components = response.components
    probs = [c.anomaly_predictions[a] for c in components for a in ANOMALY_TYPES]
    return [
        OutputTensor(name="system_health", shape=[1], datatype="FP32", data=[response.health.score]),
        OutputTensor(name="system_anomaly_probabilities", shape=[len(ANOMALY_TYPES)], datatype="FP32",
                     data=[response.anomaly.predictions[a] for a in ANOMALY_TYPES]),
        OutputTensor(name="component_health", shape=[len(components)], datatype="FP32",
                     data=[c.health for c in components]),
        OutputTensor(name="component_anomaly_probabilities", shape=[len(components), len(ANOMALY_TYPES)],
                     datatype="FP32", data=probs),
        OutputTensor(name="component_ids", shape=[len(components)], datatype="BYTES",
                     data=[c.id for c in components]),
        OutputTensor(name="anomaly_types", shape=[len(ANOMALY_TYPES)], datatype="BYTES", data=list(ANOMALY_TYPES)),
    ]
