"""Introspection (RFC 7662, CONTRACT 3.4) over HTTP.

Who may ask (an authenticated client allowed to introspect), what an active
access or refresh token reads as (the exact set of fields, each compared with
the token's own claims or the database), and every way a token stops being
active, each answered exactly `{"active": false}`. State is arranged through
HTTP or, for times and flags, by SQL on the test's own connection: nothing
here waits for time to pass. Access tokens with chosen claims are minted with
Rotor's real active key, so only the claim or state check can refuse them.
"""

from __future__ import annotations

import base64
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from joserfc import jwt
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.config import Settings
from service.db.pool import DatabaseUnavailable
from service.tokens.keys import KeyVault, SigningKey
from service.tokens.secretbox import SecretBox
from tests.helpers import RegisteredClient, Rotor, assert_error, assert_no_store, begin, claims_of

INACTIVE = {"active": False}
FORM = "application/x-www-form-urlencoded"
ACCESS_FIELDS = {
    "active",
    "token_type",
    "scope",
    "client_id",
    "sub",
    "aud",
    "iss",
    "exp",
    "iat",
    "jti",
    "sid",
    "username",
}


# --------------------------------------------------------------------------- helpers


async def introspect(
    rotor: Rotor, gateway: RegisteredClient, token: str, **extra: str
) -> httpx.Response:
    return await rotor.http.post(
        "/introspect", data={"token": token, **extra}, headers=gateway.auth
    )


Answer = tuple[int, Any, str | None, str | None]
INACTIVE_ANSWER: Answer = (200, INACTIVE, "no-store", "no-cache")
HINTS = ("access_token", "refresh_token", "foo")


async def answers(
    rotor: Rotor, gateway: RegisteredClient, tokens: dict[str, str], *, hinted: bool = False
) -> dict[str, Answer]:
    """Status, body and cache headers for each named token (the name is the hint if hinted)."""
    result: dict[str, Answer] = {}
    for name, token in tokens.items():
        extra = {"token_type_hint": name} if hinted else {}
        response = await introspect(rotor, gateway, token, **extra)
        result[name] = (
            response.status_code,
            response.json(),
            response.headers.get("cache-control"),
            response.headers.get("pragma"),
        )
    return result


def assert_answer(response: httpx.Response, expected: dict[str, Any]) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == expected
    assert_no_store(response)


async def assert_inactive(rotor: Rotor, gateway: RegisteredClient, token: str) -> None:
    assert_answer(await introspect(rotor, gateway, token), INACTIVE)


def assert_invalid_client(response: httpx.Response, description: str) -> None:
    """RFC 6749 5.2: 401 invalid_client with the Basic challenge."""
    assert_error(
        response, 401, "invalid_client", description, www_authenticate='Basic realm="rotor"'
    )


async def refresh(rotor: Rotor, client: RegisteredClient, token: str) -> httpx.Response:
    return await rotor.http.post("/refresh", json={"refresh_token": token}, headers=client.auth)


async def active_key(rotor: Rotor) -> SigningKey:
    box = SecretBox.for_purpose(rotor.settings.secret, b"signing-keys")
    state = await KeyVault(box).load(rotor.db, rotor.settings.access_token_ttl)
    return state.active


async def mint(rotor: Rotor, claims: dict[str, Any]) -> str:
    """An access token with chosen claims, signed with Rotor's real active key."""
    key = await active_key(rotor)
    header = {"alg": key.alg, "typ": "at+jwt", "kid": key.kid}
    return jwt.encode(header, claims, key.key, algorithms=[key.alg])


@asynccontextmanager
async def serve(settings: Settings, db: asyncpg.Connection, **changes: Any) -> AsyncIterator[Rotor]:
    changed = settings.with_overrides(**changes)
    async with AsyncTestClient(create_app(changed)) as http:
        yield Rotor(http, changed, db)


# --------------------------------------------------------------------------- the caller


