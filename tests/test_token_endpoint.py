"""POST /token over HTTP (CONTRACT 2 and 3.2): what it issues and what it refuses.

Where a test is parametrized over variants of a request, each variant is
expected to get the same exact answer, and the test id names the variant.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import jwt as pyjwt
import pytest
from argon2 import PasswordHasher as Argon2
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey, KeySet
from jwt import PyJWKSet
from litestar import Request
from litestar.exceptions.http_exceptions import ClientException, RequestEntityTooLarge
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.config import Settings
from service.http.raw import read_body
from tests.helpers import PASSWORD, Rotor, assert_error, assert_no_store

FORM = "application/x-www-form-urlencoded"
INVALID_CREDENTIALS = {
    "error": "invalid_grant",
    "error_description": "invalid username or password",
}
LOGIN = [("grant_type", "password"), ("username", "alice"), ("password", PASSWORD)]


@asynccontextmanager
async def serve(
    settings: Settings, db: asyncpg.Connection, **overrides: Any
) -> AsyncIterator[Rotor]:
    """Rotor built from the test's settings with some of them changed."""
    changed = settings.with_overrides(**overrides)
    async with AsyncTestClient(create_app(changed)) as http:
        yield Rotor(http, changed, db)


async def active_kid(db: asyncpg.Connection) -> str:
    kid: str = await db.fetchval("SELECT kid FROM signing_keys WHERE state = 'active'")
    return kid


async def count(db: asyncpg.Connection, table: str) -> int:
    value: int = await db.fetchval(f"SELECT count(*) FROM {table}")
    return value


async def post_raw(
    rotor: Rotor, body: bytes, headers: dict[str, str], path: str = "/token"
) -> httpx.Response:
    return await rotor.http.post(path, content=body, headers=headers)


async def post_pairs(
    rotor: Rotor, pairs: list[tuple[str, str]], headers: dict[str, str]
) -> httpx.Response:
    return await post_raw(rotor, urlencode(pairs).encode(), {**headers, "content-type": FORM})


# --- password grant: the answer ------------------------------------------------------------


async def test_password_grant_answers_a_token_verifiable_with_the_jwks_alone(
    rotor: Rotor,
) -> None:
    client = await rotor.client()
    user_id = await rotor.user()
    before = int(time.time())

    response = await rotor.login(client)

    assert response.status_code == 200, response.text
    assert_no_store(response)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == rotor.settings.access_token_ttl
    assert body["scope"] == "read write"
    token = await rotor.verify(body["access_token"])
    kid = await active_kid(rotor.db)
    assert token.header == {"typ": "at+jwt", "alg": "ES256", "kid": kid}
    assert kid != await rotor.db.fetchval("SELECT kid FROM signing_keys WHERE state = 'next'")
    claims = token.claims
    assert set(claims) == {
        "iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope", "sid",
    }  # fmt: skip
    assert claims["iss"] == rotor.settings.issuer
    assert claims["sub"] == user_id
    assert claims["aud"] == "http://localhost:8000"  # one audience: a string
    assert before <= claims["iat"] <= int(time.time())
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] == claims["iat"] + rotor.settings.access_token_ttl
    assert claims["client_id"] == client.client_id
    assert claims["scope"] == "read write"
    assert str(uuid.UUID(claims["jti"])) == claims["jti"]
    # A standard JOSE library validates the registered claims as well.
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": rotor.settings.issuer},
        aud={"essential": True, "value": "http://localhost:8000"},
        sub={"essential": True, "value": user_id},
    ).validate(claims)


async def test_token_signed_by_another_key_does_not_verify(rotor: Rotor) -> None:
    # The JWKS verification the other tests rely on is real: a foreign key
    # under the active kid is refused.
    client = await rotor.client()
    await rotor.user()
    token = (await rotor.login(client)).json()["access_token"]
    header = jwt.decode(token, await rotor.jwks(), algorithms=["ES256"]).header

    forged = jwt.encode(header, {"sub": "mallory"}, ECKey.generate_key("P-256"), ["ES256"])

    with pytest.raises(BadSignatureError):
        await rotor.verify(forged)


