"""Route guards: the admin check, made in one place (service/admin/auth.py)."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from service.http.state import services_of


async def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A valid, live access token (Bearer) of a client with the admin permission."""
    await services_of(connection).admin_auth.authenticate(connection.headers.get("authorization"))