async def test_no_credentials_is_invalid_client(rotor: Rotor) -> None:
    session = await begin(rotor)

    response = await rotor.http.post("/introspect", data={"token": session.access_token})

    assert_invalid_client(response, "client authentication required")


async def test_wrong_secret_is_invalid_client(rotor: Rotor) -> None:
    session = await begin(rotor)
    wrong = RegisteredClient(session.gateway.client_id, "not-the-secret")

    response = await introspect(rotor, wrong, session.access_token)

    assert_invalid_client(response, "client authentication failed")


async def test_unknown_client_is_invalid_client(rotor: Rotor) -> None:
    session = await begin(rotor)
    stranger = RegisteredClient(str(uuid.uuid4()), "whatever-secret")

    response = await introspect(rotor, stranger, session.access_token)

    assert_invalid_client(response, "client authentication failed")


async def test_client_not_allowed_to_introspect_is_invalid_client(rotor: Rotor) -> None:
    session = await begin(rotor)

    # The token's own client authenticates correctly but has no can_introspect.
    response = await introspect(rotor, session.client, session.access_token)

    assert_invalid_client(response, "this client may not introspect tokens")


async def test_public_client_cannot_introspect_without_a_secret(rotor: Rotor) -> None:
    session = await begin(rotor)
    public = await rotor.client(public=True, grants=[], scopes=[], introspect=True, name="pub")

    response = await rotor.http.post(
        "/introspect", data={"token": session.access_token, "client_id": public.client_id}
    )

    assert_invalid_client(response, "this client may not introspect tokens")


async def test_missing_token_is_invalid_request(rotor: Rotor) -> None:
    session = await begin(rotor)

    response = await rotor.http.post(
        "/introspect", data={"token_type_hint": "access_token"}, headers=session.gateway.auth
    )

    assert_error(response, 400, "invalid_request")


async def test_empty_token_counts_as_missing(rotor: Rotor) -> None:
    session = await begin(rotor)

    response = await rotor.http.post(
        "/introspect", data={"token": ""}, headers=session.gateway.auth
    )

    assert_error(response, 400, "invalid_request")


async def test_repeated_token_parameter_is_invalid_request(rotor: Rotor) -> None:
    session = await begin(rotor)
    body = f"token={session.access_token}&token={session.access_token}".encode()

    response = await rotor.http.post(
        "/introspect", content=body, headers={**session.gateway.auth, "content-type": FORM}
    )

    assert_error(response, 400, "invalid_request")


async def test_json_body_is_invalid_request(rotor: Rotor) -> None:
    session = await begin(rotor)

    response = await rotor.http.post(
        "/introspect", json={"token": session.access_token}, headers=session.gateway.auth
    )

    assert_error(response, 400, "invalid_request")


async def test_token_in_the_query_string_is_invalid_request(rotor: Rotor) -> None:
    session = await begin(rotor)

    response = await rotor.http.post(
        "/introspect",
        params={"token": session.access_token},
        data={"token": session.access_token},
        headers=session.gateway.auth,
    )

    assert_error(response, 400, "invalid_request")


# --------------------------------------------------------------------------- active tokens


async def test_active_access_token_of_a_password_login(rotor: Rotor) -> None:
    session = await begin(rotor)
    claims = (await rotor.verify(session.access_token)).claims

    response = await introspect(rotor, session.gateway, session.access_token)

    assert_answer(
        response,
        {
            "active": True,
            "token_type": "access_token",
            "scope": claims["scope"],
            "client_id": claims["client_id"],
            "sub": claims["sub"],
            "aud": claims["aud"],
            "iss": claims["iss"],
            "exp": claims["exp"],
            "iat": claims["iat"],
            "jti": claims["jti"],
            "sid": claims["sid"],
            "username": "alice",
        },
    )
    # ...and those claims are what the contract says they are.
    assert set(response.json()) == ACCESS_FIELDS
    assert claims["scope"] == "read write"
    assert claims["client_id"] == session.client.client_id
    assert claims["sub"] == session.user_id
    assert claims["aud"] == rotor.settings.issuer
    assert claims["iss"] == rotor.settings.issuer
    assert claims["sid"] == str(session.family_id)
    assert claims["exp"] == claims["iat"] + rotor.settings.access_token_ttl
    uuid.UUID(claims["jti"])