async def test_jti_sid_and_refresh_token_are_unique_across_logins(rotor: Rotor) -> None:
    client = await rotor.client()
    await rotor.user()

    first = (await rotor.login(client)).json()
    second = (await rotor.login(client)).json()

    first_claims = (await rotor.verify(first["access_token"])).claims
    second_claims = (await rotor.verify(second["access_token"])).claims
    assert first_claims["jti"] != second_claims["jti"]
    assert first_claims["sid"] != second_claims["sid"]
    assert await count(rotor.db, "token_families") == 2
    assert first["refresh_token"] != second["refresh_token"]
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    for refresh in (first["refresh_token"], second["refresh_token"]):
        assert set(refresh) <= alphabet  # opaque and URL-safe
        assert len(refresh) >= 43  # 256 bits in unpadded base64url


async def test_sid_is_a_new_family_holding_only_the_refresh_tokens_hash(rotor: Rotor) -> None:
    client = await rotor.client()
    user_id = await rotor.user()

    body = (await rotor.login(client, scope="read")).json()
    sid = uuid.UUID((await rotor.verify(body["access_token"])).claims["sid"])

    family = await rotor.db.fetchrow("SELECT * FROM token_families WHERE id = $1", sid)
    assert family is not None
    assert str(family["user_id"]) == user_id
    assert str(family["client_id"]) == client.client_id
    assert family["scope"] == "read"
    assert family["revoked_at"] is None
    rows = await rotor.db.fetch("SELECT * FROM refresh_tokens WHERE family_id = $1", sid)
    assert len(rows) == 1
    row = rows[0]
    assert row["generation"] == 1
    assert row["spent_at"] is None
    assert row["parent_hash"] is None
    refresh = body["refresh_token"]
    assert row["token_hash"] == hashlib.sha256(refresh.encode()).digest()
    # Nowhere in the store in plain text.
    dump = await rotor.db.fetchval(
        "SELECT string_agg(t::text, '|') FROM (SELECT * FROM refresh_tokens) t"
    )
    dump += await rotor.db.fetchval(
        "SELECT string_agg(f::text, '|') FROM (SELECT * FROM token_families) f"
    )
    assert refresh not in dump
    assert refresh.encode().hex() not in dump


async def test_refresh_token_grant_at_token_rotates(rotor: Rotor) -> None:
    client = await rotor.client()
    await rotor.user()
    login = (await rotor.login(client)).json()
    sid = (await rotor.verify(login["access_token"])).claims["sid"]

    response = await rotor.token(
        {"grant_type": "refresh_token", "refresh_token": login["refresh_token"]}, client.auth
    )

    assert response.status_code == 200, response.text
    assert_no_store(response)
    body = response.json()
    assert body["refresh_token"] != login["refresh_token"]
    assert (await rotor.verify(body["access_token"])).claims["sid"] == sid


async def test_several_audiences_are_a_list_in_configured_order(
    settings: Settings, db: asyncpg.Connection
) -> None:
    audience = ("https://api.example.com", "https://gateway.example.com", "urn:a")
    async with serve(settings, db, audience=audience) as rotor:
        client = await rotor.client()
        await rotor.user()
        token = (await rotor.login(client)).json()["access_token"]
        claims = (await rotor.verify(token)).claims

    assert claims["aud"] == list(audience)


async def test_issuer_and_ttl_are_taken_from_settings_exactly(
    settings: Settings, db: asyncpg.Connection
) -> None:
    issuer = "https://Auth.Example.com:8443/tenant/"
    async with serve(settings, db, issuer=issuer, access_token_ttl=42) as rotor:
        client = await rotor.client()
        await rotor.user()
        body = (await rotor.login(client)).json()
        claims = (await rotor.verify(body["access_token"])).claims

    assert claims["iss"] == issuer
    assert body["expires_in"] == 42
    assert claims["exp"] == claims["iat"] + 42


