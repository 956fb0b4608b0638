"""POST /introspect: token introspection (RFC 7662), for gateways."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, PathItem, Schema
from litestar.openapi.spec.enums import OpenAPIType

from service.errors import InvalidClient
from service.http.basic import authenticated_form, token_of
from service.http.docs import FULFILLED, JSON, TOKEN_FORM, error_responses, form_body
from service.http.raw import post_endpoint, read_body
from service.http.state import services_of


async def introspect(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services = services_of(request)
    client, form = await authenticated_form(request, services, await read_body(request))
    if not client.can_introspect or client.public:
        # CONTRACT 3.4: only clients allowed to introspect; anyone else gets 401.
        raise InvalidClient("this client may not introspect tokens")
    return await services.introspection.introspect(token_of(form), form.get("token_type_hint"))


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
