"""History, equipment bindings and topology registration: HTTP <-> `HistoryDatabase` and engine."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from hydrodiag.api.errors import ErrorBody
from hydrodiag.api.state import engine_of, peers_of
from hydrodiag.errors import ConflictError, InvalidInputError, NotFoundError, StorageUnavailableError
from hydrodiag.store.sql import HistoryDatabase
from hydrodiag.topology.schema import Identifier, Topology

router = APIRouter()

# A history read first waits this long for buffered rows of this process to reach the database, so
# a client reads its own predictions back; after that it answers with what is stored.
READ_YOUR_WRITES_WAIT_S = 1.0

EquipmentId = Annotated[str, Path(min_length=1, max_length=128, description="The machine's equipment_id.")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "Invalid input; `error` names the field."},
    503: {"model": ErrorBody, "description": "History database unavailable; retry after `Retry-After` s."},
}


class HistoryItem(BaseModel):
    timestamp: datetime
    model_version: str
    topology_id: str | None
    system_health: float
    component_health: dict[str, float]
    anomaly_probabilities: dict[str, float]
    latency_ms: float
    request_id: str | None


class HistoryResponse(BaseModel):
    equipment_id: str
    items: list[HistoryItem] = Field(description="Oldest first.")
    total: int = Field(description="Stored predictions in the time range.")
    limit: int
    offset: int
    next_offset: int | None = Field(description="Offset of the next page; null on the last one.")


class BindingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topology_id: Identifier = Field(description="A registered topology (shipped template or POST /topologies).")


class EquipmentResponse(BaseModel):
    equipment_id: str
    topology_id: str



def _database(request: Request) -> HistoryDatabase | None:
    database: HistoryDatabase | None = request.app.state.history
    return database


@router.get("/equipment/{equipment_id}/history", response_model=HistoryResponse, tags=["history"],
            responses=_ERRORS)
async def equipment_history(
    equipment_id: EquipmentId,
    request: Request,
    start: Annotated[datetime | None, Query(alias="from", description="Inclusive start (ISO 8601, UTC default).")]
    = None,
    end: Annotated[datetime | None, Query(alias="to", description="Exclusive end (ISO 8601).")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> HistoryResponse:
    """Stored predictions of one machine, oldest first, paginated."""
    database = _database(request)
    if database is None:
        raise StorageUnavailableError("no history database is configured for this app")
    if start is not None and end is not None and _aware(start) >= _aware(end):
        raise InvalidInputError("to", "must be later than 'from'")
    await asyncio.to_thread(database.flush, READ_YOUR_WRITES_WAIT_S)
    page = await asyncio.to_thread(database.query, equipment_id, start, end, limit, offset)
    items = [HistoryItem(**{k: v for k, v in vars(record).items() if k != "equipment_id"}) for record in page.items]
    following = offset + len(items)
    return HistoryResponse(equipment_id=equipment_id, items=items, total=page.total, limit=limit, offset=offset,
                           next_offset=following if following < page.total else None)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@router.put("/equipment/{equipment_id}", response_model=EquipmentResponse, tags=["history"], responses=_ERRORS)
async def bind_equipment(equipment_id: EquipmentId, body: BindingRequest, request: Request) -> EquipmentResponse:
    """Bind a machine to a topology: its later requests that name no topology use this one."""
    engine = engine_of(request)
    engine.registry.get(body.topology_id)  # unknown -> 422 naming topology_id, before anything is stored
    database = _database(request)
    if database is not None:
        await asyncio.to_thread(database.bind_equipment, equipment_id, body.topology_id)
    engine.bind_equipment(equipment_id, body.topology_id)
    await _publish(request, f"binding '{equipment_id}'")
    return EquipmentResponse(equipment_id=equipment_id, topology_id=body.topology_id)


@router.get("/equipment/{equipment_id}", response_model=EquipmentResponse, tags=["history"],
            responses={404: {"model": ErrorBody, "description": "The machine is not bound to a topology."}})
async def get_equipment(equipment_id: EquipmentId, request: Request) -> EquipmentResponse:
    """The topology a machine is bound to."""
    topology_id = engine_of(request).bindings.get(equipment_id)
    if topology_id is None:
        raise NotFoundError(f"equipment '{equipment_id}' is not bound to a topology (PUT /equipment/{{id}})")
    return EquipmentResponse(equipment_id=equipment_id, topology_id=topology_id)


@router.post("/topologies", response_model=Topology, status_code=201, tags=["topology"],
             responses={409: {"model": ErrorBody, "description": "A topology with this id exists."}, **_ERRORS})
async def register_topology(body: Topology, request: Request) -> Topology:
    """Register a custom topology (validated like an inline one); it persists across restarts.
    Registered topologies are immutable: history rows refer to them by id."""
    engine = engine_of(request)
    if body.id in engine.registry.ids():
        raise ConflictError(f"topology '{body.id}' already exists; register it under a new id")
    database = _database(request)
    if database is not None:
        await asyncio.to_thread(database.save_topology, body.id, body.model_dump(mode="json", exclude_none=True))
    engine.registry.register(body)
    await _publish(request, f"registering topology '{body.id}'")
    return body


async def _publish(request: Request, what: str) -> None:
    """WORKERS > 1: answer only once every worker knows the change."""
    peers = peers_of(request)
    if peers is not None:
        await peers.publish(what)