@pytest.mark.parametrize(("alg", "kty"), [("EdDSA", "OKP"), ("RS256", "RSA")])
async def test_other_signing_algorithms_verify_with_the_jwks(
    settings: Settings, db: asyncpg.Connection, alg: str, kty: str
) -> None:
    async with serve(settings, db, signing_alg=alg) as rotor:
        client = await rotor.client()
        await rotor.user()
        token = (await rotor.login(client)).json()["access_token"]
        jwks = (await rotor.http.get("/.well-known/jwks.json")).json()
        verified = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=[alg])
        kid = await active_kid(db)

    assert verified.header == {"typ": "at+jwt", "alg": alg, "kid": kid}
    assert [key["kty"] for key in jwks["keys"]] == [kty, kty]
    assert [key["alg"] for key in jwks["keys"]] == [alg, alg]
    assert verified.claims["iss"] == settings.issuer
    assert verified.claims["exp"] == verified.claims["iat"] + settings.access_token_ttl


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
async def test_access_tokens_verify_with_another_jose_library(
    settings: Settings, db: asyncpg.Connection, alg: str
) -> None:
    """Rotor assembles the compact form itself (service/tokens/access.py): PyJWT,
    which shares no code with joserfc, verifies it from the JWKS alone, after a
    login and after a rotation, and finds every claim of CONTRACT section 2."""
    async with serve(settings, db, signing_alg=alg) as rotor:
        client = await rotor.client()
        await rotor.user()
        login = (await rotor.login(client)).json()
        refreshed = (
            await rotor.http.post(
                "/refresh", json={"refresh_token": login["refresh_token"]}, headers=client.auth
            )
        ).json()
        jwks = PyJWKSet.from_dict((await rotor.http.get("/.well-known/jwks.json")).json())

    for token in (login["access_token"], refreshed["access_token"]):
        header = pyjwt.get_unverified_header(token)
        claims = pyjwt.decode(
            token,
            jwks[header["kid"]].key,
            algorithms=[alg],
            audience=settings.audience[0],
            issuer=settings.issuer,
            options={"require": ["exp", "iat", "nbf", "jti", "sub", "aud", "iss"]},
        )
        assert header == {"typ": "at+jwt", "alg": alg, "kid": header["kid"]}
        assert set(claims) == {
            "iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope", "sid"
        }  # fmt: skip
        assert claims["client_id"] == client.client_id
        assert claims["exp"] == claims["iat"] + settings.access_token_ttl
        tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        with pytest.raises(pyjwt.InvalidSignatureError):
            pyjwt.decode(
                tampered, jwks[header["kid"]].key, algorithms=[alg], audience=claims["aud"]
            )


# --- client_credentials --------------------------------------------------------------------


async def test_client_credentials_issue_an_access_token_only(rotor: Rotor) -> None:
    client = await rotor.client()

    response = await rotor.token({"grant_type": "client_credentials"}, client.auth)

    assert response.status_code == 200, response.text
    assert_no_store(response)
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == rotor.settings.access_token_ttl
    assert body["scope"] == "read write"
    token = await rotor.verify(body["access_token"])
    assert token.header == {"typ": "at+jwt", "alg": "ES256", "kid": await active_kid(rotor.db)}
    assert token.claims["sub"] == client.client_id
    assert token.claims["client_id"] == client.client_id
    assert token.claims["iss"] == rotor.settings.issuer
    assert token.claims["exp"] == token.claims["iat"] + rotor.settings.access_token_ttl
    assert "sid" not in token.claims
    assert await count(rotor.db, "token_families") == 0
    assert await count(rotor.db, "refresh_tokens") == 0


async def test_client_credentials_with_narrower_scope(rotor: Rotor) -> None:
    client = await rotor.client()

    response = await rotor.token(
        {"grant_type": "client_credentials", "scope": "write"}, client.auth
    )

    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "write"
    assert (await rotor.verify(response.json()["access_token"])).claims["scope"] == "write"


async def test_client_without_scopes_gets_an_empty_scope(rotor: Rotor) -> None:
    client = await rotor.client(scopes=[])

    response = await rotor.token({"grant_type": "client_credentials"}, client.auth)

    assert response.status_code == 200, response.text
    assert response.json()["scope"] == ""
    assert (await rotor.verify(response.json()["access_token"])).claims["scope"] == ""


# --- scope ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", [None, ""], ids=["omitted", "empty"])
async def test_scope_omitted_or_empty_grants_all_the_clients_scopes(
    rotor: Rotor, scope: str | None
) -> None:
    client = await rotor.client(scopes=["read", "write", "profile"])
    await rotor.user()

    response = await rotor.login(client, **({} if scope is None else {"scope": scope}))

    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "read write profile"
    claims = (await rotor.verify(response.json()["access_token"])).claims
    assert claims["scope"] == "read write profile"
    scopes = await rotor.db.fetch("SELECT scope FROM token_families")
    assert [row["scope"] for row in scopes] == ["read write profile"]


