"""Who may call, how much, and how big: API keys, a per-key rate limit and the request body limit.

Plain ASGI middleware, so a refused request costs no routing, parsing or body reading. Refusals
use the error body of `api.errors` (401, 413, 429) and never echo the key presented.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hydrodiag.api.errors import error_response

# Probes must answer without credentials: orchestrators and load balancers carry no keys.
PUBLIC_PATHS = frozenset({"/health", "/ready", "/v2/health/live", "/v2/health/ready"})
API_KEY_HEADER = "x-api-key"
# Identities remembered by the rate limiter; the least recently seen is forgotten first.
MAX_TRACKED_CLIENTS = 10_000


class RateLimiter:
    """Token bucket per identity: `per_minute` requests per minute, bursts up to the same number."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate_per_s = per_minute / 60.0
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def acquire(self, identity: str) -> float:
        """0 when the request may go ahead, else the seconds until it would."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(identity, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate_per_s)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate_per_s
            self._buckets[identity] = (tokens, now)
            while len(self._buckets) > MAX_TRACKED_CLIENTS:
                self._buckets.popitem(last=False)
        return wait


def scope_header(scope: Scope, name: bytes) -> str | None:
    """The first value of header `name` (lower case) in an ASGI scope."""
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def presented_key(scope: Scope) -> str | None:
    key = scope_header(scope, API_KEY_HEADER.encode())
    if key:
        return key.strip()
    auth = scope_header(scope, b"authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, *, api_keys: Sequence[str], max_body_bytes: int,
                 rate_limit_per_minute: int) -> None:
        self.app = app
        self._keys = [key.encode() for key in api_keys]
        self.max_body_bytes = max_body_bytes
        self.limiter = RateLimiter(rate_limit_per_minute) if rate_limit_per_minute > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        public = scope["path"] in PUBLIC_PATHS
        identity: str | None = None
        if self._keys and not public:
            key = presented_key(scope)
            if key is None or not self._known(key):
                message = "missing API key" if key is None else "invalid API key"
                await self._refuse(scope, receive, send, 401, f"{message}: send it in X-API-Key or as "
                                   "'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"}, "unauthorized")
                return
            # The limiter keys on a digest: raw keys never sit in memory longer than the request.
            identity = "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
        if self.limiter is not None and not public:
            client = scope.get("client")
            identity = identity or f"client:{client[0] if client else 'unknown'}"
            wait = self.limiter.acquire(identity)
            if wait > 0:
                retry_after = str(max(1, math.ceil(wait)))
                await self._refuse(scope, receive, send, 429, "rate limit exceeded; retry after "
                                   f"{retry_after} s", {"Retry-After": retry_after}, "rate_limited")
                return
        length = scope_header(scope, b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                await self._refuse(scope, receive, send, 400, "invalid Content-Length header", {}, "bad_request")
                return
            if int(length) > self.max_body_bytes:
                await self._refuse(scope, receive, send, 413, self._too_large(), {}, "body_too_large")
                return
            # HTTP framing bounds the body by the checked Content-Length; only chunked bodies need counting.
            await self.app(scope, receive, send)
            return
        await self.app(scope, self._limited(scope, receive), send)

    def _known(self, key: str) -> bool:
        candidate = key.encode()
        # Compare against every key in constant time: timing reveals neither which key nor how much matched.
        return any([hmac.compare_digest(candidate, known) for known in self._keys])

    def _too_large(self) -> str:
        return f"request body exceeds the limit of {self.max_body_bytes} bytes (MAX_BODY_BYTES)"

    def _limited(self, scope: Scope, receive: Receive) -> Receive:
        """Counts streamed (chunked) body bytes; FastAPI turns the HTTPException into the 413 answer."""
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    scope.setdefault("state", {})["reject_reason"] = "body_too_large"
                    raise HTTPException(status_code=413, detail=self._too_large())
            return message

        return receive_limited

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str,
                      headers: dict[str, str], reason: str) -> None:
        state = scope.setdefault("state", {})
        state["reject_reason"] = reason
        response = error_response(status, message, None, headers=headers, request_id=state.get("request_id"))
        await response(scope, receive, send)
