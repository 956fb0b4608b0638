"""JWKS (RFC 7517) and authorization server metadata (RFC 8414)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Response, get
from litestar.openapi.datastructures import ResponseSpec

from service.http.dependencies import ServicesDep
from service.tokens.dpop import DPOP_ALGS


class JWKSet(msgspec.Struct):
    """RFC 7517 section 5: the public keys, each with kid, kty, alg and use."""

    keys: list[dict[str, Any]]


@get(
    "/.well-known/jwks.json",
    tags=["discovery"],
    summary="Public signing keys (RFC 7517)",
    operation_id="jwks",
    media_type="application/jwk-set+json",
    responses={
        200: ResponseSpec(
            data_container=JWKSet,
            media_type="application/jwk-set+json",
            description="The published keys (next, active, retired)",
            generate_examples=False,
        )
    },
)
async def jwks(services: ServicesDep) -> Response[bytes]:
    return Response(
        services.keys.state.jwks,
        media_type="application/jwk-set+json",
        headers={"Cache-Control": f"public, max-age={services.settings.jwks_max_age}"},
    )


@get(
    "/.well-known/oauth-authorization-server",
    tags=["discovery"],
    operation_id="metadata",
    summary="Authorization server metadata (RFC 8414)",
)
async def metadata(services: ServicesDep) -> dict[str, Any]:
    """Only what Rotor does (CONTRACT 3.7): no OpenID Connect member (no ID
    tokens), no `*_auth_signing_alg_values_supported` (no JWT client
    authentication), no `scopes_supported` (scopes are per client, and an empty
    list would claim there are none), and no member that RFC 8414 or its registry
    does not define (`access_token_signing_alg_values_supported` is in neither;
    the JWKS says which algorithms sign). `response_types_supported` is REQUIRED
    by RFC 8414 section 2: empty, as Rotor has no authorization endpoint."""
    settings = services.settings
    base = settings.issuer.rstrip("/")
    return {
        "issuer": settings.issuer,
        "token_endpoint": f"{base}/token",
        "introspection_endpoint": f"{base}/introspect",
        "revocation_endpoint": f"{base}/revoke",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "grant_types_supported": ["password", "client_credentials", "refresh_token"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        # RFC 9449 §5.1: the JWS algorithms of DPoP proofs (CONTRACT 3.9).
        "dpop_signing_alg_values_supported": list(DPOP_ALGS),
    }