async def test_narrower_scope_is_honoured(rotor: Rotor) -> None:
    client = await rotor.client(scopes=["read", "write", "profile"])
    await rotor.user()

    response = await rotor.login(client, scope="profile read")

    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "profile read"
    claims = (await rotor.verify(response.json()["access_token"])).claims
    assert claims["scope"] == "profile read"
    assert await rotor.db.fetchval("SELECT scope FROM token_families") == "profile read"


@pytest.mark.parametrize("scope", ["admin", "read admin", "READ", "rea", "read write admin"])
async def test_scope_outside_the_clients_scopes_is_invalid_scope(rotor: Rotor, scope: str) -> None:
    client = await rotor.client()
    await rotor.user()

    password = await rotor.login(client, scope=scope)
    machine = await rotor.token({"grant_type": "client_credentials", "scope": scope}, client.auth)
    assert_error(password, 400, "invalid_scope", case="password")
    assert_error(machine, 400, "invalid_scope", case="client_credentials")

    assert await count(rotor.db, "token_families") == 0
    assert await count(rotor.db, "login_failures") == 0


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param('read"', id="double-quote"),
        pytest.param("re\\ad", id="backslash"),
        pytest.param("read  write", id="two-spaces"),
        pytest.param(" read", id="leading-space"),
        pytest.param("read ", id="trailing-space"),
        pytest.param("read\twrite", id="tab"),
        pytest.param("lecture\u00e9", id="non-ascii"),
        pytest.param("read\x7f", id="delete"),
    ],
)
async def test_malformed_scope_is_invalid_scope(rotor: Rotor, scope: str) -> None:
    # Even scope values stored on the client do not make malformed syntax valid.
    client = await rotor.client(scopes=["read", "write", 'read"', "lecture\u00e9"])

    response = await rotor.token({"grant_type": "client_credentials", "scope": scope}, client.auth)
    assert_error(response, 400, "invalid_scope")


# --- headers and methods -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_wrong_method_is_405_with_allow_and_no_store(rotor: Rotor, method: str) -> None:
    response = await rotor.http.request(method, "/token")

    assert_error(response, 405, "method_not_allowed")
    assert "POST" in [item.strip() for item in response.headers["allow"].split(",")]


async def test_oversized_body_is_413_invalid_request(rotor: Rotor) -> None:
    client = await rotor.client()

    response = await post_raw(
        rotor,
        b"grant_type=client_credentials&pad=" + b"x" * 70_000,
        {**client.auth, "content-type": FORM},
    )

    assert_error(response, 413, "invalid_request")


OAUTH_PATHS = ["/token", "/refresh", "/introspect", "/revoke"]


@pytest.mark.parametrize("path", OAUTH_PATHS)
async def test_options_on_the_oauth_endpoints_is_204_with_allow_and_no_store(
    rotor: Rotor, path: str
) -> None:
    response = await rotor.http.options(path)

    assert response.status_code == 204, response.text
    assert response.content == b""
    allowed = {item.strip() for item in response.headers["allow"].split(",")}
    assert allowed == {"OPTIONS", "POST"}
    assert_no_store(response)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "HEAD"])
@pytest.mark.parametrize("path", OAUTH_PATHS)
async def test_wrong_method_on_every_oauth_endpoint_is_405_with_allow(
    rotor: Rotor, path: str, method: str
) -> None:
    response = await rotor.http.request(method, path)

    assert response.status_code == 405, response.text
    assert "POST" in [item.strip() for item in response.headers["allow"].split(",")]
    assert_no_store(response)
    if method != "HEAD":
        assert_error(response, 405, "method_not_allowed")


def streamed(*messages: dict[str, Any]) -> Request[Any, Any, Any]:
    """A request whose body arrives in these ASGI messages, with no content-length."""
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    scope: Any = {"type": "http", "method": "POST", "path": "/refresh", "headers": []}
    return Request(scope, receive)


