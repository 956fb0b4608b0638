"""POST /introspect (RFC 7662) and POST /revoke (RFC 7009)."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Request, post
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, PathItem, Schema
from litestar.openapi.spec.enums import OpenAPIType

from service.accounts.clients import Client, presented_credentials
from service.errors import InvalidClient, InvalidRequest
from service.http.caller import caller_of
from service.http.docs import (
    FULFILLED,
    JSON,
    error_responses,
    error_spec,
    form_body,
    form_operation,
)
from service.http.forms import check_query, parse_form
from service.http.raw import post_endpoint, read_body
from service.http.state import Services, services_of

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


async def _authenticated_form(
    request: Request[Any, Any, Any], services: Services, body: bytes
) -> tuple[Client, dict[str, str]]:
    check_query(request.query_params)
    form = parse_form(body, request.headers.get("content-type"))
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


async def introspect(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services = services_of(request)
    client, form = await _authenticated_form(request, services, await read_body(request))
    if not client.can_introspect or client.public:
        # CONTRACT 3.4: only clients allowed to introspect; anyone else gets 401.
        raise InvalidClient("this client may not introspect tokens")
    return await services.introspection.introspect(_token(form), form.get("token_type_hint"))


introspect_endpoint = post_endpoint("/introspect", introspect, name="introspect")

INTROSPECTION_ANSWER = Schema(
    type=OpenAPIType.OBJECT,
    required=["active"],
    description="RFC 7662 section 2.2: only `active` when the token is not active",
    properties={
        "active": Schema(type=OpenAPIType.BOOLEAN),
        "token_type": Schema(type=OpenAPIType.STRING, enum=["access_token", "refresh_token"]),
        "scope": Schema(type=OpenAPIType.STRING),
        "client_id": Schema(type=OpenAPIType.STRING),
        "sub": Schema(type=OpenAPIType.STRING),
        "aud": Schema(
            one_of=[
                Schema(type=OpenAPIType.STRING),
                Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.STRING)),
            ]
        ),
        "iss": Schema(type=OpenAPIType.STRING),
        "exp": Schema(type=OpenAPIType.INTEGER),
        "iat": Schema(type=OpenAPIType.INTEGER),
        "jti": Schema(type=OpenAPIType.STRING),
        "sid": Schema(type=OpenAPIType.STRING),
        "username": Schema(type=OpenAPIType.STRING),
    },
)

INTROSPECT_PATH = PathItem(
    post=Operation(
        operation_id="introspect",
        summary="Token introspection (RFC 7662)",
        tags=["gateway"],
        security=[{"client_secret_basic": []}],
        request_body=form_body(TOKEN_FORM, "form-encoded introspection request"),
        responses={
            "200": OpenAPIResponse(
                description=FULFILLED, content={JSON: OpenAPIMediaType(schema=INTROSPECTION_ANSWER)}
            ),
            **error_responses(
                {
                    400: "invalid_request",
                    401: "invalid_client",
                    413: "the body is larger than 64 KiB",
                    503: "temporarily_unavailable",
                }
            ),
        },
        deprecated=False,
    )
)


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
async def revoke(request: Request[Any, Any, Any]) -> None:
    services = services_of(request)
    client, form = await _authenticated_form(request, services, await request.body())
    caller = caller_of(request, services.settings.trusted_proxies)
    await services.revocation.revoke(client, _token(form), form.get("token_type_hint"), caller)
    # RFC 7009 2.2: 200, also for invalid or unknown tokens; the body is empty.
