"""The one place where errors become HTTP responses.

Every error body has the same shape: `error` (one line for a human, naming the field), `detail`
(a list of {loc, field, msg, type}; loc as in FastAPI's own validation errors) and `request_id`.
No body ever carries a stack trace or an exception's repr: unexpected errors are logged with the
request id and answered with a generic 500.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from hydrodiag.errors import (
    ConflictError,
    EngineClosedError,
    HydrodiagError,
    InvalidInputError,
    ModelActivationError,
    ModelNotLoadedError,
    NotFoundError,
    PeerSyncError,
    QueueFullError,
    StorageUnavailableError,
)

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
# While the model loads or the engine restarts, a client should come back after about this long.
UNAVAILABLE_RETRY_AFTER_S = 5
_MAX_REPORTED_ERRORS = 20
_INDEX = re.compile(r"\[(\d+)\]")


class ErrorDetail(BaseModel):
    loc: list[str | int]
    field: str
    msg: str
    type: str


class ErrorBody(BaseModel):
    """The shape of every error response (documents the 4xx/5xx answers in OpenAPI)."""

    error: str
    detail: list[ErrorDetail]
    request_id: str | None


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def field_to_loc(field: str) -> list[str | int]:
    """'requests[3].sensor_data.PS1' -> ['body', 'requests', 3, 'sensor_data', 'PS1']."""
    loc: list[str | int] = ["body"]
    for part in field.split("."):
        name, *_ = part.split("[", 1)
        if name:
            loc.append(name)
        loc.extend(int(index) for index in _INDEX.findall(part))
    return loc


def loc_to_field(loc: Sequence[str | int]) -> str:
    """['body', 'requests', 3, 'sensor_data', 'PS1', 5] -> 'requests[3].sensor_data.PS1[5]'."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)
    field = ""
    for part in parts:
        if isinstance(part, int):
            field += f"[{part}]"
        else:
            field += f".{part}" if field else str(part)
    return field or (str(loc[0]) if loc else "body")


def error_response(
    status_code: int,
    message: str,
    request: Request | None,
    detail: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    request_id: str | None = None,
) -> JSONResponse:
    rid = request_id or (request_id_of(request) if request is not None else None)
    body: dict[str, Any] = {"error": message, "detail": detail or [], "request_id": rid}
    all_headers = dict(headers or {})
    if rid:
        all_headers[REQUEST_ID_HEADER] = rid
    return JSONResponse(body, status_code=status_code, headers=all_headers)


def internal_error_response(request_id: str | None) -> JSONResponse:
    message = "internal server error"
    if request_id:
        message += f"; quote request id {request_id} when reporting it"
    return error_response(500, message, None, request_id=request_id)


async def _invalid_input(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidInputError)
    loc = field_to_loc(exc.field)
    detail = [{"loc": loc, "field": exc.field, "msg": exc.message, "type": "invalid_input"}]
    return error_response(422, f"{exc.field}: {exc.message}", request, detail)


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    detail = []
    for err in errors[:_MAX_REPORTED_ERRORS]:
        loc = [part if isinstance(part, int) else str(part) for part in err.get("loc", ())]
        kind = str(err.get("type", "value_error"))
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        field = loc_to_field(loc)
        if kind == "json_invalid":  # loc holds a character position, not a field
            field, msg = "body", f"{msg} at position {loc[-1]}" if isinstance(loc[-1], int) else msg
        # 'input' and 'ctx' are left out on purpose: they echo the payload (possibly megabytes) and
        # may hold exception objects.
        detail.append({"loc": loc, "field": field, "msg": msg, "type": kind})
    summary = "; ".join(f"{d['field']}: {d['msg']}" for d in detail[:3])
    if len(errors) > 3:
        summary += f" (and {len(errors) - 3} more)"
    return error_response(422, summary or "invalid request", request, detail)


def _reason(request: Request, reason: str) -> None:
    """Tells the metrics middleware why this request was refused (finer than the status code)."""
    request.scope.setdefault("state", {})["reject_reason"] = reason


async def _queue_full(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, QueueFullError)
    _reason(request, "queue_full")
    retry_after = str(max(1, math.ceil(exc.retry_after_s)))
    return error_response(503, str(exc), request, headers={"Retry-After": retry_after})


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    return error_response(503, str(exc) or "service unavailable", request,
                          headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})


async def _storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    _reason(request, "storage_unavailable")
    return error_response(503, str(exc), request, headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return error_response(404, str(exc), request)


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    return error_response(409, str(exc), request)


async def _activation_failed(request: Request, exc: Exception) -> JSONResponse:
    # 422: the version exists but its checkpoint cannot be served; the old model keeps serving.
    assert isinstance(exc, ModelActivationError)
    _reason(request, "activation_failed")
    detail = [{"loc": ["path", "version"], "field": "version", "msg": exc.problem, "type": "activation_failed"}]
    return error_response(422, str(exc), request, detail)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    return error_response(exc.status_code, message, request, headers=dict(exc.headers or {}))


async def _unexpected_domain_error(request: Request, exc: Exception) -> JSONResponse:
    rid = request_id_of(request)
    logger.error("unhandled %s (request %s)", type(exc).__name__, rid, exc_info=exc)
    return internal_error_response(rid)


def install_error_handlers(app: FastAPI) -> None:
    """Register the mapping; the catch-all for any other exception is `RequestContextMiddleware`."""
    app.add_exception_handler(InvalidInputError, _invalid_input)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(QueueFullError, _queue_full)
    app.add_exception_handler(ModelNotLoadedError, _unavailable)
    app.add_exception_handler(EngineClosedError, _unavailable)
    app.add_exception_handler(StorageUnavailableError, _storage_unavailable)
    app.add_exception_handler(PeerSyncError, _unavailable)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(ConflictError, _conflict)
    app.add_exception_handler(ModelActivationError, _activation_failed)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(HydrodiagError, _unexpected_domain_error)