async def test_active_client_credentials_token_has_no_sid_and_no_username(rotor: Rotor) -> None:
    service = await rotor.client(grants=["client_credentials"], scopes=["read"], name="svc")
    gateway = await rotor.client(grants=[], scopes=[], introspect=True, name="gateway")
    issued = await rotor.token({"grant_type": "client_credentials"}, service.auth)
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    claims = claims_of(token)

    response = await introspect(rotor, gateway, token)

    assert_answer(
        response,
        {
            "active": True,
            "token_type": "access_token",
            "scope": "read",
            "client_id": service.client_id,
            "sub": service.client_id,
            "aud": rotor.settings.issuer,
            "iss": rotor.settings.issuer,
            "exp": claims["exp"],
            "iat": claims["iat"],
            "jti": claims["jti"],
        },
    )


async def _whole_second_times(rotor: Rotor, family_id: uuid.UUID) -> tuple[int, int]:
    """Make the live token's times whole seconds and return (iat, exp) as epochs."""
    row = await rotor.db.fetchrow(
        """
        UPDATE refresh_tokens
        SET issued_at = date_trunc('second', issued_at),
            expires_at = date_trunc('second', expires_at)
        WHERE family_id = $1 AND spent_at IS NULL
        RETURNING issued_at, expires_at
        """,
        family_id,
    )
    family_expires = await rotor.db.fetchval(
        "SELECT expires_at FROM token_families WHERE id = $1", family_id
    )
    exp = min(row["expires_at"], family_expires)
    return int(row["issued_at"].timestamp()), math.floor(exp.timestamp())


async def test_active_refresh_token(rotor: Rotor) -> None:
    session = await begin(rotor)
    iat, exp = await _whole_second_times(rotor, session.family_id)

    response = await introspect(rotor, session.gateway, session.refresh_token)

    assert_answer(
        response,
        {
            "active": True,
            "token_type": "refresh_token",
            "scope": "read write",
            "client_id": session.client.client_id,
            "sub": session.user_id,
            "sid": str(session.family_id),
            "username": "alice",
            "iat": iat,
            "exp": exp,
        },
    )
    # The idle window (7 days) ends before the family's absolute limit (30 days).
    assert exp - iat == rotor.settings.refresh_idle_ttl


async def test_refresh_token_times_are_truncated_never_rounded_up(rotor: Rotor) -> None:
    session = await begin(rotor)
    # 0.7 s past a whole second: rounding and truncation disagree.
    row = await rotor.db.fetchrow(
        """
        UPDATE refresh_tokens
        SET issued_at = date_trunc('second', now()) - interval '9.3 seconds',
            expires_at = date_trunc('second', now()) + interval '3600.7 seconds'
        WHERE family_id = $1 AND spent_at IS NULL
        RETURNING issued_at, expires_at
        """,
        session.family_id,
    )

    body = (await introspect(rotor, session.gateway, session.refresh_token)).json()

    # RFC 7662 2.2 / CONTRACT 2: the token is dead from expires_at on, so exp must
    # not name a later second; iat must not be in the future.
    assert (body["iat"], body["exp"]) == (
        math.floor(row["issued_at"].timestamp()),
        math.floor(row["expires_at"].timestamp()),
    )


async def test_rotation_spends_the_old_refresh_token_and_the_new_one_is_active(
    rotor: Rotor,
) -> None:
    session = await begin(rotor)
    rotated = await refresh(rotor, session.client, session.refresh_token)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    iat, exp = await _whole_second_times(rotor, session.family_id)

    await assert_inactive(rotor, session.gateway, session.refresh_token)
    assert_answer(
        await introspect(rotor, session.gateway, new["refresh_token"]),
        {
            "active": True,
            "token_type": "refresh_token",
            "scope": "read write",
            "client_id": session.client.client_id,
            "sub": session.user_id,
            "sid": str(session.family_id),
            "username": "alice",
            "iat": iat,
            "exp": exp,
        },
    )
    # Both access tokens belong to a live family: rotation does not end them.
    for token in (session.access_token, new["access_token"]):
        body = (await introspect(rotor, session.gateway, token)).json()
        assert (body["active"], body["sid"]) == (True, str(session.family_id))


