"""POST /introspect (RFC 7662) and POST /revoke (RFC 7009)."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Schema
from litestar.openapi.spec.enums import OpenAPIType

from service.accounts.clients import Client, presented_credentials
from service.errors import InvalidClient, InvalidRequest
from service.http.caller import caller_of
from service.http.forms import check_query, parse_form
from service.http.state import Services, services_of
from service.http.token import OAuthErrorBody, form_operation

TOKEN_FORM = Schema(
    type=OpenAPIType.OBJECT,
    required=["token"],
    properties={
        "token": Schema(type=OpenAPIType.STRING),
        "token_type_hint": Schema(type=OpenAPIType.STRING, enum=["access_token", "refresh_token"]),
        "client_id": Schema(type=OpenAPIType.STRING),
        "client_secret": Schema(type=OpenAPIType.STRING),
    },
)


def _error(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=OAuthErrorBody, description=description, generate_examples=False
    )


async def _authenticated_form(
    request: Request[Any, Any, Any], services: Services
) -> tuple[Client, dict[str, str]]:
    check_query(request.query_params)
    form = parse_form(await request.body(), request.headers.get("content-type"))
    credentials = presented_credentials(
        request.headers.get("authorization"), form.get("client_id"), form.get("client_secret")
    )
    client = await services.tokens.authenticate(credentials)
    return client, form


def _token(form: dict[str, str]) -> str:
    token = form.get("token")
    if token is None:
        raise InvalidRequest("missing token")
    return token


@post(
    "/introspect",
    summary="Token introspection (RFC 7662)",
    status_code=200,
    tags=["gateway"],
    operation_id="introspect",
    security=[{"client_secret_basic": []}],
    operation_class=form_operation(TOKEN_FORM, "form-encoded introspection request"),
    responses={
        400: _error("invalid_request"),
        401: _error("invalid_client"),
        413: _error("the body is larger than 64 KiB"),
        503: _error("temporarily_unavailable"),
    },
)
async def introspect(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services = services_of(request)
    async with services.database.connection():  # one connection for the whole request
        client, form = await _authenticated_form(request, services)
        if not client.can_introspect or client.public:
            # CONTRACT 3.4: only clients allowed to introspect; anyone else gets 401.
            raise InvalidClient("this client may not introspect tokens")
        return await services.introspection.introspect(_token(form), form.get("token_type_hint"))


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
        400: _error("invalid_request or unauthorized_client (another client's token)"),
        401: _error("invalid_client"),
        413: _error("the body is larger than 64 KiB"),
        503: _error("temporarily_unavailable"),
    },
)
async def revoke(request: Request[Any, Any, Any]) -> None:
    services = services_of(request)
    client, form = await _authenticated_form(request, services)
    caller = caller_of(request, services.settings.trusted_proxies)
    await services.revocation.revoke(client, _token(form), form.get("token_type_hint"), caller)
    # RFC 7009 2.2: 200, also for invalid or unknown tokens; the body is empty.
