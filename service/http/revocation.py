"""POST /revoke: token revocation (RFC 7009)."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, post

from service.http.basic import authenticated_form, token_of
from service.http.dependencies import CallerDep, ServicesDep
from service.http.docs import TOKEN_FORM, error_spec, form_operation


@post(
    "/revoke",
    summary="Token revocation (RFC 7009)",
    status_code=200,
    tags=["oauth"],
    operation_id="revoke",
    media_type=MediaType.TEXT,
    security=[{"client_secret_basic": []}, {}],
    operation_class=form_operation(TOKEN_FORM, "form-encoded revocation request"),
    responses={
        400: error_spec("invalid_request or unauthorized_client (another client's token)"),
        401: error_spec("invalid_client"),
        413: error_spec("the body is larger than 64 KiB"),
        503: error_spec("temporarily_unavailable"),
    },
)
async def revoke(request: Request[Any, Any, Any], services: ServicesDep, caller: CallerDep) -> None:
    client, form = await authenticated_form(request, services, await request.body())
    await services.revocation.revoke(client, token_of(form), form.get("token_type_hint"), caller)
    # RFC 7009 2.2: 200, also for invalid or unknown tokens; the body is empty.