async def test_a_streamed_body_is_read_whole_and_refused_past_the_limit() -> None:
    """The limit holds on the bytes sent, not only on an announced length."""
    chunk = {"type": "http.request", "body": b"x" * 4096, "more_body": True}
    last = {"type": "http.request", "body": b"end", "more_body": False}

    assert await read_body(streamed(chunk, chunk, last)) == b"x" * 8192 + b"end"
    assert await read_body(streamed(chunk, last), limit=4099) == b"x" * 4096 + b"end"
    with pytest.raises(RequestEntityTooLarge):
        await read_body(streamed(chunk, last), limit=4098)
    with pytest.raises(RequestEntityTooLarge):
        await read_body(streamed(*[chunk] * 20, last))
    with pytest.raises(ClientException):
        await read_body(streamed(chunk, {"type": "http.disconnect"}))


# --- invalid_request -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "pairs",
    [LOGIN[1:], [("grant_type", ""), *LOGIN[1:]], []],
    ids=["missing", "empty", "empty-body"],
)
async def test_missing_or_empty_grant_type_is_invalid_request(
    rotor: Rotor, pairs: list[tuple[str, str]]
) -> None:
    client = await rotor.client()
    await rotor.user()

    response = await post_pairs(rotor, pairs, client.auth)
    assert_error(response, 400, "invalid_request")
    assert await count(rotor.db, "login_failures") == 0


CLIENT_ID = "<the client's id>"
CLIENT_SECRET = "<the client's secret>"


@pytest.mark.parametrize(
    "pairs",
    [
        pytest.param([*LOGIN, ("grant_type", "password")], id="grant_type-same"),
        pytest.param([*LOGIN, ("grant_type", "client_credentials")], id="grant_type-other"),
        pytest.param([*LOGIN, ("username", "alice")], id="username-same"),
        pytest.param([*LOGIN, ("username", "")], id="username-empty"),
        pytest.param([*LOGIN, ("password", "")], id="password-empty"),
        pytest.param([*LOGIN, ("scope", "read"), ("scope", "write")], id="scope"),
        pytest.param([*LOGIN, ("unknown", "1"), ("unknown", "2")], id="unknown"),
        pytest.param(
            [("grant_type", "client_credentials"), ("grant_type", "client_credentials")],
            id="grant_type-only",
        ),
        pytest.param(
            [
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT_ID),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ],
            id="client_id-with-client_secret_post",
        ),
    ],
)
async def test_repeated_parameter_is_invalid_request(
    rotor: Rotor, pairs: list[tuple[str, str]]
) -> None:
    client = await rotor.client()
    await rotor.user()
    assert client.client_secret is not None
    values = {CLIENT_ID: client.client_id, CLIENT_SECRET: client.client_secret}
    sent = [(name, values.get(value, value)) for name, value in pairs]
    # client_secret_post authenticates in the body: no Basic header then.
    headers = {} if any(value == CLIENT_SECRET for _, value in pairs) else client.auth

    response = await post_pairs(rotor, sent, headers)
    assert_error(response, 400, "invalid_request")

    assert await count(rotor.db, "token_families") == 0
    assert await count(rotor.db, "login_failures") == 0


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "text/plain",
        "multipart/form-data",
        "application/x-www-form-urlencodedx",
        None,
    ],
    ids=["json", "text", "multipart", "form-with-a-suffix", "no-content-type"],
)
async def test_body_not_form_encoded_is_invalid_request(
    rotor: Rotor, content_type: str | None
) -> None:
    client = await rotor.client()
    if content_type is None:
        response = await post_raw(rotor, b"grant_type=client_credentials", client.auth)
    else:
        body = json.dumps({"grant_type": "client_credentials"}).encode()
        response = await post_raw(rotor, body, {**client.auth, "content-type": content_type})
    assert_error(response, 400, "invalid_request")


async def test_body_sent_as_json_by_the_http_client_is_invalid_request(rotor: Rotor) -> None:
    client = await rotor.client()
    json_helper = await rotor.http.post(
        "/token", json={"grant_type": "client_credentials"}, headers=client.auth
    )
    assert_error(json_helper, 400, "invalid_request")


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded; charset=UTF-8", "Application/X-WWW-Form-Urlencoded"],
    ids=["charset-parameter", "mixed-case"],
)
async def test_form_content_type_with_parameters_and_case_is_accepted(
    rotor: Rotor, content_type: str
) -> None:
    client = await rotor.client()

    response = await post_raw(
        rotor, b"grant_type=client_credentials", {**client.auth, "content-type": content_type}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "query", ["client_secret=x", "password=x", "refresh_token=x", "client_secret="]
)
async def test_secret_in_query_string_is_invalid_request(rotor: Rotor, query: str) -> None:
    client = await rotor.client()
    await rotor.user()
    login = {"grant_type": "password", "username": "alice", "password": PASSWORD}

    response = await rotor.http.post(f"/token?{query}", data=login, headers=client.auth)
    assert_error(response, 400, "invalid_request")
    assert await count(rotor.db, "token_families") == 0
    assert await count(rotor.db, "login_failures") == 0


