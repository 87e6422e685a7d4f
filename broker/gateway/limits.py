"""Per-caller limits: request rate (token bucket) and request body size.

An ASGI middleware in front of the application, so every route is limited
the same way and a refused request costs no parsing: 413 when the body is
over ``max_body_bytes`` (by ``Content-Length`` or by counting), 429 with
``Retry-After`` (whole seconds) when the caller has spent its burst. The
number of events per request is the publishing desk's limit (422). It also
echoes ``X-Correlation-ID`` and ``X-Request-ID`` on every response.

A caller is counted as its certificate's principal, a bearer token's OAuth2
client id (each registered client its own bucket, wherever it connects
from), and anyone else by address (a flood of bad tokens is limited too).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.gateway.auth import principal_in
from broker.gateway.errors import error_response

ECHOED = (b"x-correlation-id", b"x-request-id")
MAX_ECHO = 128


@dataclass(frozen=True)
class Limits:
    rate_per_s: float = 200.0
    burst: int = 400
    max_body_bytes: int = 1024 * 1024
    max_events: int = 100


class Buckets:
    """One token bucket per caller."""

    def __init__(self, rate: float, burst: int, now: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self._now = now
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: str) -> float:
        """0 if ``who`` may go now, else the seconds until it may."""
        with self._lock:
            now = self._now()
            tokens, then = self._state.get(who, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            if tokens >= 1.0:
                self._state[who] = (tokens - 1.0, now)
                return 0.0
            self._state[who] = (tokens, now)
            return (1.0 - tokens) / self.rate


class _TooLarge(Exception):
    pass


def _counted_as(scope: Any) -> str | None:
    """Whose bucket a request takes from (see the module docstring)."""
    cert = principal_in(scope)
    if cert is not None:
        return str(cert)
    auth = dict(scope.get("headers", ())).get(b"authorization", b"")
    scheme, _, token = auth.decode("latin-1").partition(" ")
    app = scope.get("app")
    tokens = getattr(getattr(app, "state", None), "tokens", None)
    if scheme.lower() == "bearer" and token and tokens is not None:
        found = tokens.claims(token.strip())
        if found is not None:
            principal, client_id = found
            return f"oauth-client:{client_id}" if client_id else str(principal)
    client = scope.get("client")
    return f"address:{client[0]}" if client else None


class LimitsMiddleware:
    def __init__(self, app: Any, limits: Limits) -> None:
        self.app = app
        self.limits = limits
        self.buckets = Buckets(limits.rate_per_s, limits.burst)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        echo = [(k, v) for k, v in scope.get("headers", ())
                if k in ECHOED and len(v) <= MAX_ECHO and v.isascii()]

        async def send_echo(message: Any) -> None:
            if message["type"] == "http.response.start" and echo:
                message = {**message, "headers": [*message.get("headers", []), *echo]}
            await send(message)

        who = _counted_as(scope)
        if who is not None:
            wait = self.buckets.take(who)
            if wait > 0:
                retry = max(1, math.ceil(wait))
                await error_response(
                    429, f"{who}: over the limit of {self.limits.rate_per_s:g} requests/s "
                    f"(burst {self.limits.burst}); retry after {retry} s",
                    headers={"Retry-After": str(retry)},
                )(scope, receive, send_echo)
                return
        limit = self.limits.max_body_bytes
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(scope, receive, send_echo)
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send_echo(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if started:
                raise
            await self._too_large(scope, receive, send_echo)

    async def _too_large(self, scope: Any, receive: Any, send: Any) -> None:
        await error_response(
            413, f"request body over the limit of {self.limits.max_body_bytes} bytes"
        )(scope, receive, send)
