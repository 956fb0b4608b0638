"""Revocation (RFC 7009, CONTRACT 3.5) over HTTP.

A refresh token, live or spent, ends its family (reason `logout`, one
`family_revoked` event); an access token ends only itself (its `jti`); unknown
or invalid tokens are a 200 that changes nothing; another client's token is
`400 unauthorized_client` and changes nothing. Outcomes are checked on the
wire (status, body, no-store headers) and in the database.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from joserfc import jwt

from service.tokens.keys import KeyVault
from service.tokens.secretbox import SecretBox
from tests.helpers import RegisteredClient, Rotor, assert_error, assert_no_store, begin

FORM = "application/x-www-form-urlencoded"


# --------------------------------------------------------------------------- helpers


async def revoke(
    rotor: Rotor, client: RegisteredClient | None, token: str, **extra: str
) -> httpx.Response:
    data = {"token": token, **extra}
    if client is None:
        return await rotor.http.post("/revoke", data=data)
    if client.client_secret is None:
        return await rotor.http.post("/revoke", data={**data, "client_id": client.client_id})
    return await rotor.http.post("/revoke", data=data, headers=client.auth)


async def refresh(rotor: Rotor, client: RegisteredClient, token: str) -> httpx.Response:
    if client.client_secret is None:
        return await rotor.http.post(
            "/refresh", json={"refresh_token": token, "client_id": client.client_id}
        )
    return await rotor.http.post("/refresh", json={"refresh_token": token}, headers=client.auth)


async def introspect(rotor: Rotor, gateway: RegisteredClient, token: str) -> dict[str, Any]:
    response = await rotor.http.post("/introspect", data={"token": token}, headers=gateway.auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_revoked_ok(response: httpx.Response) -> None:
    """RFC 7009 2.2: 200, and the body is empty."""
    assert response.status_code == 200, response.text
    assert response.content == b""
    assert_no_store(response)


async def family_state(rotor: Rotor, family_id: uuid.UUID) -> tuple[bool, str | None]:
    row = await rotor.db.fetchrow(
        "SELECT revoked_at IS NOT NULL AS revoked, revoked_reason FROM token_families "
        "WHERE id = $1",
        family_id,
    )
    return row["revoked"], row["revoked_reason"]


async def snapshot(rotor: Rotor) -> dict[str, Any]:
    """Everything a revocation could change."""
    return {
        "families": [
            tuple(row)
            for row in await rotor.db.fetch(
                "SELECT id, revoked_at, revoked_reason FROM token_families ORDER BY id"
            )
        ],
        "tokens": [
            tuple(row)
            for row in await rotor.db.fetch(
                "SELECT token_hash, spent_at, expires_at FROM refresh_tokens ORDER BY token_hash"
            )
        ],
        "revoked_jtis": [
            tuple(row) for row in await rotor.db.fetch("SELECT * FROM revoked_access_tokens")
        ],
        "events": [
            tuple(row) for row in await rotor.db.fetch("SELECT id, type FROM security_events")
        ],
    }


async def revoked_events(rotor: Rotor) -> list[dict[str, Any]]:
    rows = await rotor.db.fetch(
        "SELECT user_id, client_id, family_id, detail FROM security_events "
        "WHERE type = 'family_revoked' ORDER BY seq"
    )
    return [
        {
            "user_id": str(row["user_id"]),
            "client_id": str(row["client_id"]),
            "family_id": row["family_id"],
            "detail": json.loads(row["detail"]),
        }
        for row in rows
    ]


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=="))
    return decoded


# --------------------------------------------------------------------------- refresh tokens


async def test_live_refresh_token_revokes_its_family_for_logout(rotor: Rotor) -> None:
    session = await begin(rotor)

    response = await revoke(rotor, session.client, session.refresh_token)

    assert_revoked_ok(response)
    assert await family_state(rotor, session.family_id) == (True, "logout")
    assert await revoked_events(rotor) == [
        {
            "user_id": session.user_id,
            "client_id": session.client.client_id,
            "family_id": session.family_id,
            "detail": {"reason": "logout"},
        }
    ]
    # The session is over: the refresh token no longer refreshes, the access token is inactive.
    assert_error(await refresh(rotor, session.client, session.refresh_token), 400, "invalid_grant")
    assert await introspect(rotor, session.gateway, session.access_token) == {"active": False}
    assert await introspect(rotor, session.gateway, session.refresh_token) == {"active": False}


async def test_spent_refresh_token_revokes_its_family_for_logout(rotor: Rotor) -> None:
    session = await begin(rotor)
    rotated = await refresh(rotor, session.client, session.refresh_token)
    assert rotated.status_code == 200, rotated.text
    successor = rotated.json()["refresh_token"]

    response = await revoke(rotor, session.client, session.refresh_token)

    assert_revoked_ok(response)
    # A logout, not a reuse: no reuse_detected event, the reason is logout.
    assert await family_state(rotor, session.family_id) == (True, "logout")
    reuse_events = await rotor.db.fetchval(
        "SELECT count(*) FROM security_events WHERE type = 'reuse_detected'"
    )
    assert reuse_events == 0
    assert [event["detail"] for event in await revoked_events(rotor)] == [{"reason": "logout"}]
    assert_error(await refresh(rotor, session.client, successor), 400, "invalid_grant")


async def test_refresh_token_of_an_already_revoked_family_keeps_the_first_reason(
    rotor: Rotor,
) -> None:
    session = await begin(rotor)
    await rotor.db.execute(
        "UPDATE token_families SET revoked_at = now(), revoked_reason = 'admin' WHERE id = $1",
        session.family_id,
    )
    before = await snapshot(rotor)

    response = await revoke(rotor, session.client, session.refresh_token)

    assert_revoked_ok(response)
    assert await snapshot(rotor) == before


async def test_revoking_a_refresh_token_twice_is_200_both_times_and_one_event(
    rotor: Rotor,
) -> None:
    session = await begin(rotor)

    first = await revoke(rotor, session.client, session.refresh_token)
    revoked_at = await rotor.db.fetchval(
        "SELECT revoked_at FROM token_families WHERE id = $1", session.family_id
    )
    second = await revoke(rotor, session.client, session.refresh_token)

    assert_revoked_ok(first)
    assert_revoked_ok(second)
    assert await family_state(rotor, session.family_id) == (True, "logout")
    assert (
        await rotor.db.fetchval(
            "SELECT revoked_at FROM token_families WHERE id = $1", session.family_id
        )
        == revoked_at
    )
    assert len(await revoked_events(rotor)) == 1


async def test_revoking_one_family_leaves_the_users_other_sessions(rotor: Rotor) -> None:
    session = await begin(rotor)
    other = (await rotor.login(session.client)).json()

    assert_revoked_ok(await revoke(rotor, session.client, session.refresh_token))

    assert (
        await rotor.db.fetchval("SELECT count(*) FROM token_families WHERE revoked_at IS NULL") == 1
    )
    assert (await refresh(rotor, session.client, other["refresh_token"])).status_code == 200


@pytest.mark.parametrize("hint", ["access_token", "refresh_token", "foo"])
async def test_hint_changes_nothing_for_a_refresh_token(rotor: Rotor, hint: str) -> None:
    session = await begin(rotor)

    response = await revoke(rotor, session.client, session.refresh_token, token_type_hint=hint)

    assert_revoked_ok(response)
    assert await family_state(rotor, session.family_id) == (True, "logout")


# --------------------------------------------------------------------------- access tokens


async def test_access_token_revokes_its_jti_only(rotor: Rotor) -> None:
    session = await begin(rotor)
    claims = claims_of(session.access_token)

    response = await revoke(rotor, session.client, session.access_token)

    assert_revoked_ok(response)
    rows = await rotor.db.fetch("SELECT jti, expires_at FROM revoked_access_tokens")
    assert [(row["jti"], row["expires_at"]) for row in rows] == [
        (uuid.UUID(claims["jti"]), datetime.fromtimestamp(claims["exp"], UTC))
    ]
    assert await introspect(rotor, session.gateway, session.access_token) == {"active": False}
    # Revoking an access token does not end the session.
    assert await family_state(rotor, session.family_id) == (False, None)
    assert await revoked_events(rotor) == []
    rotated = await refresh(rotor, session.client, session.refresh_token)
    assert rotated.status_code == 200, rotated.text
    assert (await introspect(rotor, session.gateway, rotated.json()["access_token"]))[
        "active"
    ] is True


async def test_client_credentials_access_token_is_revoked(rotor: Rotor) -> None:
    service = await rotor.client(grants=["client_credentials"], name="svc")
    gateway = await rotor.client(grants=[], scopes=[], introspect=True, name="gateway")
    token = (await rotor.token({"grant_type": "client_credentials"}, service.auth)).json()[
        "access_token"
    ]

    assert_revoked_ok(await revoke(rotor, service, token))

    assert await rotor.db.fetchval("SELECT jti FROM revoked_access_tokens") == uuid.UUID(
        claims_of(token)["jti"]
    )
    assert await introspect(rotor, gateway, token) == {"active": False}


async def test_revoking_an_access_token_twice_is_200_both_times_and_one_row(
    rotor: Rotor,
) -> None:
    session = await begin(rotor)

    first = await revoke(rotor, session.client, session.access_token)
    second = await revoke(rotor, session.client, session.access_token, token_type_hint="foo")

    assert_revoked_ok(first)
    assert_revoked_ok(second)
    assert await rotor.db.fetchval("SELECT count(*) FROM revoked_access_tokens") == 1


async def test_expired_access_token_is_200_and_nothing_is_recorded(rotor: Rotor) -> None:
    session = await begin(rotor)
    box = SecretBox.for_purpose(rotor.settings.secret, b"signing-keys")
    key = (await KeyVault(box).load(rotor.db, rotor.settings.access_token_ttl)).active
    now = int(time.time())
    claims = {**claims_of(session.access_token), "exp": now - 1, "iat": now - 301}
    expired = jwt.encode(
        {"alg": key.alg, "typ": "at+jwt", "kid": key.kid}, claims, key.key, algorithms=[key.alg]
    )
    before = await snapshot(rotor)

    response = await revoke(rotor, session.client, expired)

    assert_revoked_ok(response)
    assert await snapshot(rotor) == before


# --------------------------------------------------------------------------- unknown, invalid


async def test_unknown_or_invalid_token_is_200_and_changes_nothing(rotor: Rotor) -> None:
    session = await begin(rotor)
    before = await snapshot(rotor)
    none_header = b64u(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    payload = session.access_token.split(".")[1]
    tokens = {
        "unknown": secrets.token_urlsafe(32),
        "word": "garbage",
        "a.b.c": "a.b.c",
        "long": "x" * 600,
        "sql": "' OR 1=1 --",
        "alg-none": f"{none_header}.{payload}.",
    }

    answers = {}
    for name, token in tokens.items():
        response = await revoke(rotor, session.client, token)
        answers[name] = (response.status_code, response.content, response.headers["cache-control"])

    assert answers == dict.fromkeys(tokens, (200, b"", "no-store"))
    assert await snapshot(rotor) == before


async def test_deeply_nested_header_is_200_and_changes_nothing(rotor: Rotor) -> None:
    session = await begin(rotor)
    before = await snapshot(rotor)
    header = b'{"alg":"ES256","typ":"at+jwt","x":' + b"[" * 1000 + b"]" * 1000 + b"}"
    token = f"{b64u(header)}.{session.access_token.split('.')[1]}.{b64u(b's' * 64)}"

    response = await revoke(rotor, session.client, token)

    assert_revoked_ok(response)
    assert await snapshot(rotor) == before


# --------------------------------------------------------------------------- another client's


async def test_another_clients_refresh_token_is_unauthorized_client(rotor: Rotor) -> None:
    session = await begin(rotor)
    intruder = await rotor.client(name="intruder")
    before = await snapshot(rotor)

    response = await revoke(rotor, intruder, session.refresh_token)

    assert_error(response, 400, "unauthorized_client")
    assert await snapshot(rotor) == before
    # The owner's session goes on.
    assert (await refresh(rotor, session.client, session.refresh_token)).status_code == 200


async def test_another_clients_spent_refresh_token_is_unauthorized_client(rotor: Rotor) -> None:
    session = await begin(rotor)
    intruder = await rotor.client(name="intruder")
    assert (await refresh(rotor, session.client, session.refresh_token)).status_code == 200
    before = await snapshot(rotor)

    response = await revoke(rotor, intruder, session.refresh_token)

    assert_error(response, 400, "unauthorized_client")
    assert await snapshot(rotor) == before


async def test_another_clients_access_token_is_unauthorized_client(rotor: Rotor) -> None:
    session = await begin(rotor)
    intruder = await rotor.client(name="intruder")
    before = await snapshot(rotor)

    response = await revoke(rotor, intruder, session.access_token)

    assert_error(response, 400, "unauthorized_client")
    assert await snapshot(rotor) == before
    assert (await introspect(rotor, session.gateway, session.access_token))["active"] is True


async def test_public_client_cannot_revoke_a_confidential_clients_token(rotor: Rotor) -> None:
    session = await begin(rotor)
    public = await rotor.client(public=True, grants=["password", "refresh_token"], name="spa")
    before = await snapshot(rotor)

    response = await revoke(rotor, public, session.refresh_token)

    assert_error(response, 400, "unauthorized_client")
    assert await snapshot(rotor) == before


# --------------------------------------------------------------------------- public clients


async def test_public_client_revokes_its_own_tokens_with_client_id_only(rotor: Rotor) -> None:
    public = await rotor.client(public=True, grants=["password", "refresh_token"], name="spa")
    session = await begin(rotor, client=public)

    by_access = await revoke(rotor, public, session.access_token)
    by_refresh = await revoke(rotor, public, session.refresh_token)

    assert_revoked_ok(by_access)
    assert_revoked_ok(by_refresh)
    assert await rotor.db.fetchval("SELECT jti FROM revoked_access_tokens") == uuid.UUID(
        claims_of(session.access_token)["jti"]
    )
    assert await family_state(rotor, session.family_id) == (True, "logout")


# --------------------------------------------------------------------------- the request


async def test_no_credentials_is_invalid_client(rotor: Rotor) -> None:
    session = await begin(rotor)
    before = await snapshot(rotor)

    response = await revoke(rotor, None, session.refresh_token)

    assert_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic")
    assert await snapshot(rotor) == before


async def test_wrong_secret_is_invalid_client(rotor: Rotor) -> None:
    session = await begin(rotor)
    wrong = RegisteredClient(session.client.client_id, "not-the-secret")
    before = await snapshot(rotor)

    response = await revoke(rotor, wrong, session.refresh_token)

    assert_error(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic")
    assert await snapshot(rotor) == before


async def test_missing_token_is_invalid_request(rotor: Rotor) -> None:
    session = await begin(rotor)

    response = await rotor.http.post(
        "/revoke", data={"token_type_hint": "refresh_token"}, headers=session.client.auth
    )

    assert_error(response, 400, "invalid_request")


async def test_repeated_token_is_invalid_request_and_changes_nothing(rotor: Rotor) -> None:
    session = await begin(rotor)
    before = await snapshot(rotor)
    body = f"token={session.refresh_token}&token={session.refresh_token}".encode()

    response = await rotor.http.post(
        "/revoke", content=body, headers={**session.client.auth, "content-type": FORM}
    )

    assert_error(response, 400, "invalid_request")
    assert await snapshot(rotor) == before


async def test_json_body_is_invalid_request_and_changes_nothing(rotor: Rotor) -> None:
    session = await begin(rotor)
    before = await snapshot(rotor)

    response = await rotor.http.post(
        "/revoke", json={"token": session.refresh_token}, headers=session.client.auth
    )

    assert_error(response, 400, "invalid_request")
    assert await snapshot(rotor) == before
