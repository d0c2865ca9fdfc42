"""Request context as plain ASGI middleware (no per-request task or body buffering).

Gives every request an id -- the caller's X-Request-ID when it is a sane token, otherwise a fresh
UUID-shaped id (`hydrodiag.ids`: a random per-process prefix and a counter) -- echoes it in the
response header, and turns any exception that escaped the error handlers into the generic 500 of
`api.errors` after logging it once with that id.
"""

from __future__ import annotations

import logging
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hydrodiag.api.errors import REQUEST_ID_HEADER, internal_error_response
from hydrodiag.ids import unique_ids

logger = logging.getLogger("hydrodiag.api.access")

# Ids end up in logs and headers: only short tokens without spaces or control characters pass.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_HEADER = REQUEST_ID_HEADER.lower().encode("latin-1")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self._request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != _HEADER]
                headers.append((_HEADER, request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error in %s %s (request %s)", scope.get("method"), scope.get("path"),
                             request_id)
            if response_started:
                raise  # too late for a clean answer; the server closes the connection
            await internal_error_response(request_id)(scope, receive, send_with_id)
        finally:
            logger.debug(
                "%s %s -> %d in %.1f ms", scope.get("method"), scope.get("path"), status,
                (time.perf_counter() - started) * 1000.0,
                extra={"request_id": request_id, "status": status},
            )

    @staticmethod
    def _request_id(scope: Scope) -> str:
        for key, value in scope.get("headers", []):
            if key.lower() == _HEADER:
                candidate = value.decode("latin-1").strip()
                if _VALID_REQUEST_ID.match(candidate):
                    return candidate
                break
        return unique_ids.uuid_shaped()