@pytest.mark.parametrize("kind", ["access", "refresh"])
async def test_token_type_hint_changes_nothing(rotor: Rotor, kind: str) -> None:
    session = await begin(rotor)
    token = session.access_token if kind == "access" else session.refresh_token
    plain = (await introspect(rotor, session.gateway, token)).json()
    assert plain["active"] is True

    hinted = await answers(rotor, session.gateway, dict.fromkeys(HINTS, token), hinted=True)

    assert hinted == dict.fromkeys(HINTS, (200, plain, "no-store", "no-cache"))


@pytest.mark.parametrize("kind", ["access", "refresh"])
async def test_token_type_hint_does_not_revive_an_inactive_token(rotor: Rotor, kind: str) -> None:
    session = await begin(rotor)
    await rotor.db.execute("UPDATE token_families SET revoked_at = now(), revoked_reason = 'admin'")
    token = session.access_token if kind == "access" else session.refresh_token

    hinted = await answers(rotor, session.gateway, dict.fromkeys(HINTS, token), hinted=True)

    assert hinted == dict.fromkeys(HINTS, INACTIVE_ANSWER)


# --------------------------------------------------------------------------- inactive


async def test_garbage_is_inactive(rotor: Rotor) -> None:
    session = await begin(rotor)
    garbage = {
        "word": "garbage",
        "a.b.c": "a.b.c",
        "dots": "..",
        "five-segments": "a.b.c.d.e",
        "sql": "' OR 1=1 --",
        "long": "x" * 600,
        "empty-claims": "eyJhbGciOiJFUzI1NiJ9.e30.",
        "non-ascii": "\u00e9.\u00e9.\u00e9",
    }

    assert await answers(rotor, session.gateway, garbage) == dict.fromkeys(garbage, INACTIVE_ANSWER)


async def test_revoked_jti_is_inactive(rotor: Rotor) -> None:
    session = await begin(rotor)
    revoked = await rotor.http.post(
        "/revoke", data={"token": session.access_token}, headers=session.client.auth
    )
    assert revoked.status_code == 200, revoked.text

    await assert_inactive(rotor, session.gateway, session.access_token)
    # Revoking the access token ended that token only, not the session.
    body = (await introspect(rotor, session.gateway, session.refresh_token)).json()
    assert body["active"] is True


async def test_revoked_family_is_inactive(rotor: Rotor) -> None:
    session = await begin(rotor)
    await rotor.db.execute(
        "UPDATE token_families SET revoked_at = now(), revoked_reason = 'admin' WHERE id = $1",
        session.family_id,
    )

    await assert_inactive(rotor, session.gateway, session.access_token)
    await assert_inactive(rotor, session.gateway, session.refresh_token)


async def test_expired_family_is_inactive(rotor: Rotor) -> None:
    session = await begin(rotor)
    await rotor.db.execute(
        "UPDATE token_families SET expires_at = now() - interval '1 second' WHERE id = $1",
        session.family_id,
    )

    await assert_inactive(rotor, session.gateway, session.access_token)
    await assert_inactive(rotor, session.gateway, session.refresh_token)


async def test_family_whose_live_refresh_token_idled_out_is_inactive(rotor: Rotor) -> None:
    session = await begin(rotor)
    await rotor.db.execute(
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' "
        "WHERE spent_at IS NULL AND family_id = $1",
        session.family_id,
    )

    await assert_inactive(rotor, session.gateway, session.access_token)
    await assert_inactive(rotor, session.gateway, session.refresh_token)


