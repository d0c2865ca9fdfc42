"""Model lifecycle over HTTP: list the versions under the model directory, activate one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from hydrodiag.api.errors import ErrorBody
from hydrodiag.inference.lifecycle import ModelLifecycle

router = APIRouter(tags=["models"])


class ModelVersion(BaseModel):
    version: str | None = Field(description="model_version from the checkpoint; null if unreadable.")
    file: str = Field(description="File name inside the model directory.")
    active: bool
    previous: bool = Field(description="The version served before the last activation (rollback target).")
    problem: str | None = Field(None, description="Why the file cannot be served, when it cannot.")
    created: str | None = None
    metrics: dict[str, Any] | None = None


class ModelsResponse(BaseModel):
    active: str | None
    previous: str | None
    versions: list[ModelVersion]


class ActivationResponse(BaseModel):
    active: str
    previous: str | None
    file: str
    load_time_s: float
    warmup_time_s: float | None
    device: str


def _lifecycle(request: Request) -> ModelLifecycle:
    lifecycle: ModelLifecycle = request.app.state.lifecycle
    return lifecycle


@router.get("/models", response_model=ModelsResponse)
async def list_models(request: Request) -> ModelsResponse:
    """Checkpoint versions available to activate (metadata only; no weights are loaded)."""
    lifecycle = _lifecycle(request)
    served = lifecycle.engine.model
    active_path = served.path.resolve() if served is not None else None
    versions = [
        ModelVersion(version=f.version, file=f.path.name, active=f.path.resolve() == active_path,
                     previous=f.version is not None and f.version == lifecycle.previous_version,
                     problem=f.problem, created=f.created, metrics=f.metrics)
        for f in lifecycle.scan()
    ]
    return ModelsResponse(active=lifecycle.active_version, previous=lifecycle.previous_version, versions=versions)


@router.post("/models/{version}/activate", response_model=ActivationResponse,
             responses={404: {"model": ErrorBody, "description": "No checkpoint of this version."},
                        422: {"model": ErrorBody, "description": "The checkpoint failed to load; the old model "
                              "keeps serving."}})
async def activate_model(version: Annotated[str, Path(min_length=1, max_length=128)],
                         request: Request) -> ActivationResponse:
    """Load and warm up `version`, then serve it; in-flight requests finish on the old model.
    Roll back by activating the `previous` version."""
    lifecycle = _lifecycle(request)
    info = await lifecycle.activate(version)
    return ActivationResponse(active=info["model_version"], previous=lifecycle.previous_version,
                              file=str(info["path"]).rsplit("/", 1)[-1], load_time_s=info["load_time_s"],
                              warmup_time_s=info["warmup_time_s"], device=info["device"])