async def test_client_secret_post_in_the_query_string_is_invalid_request(rotor: Rotor) -> None:
    client = await rotor.client()
    await rotor.user()

    moved = await rotor.http.post(
        f"/token?client_id={client.client_id}&client_secret={client.client_secret}",
        data={"grant_type": "client_credentials"},
    )
    assert_error(moved, 400, "invalid_request")
    assert await count(rotor.db, "token_families") == 0
    assert await count(rotor.db, "login_failures") == 0


FULL_LOGIN = {"grant_type": "password", "username": "alice", "password": PASSWORD}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param({**FULL_LOGIN, "username": ""}, id="username-empty"),
        pytest.param({**FULL_LOGIN, "password": ""}, id="password-empty"),
        pytest.param({k: v for k, v in FULL_LOGIN.items() if k != "username"}, id="no-username"),
        pytest.param({k: v for k, v in FULL_LOGIN.items() if k != "password"}, id="no-password"),
        pytest.param({"grant_type": "password"}, id="neither"),
    ],
)
async def test_missing_or_empty_username_or_password_is_invalid_request(
    rotor: Rotor, data: dict[str, str]
) -> None:
    client = await rotor.client()
    await rotor.user()

    response = await rotor.token(data, client.auth)
    assert_error(response, 400, "invalid_request")

    assert await count(rotor.db, "login_failures") == 0
    assert await count(rotor.db, "security_events") == 0


async def test_unknown_parameters_are_ignored(rotor: Rotor) -> None:
    client = await rotor.client()
    await rotor.user()

    response = await rotor.login(
        client,
        redirect_uri="https://x.example/cb",
        state="abc",
        audience="https://other.example",
        sub="admin",
    )

    assert response.status_code == 200, response.text
    claims = (await rotor.verify(response.json()["access_token"])).claims
    assert claims["aud"] == "http://localhost:8000"
    assert claims["sub"] == await rotor.db.fetchval("SELECT id::text FROM users")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"grant_type=password&username=\xff\xfe&password=x", id="raw-bytes"),
        pytest.param(b"grant_type=password&username=%ff%fe&password=x", id="percent-encoded"),
        pytest.param(b"grant_type=password&username=%ED%A0%80&password=x", id="encoded-surrogate"),
        pytest.param(b"grant_type=password&username=alice&password=%C3", id="truncated-sequence"),
        pytest.param(b"\x80grant_type=client_credentials", id="leading-byte"),
    ],
)
async def test_non_utf8_body_is_invalid_request(rotor: Rotor, body: bytes) -> None:
    client = await rotor.client()
    await rotor.user()

    response = await post_raw(rotor, body, {**client.auth, "content-type": FORM})
    assert_error(response, 400, "invalid_request")

    assert await count(rotor.db, "login_failures") == 0


async def test_nul_in_username_is_invalid_request_not_500(rotor: Rotor) -> None:
    client = await rotor.client()
    await rotor.user()

    response = await rotor.token(
        {"grant_type": "password", "username": "al\x00ice", "password": PASSWORD}, client.auth
    )

    assert_error(response, 400, "invalid_request")


# --- grant types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "grant_type",
    [
        pytest.param("authorization_code", id="authorization_code"),
        pytest.param("implicit", id="implicit"),
        pytest.param("urn:ietf:params:oauth:grant-type:jwt-bearer", id="jwt-bearer"),
        pytest.param("urn:ietf:params:oauth:grant-type:device_code", id="device_code"),
        pytest.param("PASSWORD", id="PASSWORD"),
        pytest.param("password ", id="password-trailing-space"),
        pytest.param("garbage\u00e9", id="non-ascii"),
        pytest.param("x" * 500, id="500-characters"),
    ],
)
async def test_unknown_grant_type_is_unsupported_grant_type(rotor: Rotor, grant_type: str) -> None:
    client = await rotor.client()

    response = await rotor.token({"grant_type": grant_type}, client.auth)
    assert_error(response, 400, "unsupported_grant_type")
    assert "x" * 100 not in response.text  # the garbage is not echoed in full