async def test_disabled_user_is_inactive(rotor: Rotor) -> None:
    session = await begin(rotor)
    # Set the flag alone (the admin endpoint would also revoke the families):
    # introspection must check the user itself.
    await rotor.db.execute(
        "UPDATE users SET disabled = true WHERE id = $1", uuid.UUID(session.user_id)
    )

    await assert_inactive(rotor, session.gateway, session.access_token)
    await assert_inactive(rotor, session.gateway, session.refresh_token)


async def test_a_reminted_copy_of_a_live_token_is_active(rotor: Rotor) -> None:
    """The control for the minted-token tests: re-signing unchanged claims with the
    real key gives an active token, so a refusal below is the claim's doing."""
    session = await begin(rotor)
    claims = claims_of(session.access_token)

    response = await introspect(rotor, session.gateway, await mint(rotor, claims))

    assert response.status_code == 200
    assert response.json()["active"] is True
    assert response.json()["jti"] == claims["jti"]


async def test_expired_access_token_is_inactive(rotor: Rotor) -> None:
    session = await begin(rotor)
    now = int(time.time())
    tokens = {}
    for name, exp in {"exp-now": now, "exp-1s-ago": now - 1, "exp-1h-ago": now - 3600}.items():
        claims = {**claims_of(session.access_token), "exp": exp, "iat": exp - 300, "nbf": exp - 300}
        tokens[name] = await mint(rotor, claims)

    # CONTRACT 2: no leeway, expired from its exp second on.
    assert await answers(rotor, session.gateway, tokens) == dict.fromkeys(tokens, INACTIVE_ANSWER)


async def test_token_of_a_revoked_key_is_inactive_at_once(rotor: Rotor) -> None:
    session = await begin(rotor)
    service = await rotor.client(grants=["client_credentials"], name="svc")
    machine = (await rotor.token({"grant_type": "client_credentials"}, service.auth)).json()
    for token in (session.access_token, machine["access_token"]):
        assert (await introspect(rotor, session.gateway, token)).json()["active"] is True

    # Immediately, without waiting for the key ring to reload.
    await rotor.db.execute(
        "UPDATE signing_keys SET state = 'revoked', revoked_at = now() WHERE state = 'active'"
    )

    await assert_inactive(rotor, session.gateway, session.access_token)
    await assert_inactive(rotor, session.gateway, machine["access_token"])


async def test_token_of_a_key_rotated_elsewhere_is_active_before_the_ring_reloads(
    rotor: Rotor,
) -> None:
    admin = await rotor.client(grants=["client_credentials"], scopes=[], admin=True, name="ops")
    bearer = (await rotor.token({"grant_type": "client_credentials"}, admin.auth)).json()
    # Process A: started before the rotation, reloads its keys only every hour.
    async with serve(rotor.settings, rotor.db, key_refresh_interval=3600.0) as process_a:
        session = await begin(process_a)
        rotated = await rotor.http.post(
            "/admin/keys/rotate",
            json={"force": True},
            headers={"Authorization": f"Bearer {bearer['access_token']}"},
        )
        assert rotated.status_code == 200, rotated.text
        new_kid = rotated.json()["kid"]
        key = await active_key(process_a)
        assert key.kid == new_kid
        # What any up-to-date process now signs: the same claims, the new key.
        token = await mint(process_a, claims_of(session.access_token))
        published = {
            jwk["kid"]
            for jwk in (await process_a.http.get("/.well-known/jwks.json")).json()["keys"]
        }
        assert new_kid in published

        response = await introspect(process_a, session.gateway, token)

        assert response.status_code == 200
        assert response.json()["active"] is True


async def test_after_reuse_detection_every_token_of_the_family_is_inactive(rotor: Rotor) -> None:
    session = await begin(rotor)
    rotated = await refresh(rotor, session.client, session.refresh_token)
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()

    replay = await refresh(rotor, session.client, session.refresh_token)

    assert_error(replay, 400, "invalid_grant")
    reason = await rotor.db.fetchval(
        "SELECT revoked_reason FROM token_families WHERE id = $1", session.family_id
    )
    assert reason == "reuse_detected"
    for token in (session.access_token, second["access_token"], second["refresh_token"]):
        await assert_inactive(rotor, session.gateway, token)


