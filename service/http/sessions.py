"""/sessions: the user's own sessions (CONTRACT 3.8), by the user's access token.

The holder of the token is a dependency of every handler here, resolved before
the handler's parameters are validated: a request without a valid, live
user's token is refused (401, 403) whatever else it holds.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery

from service.admin.views import Revoked
from service.http.dependencies import CallerDep, ServicesDep
from service.http.docs import error_spec
from service.http.state import Services
from service.http.token import presented_proof
from service.tokens.sessions import SessionHolder, SessionPage


async def provide_holder(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> SessionHolder:
    proof = presented_proof(request, request.scope["path"])
    return await services.sessions.authenticate(request.headers.get("authorization"), proof)


HolderDep = NamedDependency[SessionHolder]

_DESCRIPTIONS = {
    400: "invalid_request: a malformed limit or cursor",
    401: "invalid_token: a missing, malformed, expired, revoked or forged Bearer token; "
    "a DPoP-bound token as Bearer, or without a valid DPoP proof (RFC 9449 section 7)",
    403: "insufficient_scope: the token is not a user's (client_credentials)",
    404: "not_found: not one of the caller's active sessions",
    503: "temporarily_unavailable: the database did not answer in time",
}


def errors(*extra: int) -> dict[int, ResponseSpec]:
    return {code: error_spec(_DESCRIPTIONS[code]) for code in sorted({401, 403, 503, *extra})}


class SessionsController(Controller):
    path = "/sessions"
    tags = ["sessions"]
    security = [{"bearer": []}]
    dependencies = {"holder": Provide(provide_holder)}

    @get(
        operation_id="sessions_list",
        summary="The user's active sessions, newest first (CONTRACT 3.8)",
        responses=errors(400),
    )
    async def list_sessions(
        self,
        services: ServicesDep,
        holder: HolderDep,
        limit: FromQuery[int | None] = None,
        cursor: FromQuery[str | None] = None,
    ) -> SessionPage:
        return await services.sessions.list(holder, limit, cursor)

    @delete(
        "/{session_id:str}",
        operation_id="sessions_revoke",
        summary="Sign out one of the user's sessions",
        responses=errors(404),
    )
    async def revoke_session(
        self,
        services: ServicesDep,
        caller: CallerDep,
        holder: HolderDep,
        session_id: FromPath[str],
    ) -> None:
        await services.sessions.revoke(holder, session_id, caller)

    @post(
        "/revoke-others",
        status_code=200,
        operation_id="sessions_revoke_others",
        summary="Sign out every other session of the user",
        responses=errors(),
    )
    async def revoke_others(
        self, services: ServicesDep, caller: CallerDep, holder: HolderDep
    ) -> Revoked:
        return await services.sessions.revoke_others(holder, caller)
