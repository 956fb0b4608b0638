"""POST /refresh (CONTRACT 3.3): the refresh_token grant, JSON or form-encoded."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.openapi.spec import OpenAPIResponse, Operation, PathItem, Schema
from litestar.openapi.spec.enums import OpenAPIType

from service.errors import InvalidRequest
from service.http.docs import FULFILLED, JSON, component, error_responses, form_body
from service.http.forms import FORM_TYPE, check_query, media_type, parse_pairs
from service.http.json_body import json_object
from service.http.raw import post_endpoint, read_body
from service.http.state import services_of
from service.http.token import GRANT_ERRORS, TokenBody, grant

REFRESH_FIELDS = ("refresh_token", "scope", "client_id", "client_secret")

REFRESH_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["refresh_token"],
    properties={
        "refresh_token": Schema(type=OpenAPIType.STRING),
        "scope": Schema(type=OpenAPIType.STRING, description="narrower scope (optional)"),
        "client_id": Schema(type=OpenAPIType.STRING),
        "client_secret": Schema(type=OpenAPIType.STRING),
    },
)


def parse_refresh_body(body: bytes, content_type: str | None) -> dict[str, str]:
    kind = media_type(content_type)
    if kind == FORM_TYPE:
        form = parse_pairs(body)
    elif kind == "application/json":
        form = _parse_json(body)
    else:
        raise InvalidRequest("the body must be application/json or " + FORM_TYPE)
    # Unknown members (grant_type included) are ignored: this is the refresh grant.
    fields = {name: form[name] for name in REFRESH_FIELDS if name in form}
    fields["grant_type"] = "refresh_token"
    return fields


def _parse_json(body: bytes) -> dict[str, str]:
    document = json_object(body, REFRESH_FIELDS)
    fields: dict[str, str] = {}
    for name in REFRESH_FIELDS:
        value = document.get(name)
        if value is None or value == "":
            continue  # an empty member counts as absent, as in the form
        if not isinstance(value, str):
            raise InvalidRequest(f"{name} must be a string")
        if "\x00" in value:
            raise InvalidRequest(f"{name} must not contain NUL characters")
        fields[name] = value
    return fields


async def refresh(request: Request[Any, Any, Any]) -> TokenBody:
    check_query(request.query_params)
    form = parse_refresh_body(await read_body(request), request.headers.get("content-type"))
    return await grant(request, services_of(request), form, "/refresh")


refresh_endpoint = post_endpoint("/refresh", refresh, name="refresh")

REFRESH_PATH = PathItem(
    post=Operation(
        operation_id="refresh",
        summary="Rotate a refresh token (CONTRACT 3.3)",
        tags=["oauth"],
        security=[{"client_secret_basic": []}, {}],
        request_body=form_body(REFRESH_SCHEMA, "refresh request", json_too=True),
        responses={
            "200": OpenAPIResponse(description=FULFILLED, content={JSON: component("TokenBody")}),
            **error_responses(GRANT_ERRORS),
        },
        deprecated=False,
    )
)
