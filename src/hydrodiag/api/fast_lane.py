"""`POST /predict` answered in plain ASGI: the hot path without FastAPI's routing and request objects.

At 16 clients the event loop is what limits throughput, and FastAPI's exception middleware,
router, `request_response` wrapper, `Request` and `Response` objects cost it about a fifth of
each prediction's time on the loop (py-spy, docs/BENCHMARKS.md). This middleware sits inside
ours (request id, metrics, CORS, security all still apply) and answers only the success path of
a JSON `POST /predict` itself. Everything else goes on to the app unchanged: other routes, other
content types, an empty body or one that fails validation (replayed, so FastAPI produces its own
422 naming the field), and errors the engine raises are answered by the app's exception handlers
(`api.errors`), found the way Starlette's exception middleware finds them. The route in
`api.routes` stays the documented endpoint (OpenAPI) and produces the same bytes.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hydrodiag.api.routes import PREDICT_PATH, is_json_content_type, response_json
from hydrodiag.api.security import scope_header
from hydrodiag.inference.engine import InferenceEngine
from hydrodiag.inference.schemas import PredictionRequest

ExceptionHandler = Callable[[Request, Any], Response | Awaitable[Response]]
_JSON_HEADERS = (b"content-type", b"application/json")


class PredictFastLane:
    def __init__(self, app: ASGIApp, *, state: Any, exception_handlers: Mapping[Any, ExceptionHandler]) -> None:
        self.app = app
        self._state = state  # app.state: the engine is read per request, as the routes do
        self._handlers = exception_handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._eligible(scope):
            await self.app(scope, receive, send)
            return
        try:
            raw = await _read_body(receive)
        except Exception as exc:  # the security middleware's 413 for an oversized chunked body
            await self._answer_error(exc, scope, receive, send)
            return
        if raw is None:  # the client went away before its body arrived: nobody to answer
            return
        try:
            body = PredictionRequest.model_validate_json(raw) if raw else None
        except ValidationError:
            body = None
        if body is None:
            await self.app(scope, _replay(raw, receive), send)
            return
        engine: InferenceEngine = self._state.engine
        try:
            data = await engine.predict_data(body, request_id=scope.get("state", {}).get("request_id"))
        except Exception as exc:
            await self._answer_error(exc, scope, receive, send)
            return
        content = response_json(data)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [_JSON_HEADERS, (b"content-length", str(len(content)).encode())]})
        await send({"type": "http.response.body", "body": content})

    @staticmethod
    def _eligible(scope: Scope) -> bool:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") != PREDICT_PATH:
            return False
        if scope.get("root_path"):  # mounted under a prefix: leave path handling to the router
            return False
        return is_json_content_type(scope_header(scope, b"content-type"))

    async def _answer_error(self, exc: Exception, scope: Scope, receive: Receive, send: Send) -> None:
        handler = next((self._handlers[kind] for kind in type(exc).__mro__ if kind in self._handlers), None)
        if handler is None:
            raise exc  # RequestContextMiddleware logs it and answers the generic 500
        answer = handler(Request(scope, receive), exc)
        response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(raw: bytes, receive: Receive) -> Receive:
    """The body already read, then whatever the connection says next (a disconnect)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replayed
