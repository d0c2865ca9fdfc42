"""HTTP endpoints: each parses, calls the engine and returns; errors go to `api.errors`."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from hydrodiag import __version__
from hydrodiag.api.errors import ErrorBody, request_id_of
from hydrodiag.errors import ModelNotLoadedError, StorageUnavailableError, UnknownTopologyError
from hydrodiag.inference.engine import InferenceEngine
from hydrodiag.inference.schemas import (
    BatchPredictionRequest,
    BatchPredictionResponse,
    PredictionRequest,
    PredictionResponse,
)
from hydrodiag.topology.schema import Topology

router = APIRouter()

_PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "Invalid input; `error` names the field (and `requests[i]`)."},
    503: {"model": ErrorBody, "description": "Queue full or model not loaded; retry after `Retry-After` s."},
    500: {"model": ErrorBody, "description": "Unexpected error; quote the request id."},
}


class HealthResponse(BaseModel):
    status: Literal["healthy", "starting", "unhealthy"]
    version: str
    model_loaded: bool
    model_version: str | None = None
    error: str | None = None


class ReadyResponse(BaseModel):
    ready: bool
    model_version: str | None


class TopologySummary(BaseModel):
    id: str
    name: str | None
    description: str | None
    components: int
    sensors: int


def _engine(request: Request) -> InferenceEngine:
    engine: InferenceEngine = request.app.state.engine
    return engine


def _load_error(request: Request) -> str | None:
    return getattr(request.app.state, "load_error", None)


@router.get("/health", response_model=HealthResponse, tags=["service"],
            responses={503: {"description": "The model failed to load; the process needs attention."}})
async def health(request: Request) -> Any:
    """Liveness: 200 while healthy or still starting, 503 once the model has failed to load."""
    engine = _engine(request)
    served = engine.model
    error = _load_error(request)
    if served is not None:
        return HealthResponse(status="healthy", version=__version__, model_loaded=True,
                              model_version=served.model_version)
    body = HealthResponse(status="unhealthy" if error else "starting", version=__version__,
                          model_loaded=False, error=error)
    return JSONResponse(body.model_dump(), status_code=503 if error else 200)


@router.get("/ready", response_model=ReadyResponse, tags=["service"],
            responses={503: {"model": ErrorBody, "description": "No model loaded yet, or its load failed."}})
async def ready(request: Request) -> ReadyResponse:
    """Readiness: 200 once a model is loaded and warmed up and the history database is migrated."""
    served = _engine(request).model
    if served is None:
        error = _load_error(request)
        raise ModelNotLoadedError(f"model failed to load: {error}" if error else "model is loading")
    if not getattr(request.app.state, "store_ready", True):
        raise StorageUnavailableError("history database is not reachable yet")
    return ReadyResponse(ready=True, model_version=served.model_version)


@router.get("/stats", tags=["service"])
async def stats(request: Request) -> dict[str, Any]:
    """Serving statistics: the spec's keys plus request/batch counts and latency percentiles."""
    return _engine(request).get_stats()


@router.post("/predict", response_model=PredictionResponse, tags=["prediction"], responses=_PREDICT_ERRORS)
async def predict(body: PredictionRequest, request: Request) -> PredictionResponse:
    """Diagnose one machine from one window of sensor readings."""
    return await _engine(request).predict(body, request_id=request_id_of(request))


@router.post("/predict/batch", response_model=BatchPredictionResponse, tags=["prediction"],
             responses=_PREDICT_ERRORS)
async def predict_batch(body: BatchPredictionRequest, request: Request) -> BatchPredictionResponse:
    """Diagnose several machines in one call (all or nothing)."""
    return await _engine(request).predict_batch(body.requests, request_id=request_id_of(request))


@router.get("/topologies", response_model=list[TopologySummary], tags=["topology"])
async def list_topologies(request: Request) -> list[TopologySummary]:
    """Registered topologies (usable as `topology_id`)."""
    return [
        TopologySummary(id=t.id, name=t.name, description=t.description, components=len(t.components),
                        sensors=len(t.sensors))
        for t in _engine(request).registry.all()
    ]


@router.get("/topologies/{topology_id}", response_model=Topology, tags=["topology"],
            responses={404: {"model": ErrorBody, "description": "Unknown topology id."}})
async def get_topology(topology_id: str, request: Request) -> Topology:
    """One registered topology: components, edges and declared sensors."""
    try:
        return _engine(request).registry.get(topology_id)
    except UnknownTopologyError as exc:
        # A path that names no resource is a 404, unlike an unknown id inside a request body (422).
        raise HTTPException(status_code=404, detail=exc.message) from None