@pytest.mark.parametrize(
    ("grants", "grant_type"),
    [
        (["client_credentials"], "password"),
        (["password", "refresh_token"], "client_credentials"),
        (["client_credentials"], "refresh_token"),
        ([], "password"),
        ([], "client_credentials"),
    ],
    ids=[
        "password-for-a-client_credentials-client",
        "client_credentials-for-a-password-client",
        "refresh_token-for-a-client_credentials-client",
        "password-for-a-client-without-grants",
        "client_credentials-for-a-client-without-grants",
    ],
)
async def test_grant_not_enabled_for_client_is_unauthorized_client(
    rotor: Rotor, grants: list[str], grant_type: str
) -> None:
    await rotor.user()

    client = await rotor.client(grants=grants)
    response = await rotor.token(
        {
            "grant_type": grant_type,
            "username": "alice",
            "password": PASSWORD,
            "refresh_token": "x" * 43,
        },
        client.auth,
    )
    assert_error(response, 400, "unauthorized_client")

    assert await count(rotor.db, "login_failures") == 0
    assert await count(rotor.db, "token_families") == 0


async def test_public_client_asking_client_credentials_is_unauthorized_client(
    rotor: Rotor,
) -> None:
    client = await rotor.client(public=True)  # all three grants are on the row

    response = await rotor.token(
        {"grant_type": "client_credentials", "client_id": client.client_id}
    )

    assert_error(response, 400, "unauthorized_client")


# --- invalid_grant -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "password"),
    [
        pytest.param("alice", "not the password", id="wrong-password"),
        pytest.param("bob", PASSWORD, id="unknown"),
        pytest.param("carol", PASSWORD, id="disabled"),
        pytest.param("Alice", PASSWORD, id="case"),
    ],
)
async def test_wrong_password_unknown_user_and_disabled_user_answer_alike(
    rotor: Rotor, username: str, password: str
) -> None:
    client = await rotor.client()
    await rotor.user()
    await rotor.user("carol")
    await rotor.db.execute("UPDATE users SET disabled = true WHERE username = 'carol'")

    response = await rotor.login(client, username=username, password=password)

    assert_error(response, 400, "invalid_grant")
    assert response.json() == INVALID_CREDENTIALS
    assert await count(rotor.db, "token_families") == 0


async def test_unknown_user_costs_the_same_password_verification(rotor: Rotor) -> None:
    # White-box: the same response time whether or not the user exists means
    # one argon2id verification with the same parameters in both cases.
    client = await rotor.client()
    await rotor.user()
    hasher = rotor.http.app.state.services.hasher
    verified: list[str] = []
    original = hasher._verify_work

    def recording(stored_hash: str, password: str) -> bool:
        verified.append(stored_hash)
        result: bool = original(stored_hash, password)
        return result

    hasher._verify_work = recording

    known = await rotor.login(client, password="not the password")
    unknown = await rotor.login(client, username="bob", password="not the password")

    assert known.json() == unknown.json() == INVALID_CREDENTIALS
    assert len(verified) == 2
    parameters = [stored.rsplit("$", 2)[0] for stored in verified]
    assert parameters == ["$argon2id$v=19$m=8192,t=1,p=1"] * 2
    assert verified[0] != verified[1]


async def test_failed_logins_record_login_failed_events(rotor: Rotor) -> None:
    client = await rotor.client()
    alice = await rotor.user()
    carol = await rotor.user("carol")
    await rotor.db.execute("UPDATE users SET disabled = true WHERE username = 'carol'")

    await rotor.login(client, password="not the password")
    await rotor.login(client, username="bob")
    await rotor.login(client, username="carol")

    rows = await rotor.db.fetch(
        "SELECT type, user_id::text, client_id::text, detail::text FROM security_events "
        "ORDER BY seq"
    )
    got = [(r["type"], r["user_id"], r["client_id"], json.loads(r["detail"])) for r in rows]
    assert got == [
        ("login_failed", alice, client.client_id, {"reason": "bad_credentials"}),
        ("login_failed", None, client.client_id, {"reason": "unknown_user"}),
        ("login_failed", carol, client.client_id, {"reason": "user_disabled"}),
    ]


