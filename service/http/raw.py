"""The hot endpoints (/token, /refresh, /introspect) as plain ASGI route handlers.

Every client refreshes every few minutes, services ask /token for their
access tokens, and a gateway may introspect on every request it passes, so
these skip what Litestar does per request for a declared handler (signature
model, kwargs, response object): measured on this project's 2-core machine,
that pipeline costs about as much as uvicorn and Litestar's routing together
(for /token, a fifth of a client_credentials request's worker CPU:
bench/README.md, "Profile of the hot paths"). They are still Litestar
routes: routed by it, behind the same edge and exception handlers (an
OAuthError raised here is answered exactly as from any other endpoint). What
Litestar would have done for them is here, once: the body size limit, POST
only (405 with Allow), the JSON answer, and their entries in the OpenAPI
document (see `document`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Litestar, Request
from litestar.exceptions import MethodNotAllowedException
from litestar.exceptions.http_exceptions import ClientException, RequestEntityTooLarge
from litestar.handlers import ASGIRouteHandler, asgi
from litestar.openapi.spec import PathItem, Schema

MAX_BODY_BYTES = 64 * 1024
ALLOW_POST = "OPTIONS, POST"
_JSON = b"application/json"

Handler = Callable[[Request[Any, Any, Any]], Awaitable[Any]]


async def read_body(request: Request[Any, Any, Any], limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole body, refused with 413 past `limit` bytes (announced or sent)."""
    announced = request.headers.get("content-length")
    if announced is not None and announced.isdigit() and int(announced) > limit:
        raise RequestEntityTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Any = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientException("client disconnected before the body was read")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestEntityTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def post_endpoint(path: str, handler: Handler, *, name: str) -> ASGIRouteHandler:
    """A POST-only ASGI route handler: `handler(request)` returns what is
    answered as JSON with 200; what it raises goes to the exception handlers."""

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        method = scope["method"]
        if method == "OPTIONS":
            await _answer(send, 204, b"", [(b"allow", ALLOW_POST.encode())])
            return
        if method != "POST":
            raise MethodNotAllowedException(headers={"Allow": ALLOW_POST})
        answer = await handler(Request(scope, receive, send))
        await _answer(send, 200, msgspec.json.encode(answer), [(b"content-type", _JSON)])

    return asgi(path, name=name, copy_scope=False)(endpoint)


async def _answer(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def document(
    app: Litestar, paths: dict[str, PathItem], schemas: dict[str, Schema] | None = None
) -> None:
    """Litestar documents declared handlers only: add these paths' entries, and
    the component schemas they refer to, to the document the app serves at
    /schema (and `rotor openapi` prints)."""
    app.openapi_schema.paths = {**(app.openapi_schema.paths or {}), **paths}
    if schemas:
        components = app.openapi_schema.components
        components.schemas = {**(components.schemas or {}), **schemas}
