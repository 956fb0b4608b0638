"""POST /token (RFC 6749 section 3.2): parse, call the token service, serialise."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.openapi.spec import OpenAPIResponse, Operation, PathItem, Schema
from litestar.openapi.spec.enums import OpenAPIType

from service.http.basic import presented_credentials
from service.http.caller import caller_of
from service.http.docs import FULFILLED, JSON, component, error_responses, form_body
from service.http.forms import check_query, parse_form
from service.http.raw import post_endpoint, read_body
from service.http.state import Services, services_of
from service.tokens.dpop import PresentedProof
from service.tokens.grants import TokenResponse


class TokenBody(msgspec.Struct, omit_defaults=True):
    access_token: str
    token_type: str
    expires_in: int
    scope: str
    refresh_token: str | None = None


def token_body(result: TokenResponse) -> TokenBody:
    return TokenBody(
        result.access_token,
        result.token_type,
        result.expires_in,
        result.scope,
        result.refresh_token,
    )


def _string(description: str) -> Schema:
    return Schema(type=OpenAPIType.STRING, description=description)


TOKEN_FORM_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    required=["grant_type"],
    properties={
        "grant_type": Schema(
            type=OpenAPIType.STRING, enum=["password", "client_credentials", "refresh_token"]
        ),
        "username": _string("password grant"),
        "password": _string("password grant"),
        "refresh_token": _string("refresh_token grant"),
        "scope": _string("space-separated scope tokens"),
        "client_id": _string("client_secret_post, or a public client"),
        "client_secret": _string("client_secret_post"),
    },
)


# The error answers of /token and /refresh.
GRANT_ERRORS = {
    400: "invalid_request, invalid_grant, invalid_scope, unauthorized_client or "
    "unsupported_grant_type (RFC 6749 section 5.2); invalid_dpop_proof (RFC 9449 section 5)",
    401: "invalid_client, with WWW-Authenticate: Basic",
    413: "the body is larger than 64 KiB",
    429: "too many failed logins; see Retry-After",
    503: "temporarily_unavailable; see Retry-After",
}


async def token(request: Request[Any, Any, Any]) -> TokenBody:
    """POST /token: a raw route, as /refresh and /introspect are (service/http/raw.py).
    As a declared handler (signature model, injected services, response object)
    it cost about a fifth of a client_credentials request's worker CPU:
    bench/README.md, "Profile of the hot paths"."""
    check_query(request.query_params)
    # Litestar's parse of Content-Length, as the declared handler had it: a
    # malformed one is refused with its ClientException (service/http/errors.py).
    request.content_length  # noqa: B018
    form = parse_form(await read_body(request), request.headers.get("content-type"))
    return await grant(request, services_of(request), form, "/token")


token_endpoint = post_endpoint("/token", token, name="token")

# What Litestar documented for the declared handler, written out (the same document).
TOKEN_PATH = PathItem(
    post=Operation(
        operation_id="token",
        summary="Token endpoint (RFC 6749 section 3.2)",
        description="Grants: password (first-party clients only, enabled per client), "
        "client_credentials, refresh_token.",
        tags=["oauth"],
        security=[{"client_secret_basic": []}, {}],
        request_body=form_body(TOKEN_FORM_SCHEMA, "form-encoded token request"),
        responses={
            "200": OpenAPIResponse(
                description=FULFILLED, content={JSON: component("TokenBody")}, headers={}
            ),
            **error_responses(GRANT_ERRORS),
        },
        deprecated=False,
    )
)

# TokenBody's schema, as Litestar generated it from the struct for the declared handler.
TOKEN_BODY_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    title="TokenBody",
    required=["access_token", "expires_in", "scope", "token_type"],
    properties={
        "access_token": Schema(type=OpenAPIType.STRING),
        "token_type": Schema(type=OpenAPIType.STRING),
        "expires_in": Schema(type=OpenAPIType.INTEGER),
        "scope": Schema(type=OpenAPIType.STRING),
        "refresh_token": Schema(
            one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.NULL)]
        ),
    },
)


def presented_proof(request: Request[Any, Any, Any], path: str) -> PresentedProof:
    """Every `DPoP` header of the request (RFC 9449 §4.3: exactly one is
    allowed, which is the verifier's to check), with the method and the path
    of the endpoint it was sent to."""
    return PresentedProof(tuple(request.headers.getall("dpop", [])), request.method, path)


async def grant(
    request: Request[Any, Any, Any], services: Services, form: dict[str, str], path: str
) -> TokenBody:
    """The token endpoint's answer to a parsed request; /refresh shares it. The
    caller is read here, not injected: /refresh is a raw route, and with an
    injected caller the bench's client_credentials load fell from 0.36 to 0.33
    of the framework ceiling (one pair of runs, 2026-12-04)."""
    credentials = presented_credentials(
        request.headers.get("authorization"), form.get("client_id"), form.get("client_secret")
    )
    caller = caller_of(request, services.settings.trusted_proxies)
    proof = presented_proof(request, path)
    return token_body(await services.tokens.token(form, credentials, caller, proof))