async def test_other_families_stay_active_when_one_is_revoked(rotor: Rotor) -> None:
    session = await begin(rotor)
    other = (await rotor.login(session.client)).json()
    await rotor.db.execute(
        "UPDATE token_families SET revoked_at = now(), revoked_reason = 'admin' WHERE id = $1",
        session.family_id,
    )

    await assert_inactive(rotor, session.gateway, session.access_token)
    for token in (other["access_token"], other["refresh_token"]):
        assert (await introspect(rotor, session.gateway, token)).json()["active"] is True


# --------------------------------------------------------------------------- no database


class _Unreachable:
    """A database that cannot be asked."""

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        raise DatabaseUnavailable("test: unreachable")
        yield  # pragma: no cover

    transaction = connection


def assert_unavailable(response: httpx.Response) -> None:
    assert_error(response, 503, "temporarily_unavailable")
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    assert int(retry_after) >= 1


@pytest.mark.parametrize("kind", ["access", "refresh", "garbage"])
async def test_unreachable_database_is_503_never_a_guess(
    rotor: Rotor, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    session = await begin(rotor)
    token = {"access": session.access_token, "refresh": session.refresh_token}.get(kind, kind)
    services = rotor.http.app.state.services
    unreachable = _Unreachable()
    monkeypatch.setattr(services.database, "connection", unreachable.connection)
    monkeypatch.setattr(services.database, "transaction", unreachable.transaction)

    assert_unavailable(await introspect(rotor, session.gateway, token))


@pytest.mark.parametrize(
    ("table", "which"),
    [("revoked_access_tokens", "access"), ("refresh_tokens", "refresh")],
)
async def test_database_that_does_not_answer_in_time_is_503_then_recovers(
    settings: Settings, db: asyncpg.Connection, table: str, which: str
) -> None:
    async with serve(settings, db, db_timeout=1.0) as rotor:
        session = await begin(rotor)
        token = session.access_token if which == "access" else session.refresh_token
        # Hold a lock that the live-state read of this token must wait for;
        # client authentication (the clients table) still answers.
        transaction = db.transaction()
        await transaction.start()
        try:
            await db.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            response = await introspect(rotor, session.gateway, token)
        finally:
            await transaction.rollback()

        assert_unavailable(response)
        # The service recovers by itself once the database answers again.
        recovered = await introspect(rotor, session.gateway, token)
        assert recovered.status_code == 200
        assert recovered.json()["active"] is True


async def test_a_remembered_verification_never_hides_revocation_or_expiry(rotor: Rotor) -> None:
    """Verified tokens are remembered (gateways ask again and again); the live
    state is still read every time, and expiry still applies."""
    client = await rotor.client()
    gateway = await rotor.client(grants=[], introspect=True)
    await rotor.user()
    first = (await rotor.login(client)).json()["access_token"]
    second = (await rotor.login(client)).json()["access_token"]

    async def active(token: str) -> bool:
        response = await rotor.http.post("/introspect", data={"token": token}, headers=gateway.auth)
        assert response.status_code == 200
        return bool(response.json()["active"])

    assert [await active(first), await active(first), await active(second)] == [True] * 3
    verifier = rotor.http.app.state.services.verifier
    claims = verifier.verify(second).claims
    assert verifier.verify(second, now=claims["exp"] - 1) is not None
    assert verifier.verify(second, now=claims["exp"]) is None
    revoked = await rotor.http.post("/revoke", data={"token": first}, headers=client.auth)
    assert revoked.status_code == 200
    kid = json.loads(base64.urlsafe_b64decode(second.split(".")[0] + "=="))["kid"]
    await rotor.db.execute("UPDATE signing_keys SET state = 'revoked' WHERE kid = $1", kid)
    assert [await active(first), await active(second)] == [False, False]