async def test_password_over_1024_characters_is_refused_without_hashing(rotor: Rotor) -> None:
    client = await rotor.client()
    await rotor.user()

    response = await rotor.login(client, password="p" * 1025)

    assert_error(response, 400, "invalid_request")
    # Refused before the throttle reserved an attempt, hence before any hashing.
    assert await count(rotor.db, "login_failures") == 0
    assert await count(rotor.db, "security_events") == 0


@pytest.mark.parametrize("length", [256, 10_000])
async def test_username_over_255_characters_is_refused_without_hashing(
    rotor: Rotor, length: int
) -> None:
    client = await rotor.client()
    response = await rotor.login(client, username="u" * length)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "invalid_request", "error_description": "username or password too long"},
    )
    assert await count(rotor.db, "login_failures") == 0
    assert await count(rotor.db, "security_events") == 0


async def test_password_length_counts_unicode_characters(rotor: Rotor) -> None:
    client = await rotor.client()
    password = "\u00e9" * 1024  # 1024 characters, 2048 bytes in UTF-8
    await rotor.user(password=password)

    accepted = await rotor.login(client, password=password)
    refused = await rotor.login(client, password=password + "\u00e9")

    assert accepted.status_code == 200, accepted.text
    assert_error(refused, 400, "invalid_request")


async def test_outdated_password_hash_is_upgraded_on_login(rotor: Rotor) -> None:
    client = await rotor.client()
    old = Argon2(time_cost=2, memory_cost=8192, parallelism=1).hash(PASSWORD)
    await rotor.user(password_hash=old)
    changed_before = await rotor.db.fetchval("SELECT password_changed_at FROM users")

    response = await rotor.login(client)

    assert response.status_code == 200, response.text
    row = await rotor.db.fetchrow("SELECT password_hash, password_changed_at FROM users")
    assert row["password_hash"].startswith("$argon2id$v=19$m=8192,t=1,p=1$")
    assert row["password_changed_at"] == changed_before
    assert (await rotor.login(client)).status_code == 200


@pytest.mark.parametrize("path", ["/token/", "/token//", "/refresh/", "/introspect/", "/revoke/"])
async def test_slashed_paths_answer_with_the_no_store_headers_too(rotor: Rotor, path: str) -> None:
    """The router serves `/token/` as `/token`; its tokens must not be cached either."""
    client = await rotor.client(grants=["client_credentials"], introspect=True)
    session = await rotor.http.post(
        "/token", data={"grant_type": "client_credentials"}, headers=client.auth
    )
    forms = {
        "/token": {"grant_type": "client_credentials"},
        "/refresh": {"refresh_token": "not-a-live-token"},
        "/introspect": {"token": session.json()["access_token"]},
        "/revoke": {"token": "not-a-live-token"},
    }
    response = await rotor.http.post(path, data=forms[path.rstrip("/")], headers=client.auth)
    expected = {"/refresh": 400}.get(path.rstrip("/"), 200)
    assert (
        response.status_code,
        response.headers.get("cache-control"),
        response.headers.get("pragma"),
    ) == (expected, "no-store", "no-cache"), response.text


SECRET_NAME = "S3CRET-VALUE-THAT-MUST-NOT-ECHO"


@pytest.mark.parametrize(
    ("description", "pairs"),
    [
        pytest.param(
            "parameter 'scope' is repeated", [("scope", "read"), ("scope", "write")], id="scope"
        ),
        pytest.param(
            "a parameter is repeated", [(SECRET_NAME, ""), (SECRET_NAME, "")], id="secret-name"
        ),
    ],
)
async def test_a_repeated_parameter_is_named_only_when_it_is_the_protocols(
    rotor: Rotor, description: str, pairs: list[tuple[str, str]]
) -> None:
    """A secret sent as a bare field name must not come back in the answer."""
    client = await rotor.client()
    response = await post_pairs(rotor, [*LOGIN, *pairs], client.auth)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "invalid_request", "error_description": description},
    )
    assert SECRET_NAME not in response.text
