"""Discovery, health and the OpenAPI document (CONTRACT 3.7)."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.config import Settings
from tests.helpers import Rotor, database_url_for

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
OPENAPI = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


@asynccontextmanager
async def serve(
    settings: Settings, db: asyncpg.Connection, **overrides: Any
) -> AsyncIterator[Rotor]:
    changed = settings.with_overrides(**overrides)
    async with AsyncTestClient(create_app(changed)) as http:
        yield Rotor(http, changed, db)


# --- JWKS ----------------------------------------------------------------------------------


async def test_jwks_publishes_the_active_and_next_public_keys(rotor: Rotor) -> None:
    response = await rotor.http.get("/.well-known/jwks.json")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/jwk-set+json")
    keys = response.json()["keys"]
    stored = await rotor.db.fetch("SELECT kid, state, public_jwk::text FROM signing_keys")
    assert sorted(row["state"] for row in stored) == ["active", "next"]
    assert sorted(key["kid"] for key in keys) == sorted(row["kid"] for row in stored)
    by_kid = {row["kid"]: json.loads(row["public_jwk"]) for row in stored}
    for key in keys:
        assert key["kty"] == "EC"
        assert key["crv"] == "P-256"
        assert key["alg"] == "ES256"
        assert key["use"] == "sig"
        assert not PRIVATE_MEMBERS & set(key), key
        assert key == by_kid[key["kid"]]
    directives = [item.strip() for item in response.headers["cache-control"].split(",")]
    assert "max-age=300" in directives
    assert "no-store" not in directives


async def test_jwks_cache_control_follows_the_setting(
    settings: Settings, db: asyncpg.Connection
) -> None:
    async with serve(settings, db, jwks_max_age=17) as rotor:
        response = await rotor.http.get("/.well-known/jwks.json")

    directives = [item.strip() for item in response.headers["cache-control"].split(",")]
    assert "max-age=17" in directives


@pytest.mark.parametrize(("alg", "kty"), [("EdDSA", "OKP"), ("RS256", "RSA")])
async def test_jwks_of_other_algorithms_hold_no_private_members(
    settings: Settings, db: asyncpg.Connection, alg: str, kty: str
) -> None:
    async with serve(settings, db, signing_alg=alg) as rotor:
        keys = (await rotor.http.get("/.well-known/jwks.json")).json()["keys"]

    assert len(keys) == 2
    for key in keys:
        assert (key["kty"], key["alg"], key["use"]) == (kty, alg, "sig")
        assert isinstance(key["kid"], str)
        assert not PRIVATE_MEMBERS & set(key), key


async def test_jwks_wrong_method_is_405_with_allow(rotor: Rotor) -> None:
    response = await rotor.http.post("/.well-known/jwks.json")

    assert response.status_code == 405
    assert "GET" in [item.strip() for item in response.headers["allow"].split(",")]


# --- RFC 8414 metadata ---------------------------------------------------------------------


async def test_metadata_names_the_endpoints_under_the_issuer(rotor: Rotor) -> None:
    response = await rotor.http.get("/.well-known/oauth-authorization-server")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["issuer"] == "http://localhost:8000"
    assert body["token_endpoint"] == "http://localhost:8000/token"
    assert body["introspection_endpoint"] == "http://localhost:8000/introspect"
    assert body["revocation_endpoint"] == "http://localhost:8000/revoke"
    assert body["jwks_uri"] == "http://localhost:8000/.well-known/jwks.json"
    assert sorted(body["grant_types_supported"]) == [
        "client_credentials",
        "password",
        "refresh_token",
    ]
    assert sorted(body["token_endpoint_auth_methods_supported"]) == [
        "client_secret_basic",
        "client_secret_post",
        "none",
    ]


METADATA_MEMBERS = {
    "issuer",
    "token_endpoint",
    "introspection_endpoint",
    "revocation_endpoint",
    "jwks_uri",
    "grant_types_supported",
    "response_types_supported",
    "token_endpoint_auth_methods_supported",
    "introspection_endpoint_auth_methods_supported",
    "revocation_endpoint_auth_methods_supported",
    "dpop_signing_alg_values_supported",
}


async def test_metadata_holds_only_what_rotor_does(rotor: Rotor) -> None:
    """CONTRACT 3.7: no OpenID Connect member, no *_auth_signing_alg_values_supported
    (no JWT client authentication), no member outside RFC 8414's registry, and no
    empty list but response_types_supported (REQUIRED by RFC 8414 section 2)."""
    body = (await rotor.http.get("/.well-known/oauth-authorization-server")).json()

    empty = sorted(name for name, value in body.items() if value == [])
    assert (set(body), empty, body["response_types_supported"]) == (
        METADATA_MEMBERS,
        ["response_types_supported"],
        [],
    )
    assert sorted(body["introspection_endpoint_auth_methods_supported"]) == [
        "client_secret_basic",
        "client_secret_post",
    ]
    assert sorted(body["revocation_endpoint_auth_methods_supported"]) == [
        "client_secret_basic",
        "client_secret_post",
        "none",
    ]
    # RFC 9449 section 5.1, CONTRACT 3.9: asymmetric algorithms only.
    assert body["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA", "RS256"]


async def test_metadata_issuer_is_byte_for_byte_and_urls_join_cleanly(
    settings: Settings, db: asyncpg.Connection
) -> None:
    issuer = "https://auth.example.com/tenant/"
    async with serve(settings, db, issuer=issuer) as rotor:
        body = (await rotor.http.get("/.well-known/oauth-authorization-server")).json()

    assert body["issuer"] == issuer
    assert body["token_endpoint"] == "https://auth.example.com/tenant/token"
    assert body["jwks_uri"] == "https://auth.example.com/tenant/.well-known/jwks.json"


# --- health --------------------------------------------------------------------------------


async def test_live_and_ready_answer_200(rotor: Rotor) -> None:
    live = await rotor.http.get("/health/live")
    ready = await rotor.http.get("/health/ready")

    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})


async def test_ready_is_503_when_the_schema_is_not_at_the_latest_migration(rotor: Rotor) -> None:
    await rotor.db.execute("UPDATE alembic_version SET version_num = 'old'")
    old_version = await rotor.http.get("/health/ready")
    await rotor.db.execute("DROP TABLE alembic_version")
    no_version = await rotor.http.get("/health/ready")
    live = await rotor.http.get("/health/live")

    for case, response in [("old", old_version), ("missing", no_version)]:
        assert response.status_code == 503, case
        assert response.json()["status"] == "unavailable", case
    assert live.status_code == 200


async def test_ready_is_503_when_the_database_cannot_be_reached(
    rotor: Rotor, server_url: str
) -> None:
    name = await rotor.db.fetchval("SELECT current_database()")
    admin = await asyncpg.connect(database_url_for(server_url, "postgres"))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
    finally:
        await admin.close()

    ready = await rotor.http.get("/health/ready")
    live = await rotor.http.get("/health/live")

    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    assert live.status_code == 200


# --- OpenAPI -------------------------------------------------------------------------------


async def test_served_openapi_equals_the_committed_document(rotor: Rotor) -> None:
    response = await rotor.http.get("/schema/openapi.json")

    assert response.status_code == 200
    assert response.json() == json.loads(OPENAPI.read_text())


async def test_a_served_worker_takes_its_start_up_objects_out_of_the_collectors_sight(
    settings: Settings,
) -> None:
    gc.unfreeze()
    try:
        async with AsyncTestClient(create_app(settings)):
            assert gc.get_freeze_count() == 0  # only workers of `rotor serve` freeze
        async with AsyncTestClient(create_app(settings, freeze_gc=True)) as http:
            assert gc.get_freeze_count() > 10_000
            assert (await http.get("/health/live")).status_code == 200
    finally:
        gc.unfreeze()
