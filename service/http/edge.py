"""The edge: what every HTTP request goes through once, around everything else.

One layer (one wrapped `send`) instead of a middleware per concern, because
these run on every request of the hot paths:

- the request id: a caller's `X-Request-ID` when it is well-formed, else a new
  one; echoed in the answer and in every log line of the request;
- CONTRACT section 3: a request that cannot get its answer from the database
  within ROTOR_DB_TIMEOUT answers 503 with Retry-After; the bound is for the
  whole request;
- CONTRACT section 3: `Cache-Control: no-store` and `Pragma: no-cache` on every
  answer of the OAuth endpoints, including the ones made before routing (405),
  and of /sessions (a user's devices and addresses are nobody's to cache);
- requests by route template and status, and their latency (Prometheus);
- one access line per request: method, path, status, duration; never a query
  string, a header value or a body.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

from service.deadline import Deadlines, request_deadline
from service.observability.logs import log_access, request_id
from service.observability.metrics import HTTP_METRICS

NO_STORE_PATHS = frozenset({"/token", "/refresh", "/introspect", "/revoke", "/sessions"})
NO_STORE_PREFIX = "/sessions/"
NO_STORE_HEADERS = ((b"cache-control", b"no-store"), (b"pragma", b"no-cache"))
_CACHE_HEADERS = frozenset({b"cache-control", b"pragma"})
# Served from memory: no database deadline needed.
NO_DEADLINE_PATHS = frozenset(
    {
        "/health/live",
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
        "/metrics",
    }
)
# Not counted in the request metrics: scrapes and probes would drown the rest.
UNMEASURED_PATHS = frozenset({"/metrics", "/health/live", "/health/ready"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

# Plain ASGI, as the server speaks it (the edge sits outside Litestar's types).
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


def _routed_path(path: str) -> str:
    """The path as the router matches it: `/token/`, `//token` and `/token//`
    reach /token, and their answers must not be cached either."""
    return "/" + "/".join(part for part in path.split("/") if part)


def _no_store(routed: str) -> bool:
    return routed in NO_STORE_PATHS or routed.startswith(NO_STORE_PREFIX)


class Edge:
    def __init__(self, app: ASGIApp, *, deadline: float) -> None:
        self._app = app
        self._deadlines = Deadlines(deadline)
        self._retry_after = str(max(1, round(deadline))).encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path: str = scope["path"]
        # A new id is random (not a counter, which would tell any caller how
        # busy the service is), 32 hex characters like a UUID's.
        rid = _presented_id(scope) or secrets.token_hex(16)
        rid_header = (b"x-request-id", rid.encode())
        no_store = path in NO_STORE_PATHS or _no_store(_routed_path(path))
        status = 0
        context = request_id.set(rid)
        started = time.perf_counter()

        async def edge_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers") or ())
                if no_store:
                    headers = [h for h in headers if h[0].lower() not in _CACHE_HEADERS]
                    headers.extend(NO_STORE_HEADERS)
                headers.append(rid_header)
                message["headers"] = headers
            await send(message)

        try:
            if path in NO_DEADLINE_PATHS:
                await self._app(scope, receive, edge_send)
            else:
                deadline = self._deadlines.start()
                token = request_deadline.set(deadline)
                try:
                    await self._app(scope, receive, edge_send)
                except asyncio.CancelledError:
                    if not deadline.was_hit():
                        raise
                    if status:  # the answer has begun: nothing sensible to add
                        raise TimeoutError("the request outlived ROTOR_DB_TIMEOUT") from None
                    await self._unavailable(edge_send)
                finally:
                    self._deadlines.finish(deadline)
                    request_deadline.reset(token)
        finally:
            seconds = time.perf_counter() - started
            answered = status or 500
            template = scope.get("path_template")
            if template is not None and path not in UNMEASURED_PATHS:
                HTTP_METRICS.observe(scope["method"], template, answered, seconds)
            log_access(scope["method"], path, answered, seconds)
            request_id.reset(context)

    async def _unavailable(self, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_UNAVAILABLE_BODY)).encode()),
                    (b"retry-after", self._retry_after),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _UNAVAILABLE_BODY})


_UNAVAILABLE_BODY = msgspec.json.encode(
    {
        "error": "temporarily_unavailable",
        "error_description": "the database did not answer in time",
    }
)


def _presented_id(scope: Scope) -> str | None:
    headers: Any = scope.get("headers", ())
    for key, value in headers:
        if key == b"x-request-id":
            presented = value.decode("latin-1")
            return presented if _REQUEST_ID.fullmatch(presented) else None
    return None
