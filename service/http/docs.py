"""Pieces of the OpenAPI document shared by the OAuth endpoints: the error body
and request bodies the handlers parse themselves, for the declared handlers and
for the operations written out for the two plain ASGI endpoints
(service/http/raw.py), which Litestar cannot describe."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Reference,
    RequestBody,
    Schema,
)
from litestar.openapi.spec.enums import OpenAPIType

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
FULFILLED = "Request fulfilled, document follows"  # Litestar's wording for a 200


# The form of RFC 7662 (introspection) and RFC 7009 (revocation).
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


class OAuthErrorBody(msgspec.Struct):
    error: str
    error_description: str


def error_spec(description: str) -> ResponseSpec:
    """An error answer, for a declared handler's `responses`."""
    return ResponseSpec(
        data_container=OAuthErrorBody, description=description, generate_examples=False
    )


def component(name: str) -> OpenAPIMediaType:
    """JSON of a schema that declared handlers put in the components."""
    return OpenAPIMediaType(schema=Reference(ref=f"#/components/schemas/{name}"))


def error_responses(descriptions: Mapping[int, str]) -> dict[str, OpenAPIResponse]:
    """Error answers, for a hand-made Operation."""
    return {
        str(status): OpenAPIResponse(description=text, content={JSON: component("OAuthErrorBody")})
        for status, text in descriptions.items()
    }


def form_body(schema: Schema, description: str, *, json_too: bool = False) -> RequestBody:
    content = {FORM: OpenAPIMediaType(schema=schema)}
    if json_too:
        content[JSON] = OpenAPIMediaType(schema=schema)
    return RequestBody(required=True, description=description, content=content)


def form_operation(schema: Schema, description: str) -> type[Operation]:
    """An Operation class that documents a body the handler parses itself (the
    strict parser must see repeated parameters, which a decoded struct cannot)."""
    body = form_body(schema, description)

    @dataclass
    class FormOperation(Operation):
        def __post_init__(self) -> None:
            self.request_body = body

    return FormOperation
