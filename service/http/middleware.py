"""ASGI middleware: the whole-request database deadline and the no-store headers.

CONTRACT section 3: a request that cannot get its answer from the database
within ROTOR_DB_TIMEOUT answers 503 with Retry-After; the bound is for the
whole request. Responses of the OAuth endpoints are never cached.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service.deadline import request_deadline

NO_STORE_PATHS = frozenset({"/token", "/refresh", "/introspect", "/revoke"})
NO_STORE_HEADERS = [(b"cache-control", b"no-store"), (b"pragma", b"no-cache")]
# Served from memory: no database deadline needed.
NO_DEADLINE_PATHS = frozenset(
    {
        "/health/live",
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
        "/metrics",
    }
)


async def no_store(message: Message, scope: Scope) -> None:
    """A before-send hook, so it also covers answers made before routing (405, 404)."""
    if message["type"] == "http.response.start" and scope.get("path") in NO_STORE_PATHS:
        headers = [
            (k, v)
            for k, v in message.get("headers", [])
            if k.lower() not in (b"cache-control", b"pragma")
        ]
        message["headers"] = headers + NO_STORE_HEADERS


class DeadlineMiddleware:
    def __init__(self, app: ASGIApp, *, deadline: float) -> None:
        self._app = app
        self._deadline = deadline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["path"] in NO_DEADLINE_PATHS:
            await self._app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            async with asyncio.timeout(self._deadline) as deadline:
                token = request_deadline.set(deadline)
                try:
                    await self._app(scope, receive, tracking_send)
                finally:
                    request_deadline.reset(token)
        except TimeoutError:
            if started:
                raise
            await _send_unavailable(send, retry_after=max(1, round(self._deadline)))


async def _send_unavailable(send: Any, *, retry_after: int) -> None:
    body = msgspec.json.encode(
        {
            "error": "temporarily_unavailable",
            "error_description": "the database did not answer in time",
        }
    )
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(retry_after).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
