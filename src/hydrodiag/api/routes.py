"""HTTP endpoints: each parses, calls the engine and returns; errors go to `api.errors`."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.datastructures import DefaultPlaceholder
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from hydrodiag import __version__
from hydrodiag.api.errors import ErrorBody, request_id_of
from hydrodiag.api.state import engine_of, peers_of
from hydrodiag.errors import ModelNotLoadedError, StorageUnavailableError, UnknownTopologyError
from hydrodiag.inference.schemas import (
    BatchPredictionRequest,
    BatchPredictionResponse,
    PredictionRequest,
    PredictionResponse,
)
from hydrodiag.topology.schema import Topology


def is_json_content_type(value: str | None) -> bool:
    """What FastAPI parses as JSON: application/json or application/*+json (parameters ignored)."""
    if not value:
        return False
    media = value.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class JsonBodyRoute(APIRoute):
    """A fast runtime path for routes that take one pydantic body model (and the Request) and return a
    pydantic model; everything FastAPI documents (OpenAPI) is derived from the signature as usual.

    A valid JSON body is parsed and validated in one step by pydantic-core (`model_validate_json`)
    instead of stdlib `json` + Python-mode validation, and the answer is serialised with
    `model_dump_json`. Anything else -- another content type, an empty body, a body that fails
    validation -- goes through FastAPI's own handler, so error answers (422 naming the field, JSON
    decode positions) are exactly FastAPI's, mapped by `api.errors`.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        standard = super().get_route_handler()
        dependant = self.dependant
        body_model = dependant.body_params[0].field_info.annotation if len(dependant.body_params) == 1 else None
        eligible = (
            isinstance(body_model, type) and issubclass(body_model, BaseModel)
            and not (dependant.path_params or dependant.query_params or dependant.header_params
                     or dependant.cookie_params or dependant.dependencies or dependant.response_param_name
                     or dependant.background_tasks_param_name or dependant.security_scopes_param_name
                     or dependant.websocket_param_name or dependant.http_connection_param_name)
            and inspect.iscoroutinefunction(self.endpoint)
            and isinstance(self.response_class, DefaultPlaceholder)
        )
        if not eligible:
            return standard
        assert isinstance(body_model, type) and issubclass(body_model, BaseModel)
        model: type[BaseModel] = body_model
        endpoint = self.endpoint
        body_name = dependant.body_params[0].name
        request_name = dependant.request_param_name
        status_code = self.status_code or 200

        async def handler(request: Request) -> Response:
            if not is_json_content_type(request.headers.get("content-type")):
                return await standard(request)
            try:
                raw = await request.body()  # cached on the request: the fallback reads it again for free
            except StarletteHTTPException:
                raise  # e.g. the body limit's 413
            except Exception:  # a client that went away: FastAPI's own answer (400)
                return await standard(request)
            if not raw:
                return await standard(request)
            try:
                body = model.model_validate_json(raw)
            except ValidationError:
                return await standard(request)
            kwargs: dict[str, Any] = {body_name: body}
            if request_name:
                kwargs[request_name] = request
            result = await endpoint(**kwargs)
            if isinstance(result, Response):
                return result
            assert isinstance(result, BaseModel)
            return Response(result.model_dump_json(), status_code=status_code, media_type="application/json")

        return handler


router = APIRouter(route_class=JsonBodyRoute)
# Also answered by `api.fast_lane` (the same bytes, without FastAPI's routing); this route documents it.
PREDICT_PATH = "/predict"

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



def _load_error(request: Request) -> str | None:
    return getattr(request.app.state, "load_error", None)


@router.get("/health", response_model=HealthResponse, tags=["service"],
            responses={503: {"description": "The model failed to load; the process needs attention."}})
async def health(request: Request) -> Any:
    """Liveness: 200 while healthy or still starting, 503 once the model has failed to load."""
    engine = engine_of(request)
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
    served = engine_of(request).model
    if served is None:
        error = _load_error(request)
        raise ModelNotLoadedError(f"model failed to load: {error}" if error else "model is loading")
    if not getattr(request.app.state, "store_ready", True):
        raise StorageUnavailableError("history database is not reachable yet")
    return ReadyResponse(ready=True, model_version=served.model_version)


@router.get("/stats", tags=["service"])
async def stats(request: Request) -> dict[str, Any]:
    """Serving statistics: the spec's keys plus request/batch counts and latency percentiles. With
    WORKERS > 1 they are the answering worker's own (`worker` says which)."""
    stats = engine_of(request).get_stats()
    stats["model_path"] = public_path(stats["model_path"])
    peers = peers_of(request)
    stats["worker"] = peers.describe() if peers else {"slot": 0, "workers": 1, "pid": os.getpid()}
    return stats


def public_path(path: str) -> str:
    """A checkpoint path as clients may see it: relative to the working directory, else the file
    name -- absolute server paths are internals no response shows."""
    candidate = Path(path)
    try:
        return str(candidate.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return candidate.name


@router.post(PREDICT_PATH, response_model=PredictionResponse, tags=["prediction"], responses=_PREDICT_ERRORS)
async def predict(body: PredictionRequest, request: Request) -> Response:
    """Diagnose one machine from one window of sensor readings."""
    return json_response(await engine_of(request).predict_data(body, request_id=request_id_of(request)))


def response_json(data: dict[str, Any]) -> bytes:
    """The engine's plain response data as JSON, the bytes the response model's `model_dump_json`
    would give (`postprocess.response_data`)."""
    return orjson.dumps(data, option=orjson.OPT_UTC_Z)


def json_response(data: dict[str, Any]) -> Response:
    return Response(response_json(data), media_type="application/json")


@router.post("/predict/batch", response_model=BatchPredictionResponse, tags=["prediction"],
             responses=_PREDICT_ERRORS)
async def predict_batch(body: BatchPredictionRequest, request: Request) -> BatchPredictionResponse:
    """Diagnose several machines in one call (all or nothing)."""
    return await engine_of(request).predict_batch(body.requests, request_id=request_id_of(request))


@router.get("/topologies", response_model=list[TopologySummary], tags=["topology"])
async def list_topologies(request: Request) -> list[TopologySummary]:
    """Registered topologies (usable as `topology_id`)."""
    return [
        TopologySummary(id=t.id, name=t.name, description=t.description, components=len(t.components),
                        sensors=len(t.sensors))
        for t in engine_of(request).registry.all()
    ]


@router.get("/topologies/{topology_id}", response_model=Topology, tags=["topology"],
            responses={404: {"model": ErrorBody, "description": "Unknown topology id."}})
async def get_topology(topology_id: str, request: Request) -> Topology:
    """One registered topology: components, edges and declared sensors."""
    try:
        return engine_of(request).registry.get(topology_id)
    except UnknownTopologyError as exc:
        # A path that names no resource is a 404, unlike an unknown id inside a request body (422).
        raise HTTPException(status_code=404, detail=exc.message) from None
