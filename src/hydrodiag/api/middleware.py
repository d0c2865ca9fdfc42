"""Request context as plain ASGI middleware (no per-request task or body buffering).

Gives every request an id -- the caller's X-Request-ID when it is a sane token, otherwise a fresh
UUID-shaped id made of a random per-process prefix and a counter (unique like uuid4, without a
urandom call per request) -- echoes it in the response header, and turns any exception that escaped the error
handlers into the generic 500 of `api.errors` after logging it once with that id.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hydrodiag.api.errors import REQUEST_ID_HEADER, internal_error_response

logger = logging.getLogger("hydrodiag.api.access")

# Ids end up in logs and headers: only short tokens without spaces or control characters pass.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_HEADER = REQUEST_ID_HEADER.lower().encode("latin-1")


class _RequestIds:
    """`xxxxxxxx-xxxx-xxxx-cccc-cccccccccccc`: 64 random bits per process, then a 64-bit counter."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)  # a forked worker must not repeat the parent's ids

    def reseed(self) -> None:
        h = secrets.token_hex(8)
        self._prefix = f"{h[:8]}-{h[8:12]}-{h[12:16]}-"
        self._counter = itertools.count(secrets.randbits(32))

    def next(self) -> str:
        n = next(self._counter)
        return f"{self._prefix}{(n >> 48) & 0xFFFF:04x}-{n & 0xFFFFFFFFFFFF:012x}"


_request_ids = _RequestIds()


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
        return _request_ids.next()
