"""The operators' API (CONTRACT 3.6): the guard, users, clients, families,
revocation and security events.

Every outcome is checked on the wire (status, body, headers) and, where the
contract promises a lasting effect, in the database through the test's own
connection and through the token endpoints (/refresh, /introspect, /token).
Time never passes in these tests: "long ago" is made by moving timestamps back
with SQL.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import httpx
import pytest
from joserfc import jws
from joserfc.jwk import ECKey
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.config import Settings
from service.tokens.access import AccessTokenIssuer
from tests.helpers import (
    PASSWORD,
    Ops,
    RegisteredClient,
    Rotor,
    claims_of,
    client_token,
    operator,
    unb64u,
)

ZERO_ID = "00000000-0000-0000-0000-000000000000"
USER_KEYS = {"id", "username", "disabled", "created_at"}
FAMILY_KEYS = {
    "id",
    "client_id",
    "created_at",
    "last_rotated_at",
    "expires_at",
    "status",
    "revoked_reason",
}
CHAIN_KEYS = {"generation", "issued_at", "spent_at", "expires_at"}
EVENT_KEYS = {
    "id",
    "type",
    "at",
    "user_id",
    "client_id",
    "family_id",
    "ip",
    "user_agent",
    "detail",
}
NEW_PASSWORD = "a brand new passphrase"

# The guard's answers (service/http/admin.py, service/errors.py). RFC 6750 3.1:
# the challenge names the error only when a Bearer token was sent.
NO_TOKEN_CHALLENGE = 'Bearer realm="rotor"'
TOKEN_CHALLENGE = 'Bearer realm="rotor", error="invalid_token"'
NO_TOKEN = "a Bearer access token is required"
INVALID_TOKEN = "the access token is invalid or expired"
REVOKED_TOKEN = "the access token is revoked"
NOT_ADMIN = (
    403,
    {
        "error": "access_denied",
        "error_description": "this client does not have the admin permission",
    },
)
NOT_A_UUID = (400, {"error": "invalid_request", "error_description": "id must be a UUID"})


# --------------------------------------------------------------------------- helpers


@dataclass
class Session:
    access: str
    refresh: str
    family_id: str


def b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def answer(response: httpx.Response) -> tuple[int, Any, str | None]:
    """Status, JSON body and WWW-Authenticate of an answer."""
    return response.status_code, response.json(), response.headers.get("www-authenticate")


def refused(description: str, challenge: str = TOKEN_CHALLENGE) -> tuple[int, dict[str, str], str]:
    """The guard's 401 as `answer` reads it."""
    return 401, {"error": "invalid_token", "error_description": description}, challenge


def error_of(response: httpx.Response) -> tuple[int, Any]:
    """Status and JSON body of an answer."""
    return response.status_code, response.json()


def error(status: int, code: str, description: str) -> tuple[int, dict[str, str]]:
    return status, {"error": code, "error_description": description}


def header_of(token: str) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(unb64u(token.split(".")[0]))
    return header


def moment(text: str) -> datetime:
    """An RFC 3339 UTC time as the admin API writes it: always with a Z."""
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


def utc(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
async def ops(rotor: Rotor) -> Ops:
    return await operator(rotor)


@pytest.fixture
async def app(rotor: Rotor) -> RegisteredClient:
    return await rotor.client(name="app")


@pytest.fixture
async def gateway(rotor: Rotor) -> RegisteredClient:
    return await rotor.client(grants=[], scopes=[], introspect=True, name="gateway")


async def login(
    rotor: Rotor, client: RegisteredClient, username: str = "alice", password: str = PASSWORD
) -> Session:
    response = await rotor.login(client, username, password)
    assert response.status_code == 200, response.text
    body = response.json()
    return Session(
        body["access_token"], body["refresh_token"], claims_of(body["access_token"])["sid"]
    )


async def refresh(rotor: Rotor, client: RegisteredClient, token: str) -> httpx.Response:
    return await rotor.http.post("/refresh", json={"refresh_token": token}, headers=client.auth)


async def rotate(rotor: Rotor, client: RegisteredClient, session: Session) -> Session:
    response = await refresh(rotor, client, session.refresh)
    assert response.status_code == 200, response.text
    body = response.json()
    return Session(body["access_token"], body["refresh_token"], session.family_id)


async def introspect(rotor: Rotor, gateway: RegisteredClient, token: str) -> dict[str, Any]:
    response = await rotor.http.post("/introspect", data={"token": token}, headers=gateway.auth)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def assert_session_dead(
    rotor: Rotor, client: RegisteredClient, gateway: RegisteredClient, session: Session
) -> None:
    response = await refresh(rotor, client, session.refresh)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"
    assert await introspect(rotor, gateway, session.access) == {"active": False}
    assert await introspect(rotor, gateway, session.refresh) == {"active": False}


async def assert_session_live(rotor: Rotor, gateway: RegisteredClient, session: Session) -> None:
    assert (await introspect(rotor, gateway, session.access))["active"] is True
    assert (await introspect(rotor, gateway, session.refresh))["active"] is True


async def family_rows(rotor: Rotor, *family_ids: str) -> dict[str, Any]:
    rows = await rotor.db.fetch(
        "SELECT id, revoked_at, revoked_reason FROM token_families WHERE id = ANY($1::uuid[])",
        [uuid.UUID(fid) for fid in family_ids],
    )
    return {str(row["id"]): row for row in rows}


async def reasons(rotor: Rotor, *family_ids: str) -> dict[str, str | None]:
    return {
        fid: row["revoked_reason"] for fid, row in (await family_rows(rotor, *family_ids)).items()
    }


async def get_events(rotor: Rotor, ops: Ops, **params: str) -> list[dict[str, Any]]:
    response = await rotor.http.get("/admin/events", params=params, headers=ops.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next"] is None, "more than one page: raise the limit in the test"
    items: list[dict[str, Any]] = body["items"]
    return items


async def walk(rotor: Rotor, ops: Ops, path: str, limit: int) -> list[list[dict[str, Any]]]:
    """Every page of a list, following `next` until it is null."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = await rotor.http.get(path, params=params, headers=ops.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next"}
        pages.append(body["items"])
        cursor = body["next"]
        if cursor is None:
            return pages
        assert isinstance(cursor, str)
        assert len(pages) < 20, "paging does not end"


def keys_anywhere(document: Any) -> set[str]:
    if isinstance(document, dict):
        found = set(document)
        for value in document.values():
            found |= keys_anywhere(value)
        return found
    if isinstance(document, list):
        return set().union(*(keys_anywhere(item) for item in document)) if document else set()
    return set()


# --------------------------------------------------------------------------- the guard


async def test_guard_without_authorization_is_401_with_bearer_challenge(rotor: Rotor) -> None:
    response = await rotor.http.get("/admin/keys")
    assert answer(response) == refused(NO_TOKEN, NO_TOKEN_CHALLENGE)


async def test_guard_refuses_malformed_credentials(rotor: Rotor) -> None:
    # RFC 6750 3.1: no error attribute in the challenge when no Bearer token was sent.
    no_token = refused(NO_TOKEN, NO_TOKEN_CHALLENGE)
    expected = {
        "Bearer": no_token,
        "Bearer ": no_token,
        "Token abc": no_token,
        "Bearer garbage": refused(INVALID_TOKEN),
        "Bearer a.b.c": refused(INVALID_TOKEN),
        "Bearer eyJ.eyJ.sig": refused(INVALID_TOKEN),
    }
    answers = {}
    for authorization in expected:
        response = await rotor.http.get("/admin/keys", headers={"Authorization": authorization})
        answers[authorization] = answer(response)
    assert answers == expected


async def test_guard_refuses_basic_even_with_the_admin_clients_credentials(
    rotor: Rotor, ops: Ops
) -> None:
    response = await rotor.http.get("/admin/keys", headers=ops.client.auth)
    assert answer(response) == refused(NO_TOKEN, NO_TOKEN_CHALLENGE)


async def test_guard_accepts_the_scheme_in_any_case(rotor: Rotor, ops: Ops) -> None:
    # RFC 7235 2.1: the auth-scheme is case-insensitive.
    response = await rotor.http.get("/admin/keys", headers={"Authorization": f"bearer {ops.token}"})
    assert response.status_code == 200, response.text


async def test_guard_refuses_a_token_whose_jti_was_revoked(rotor: Rotor, ops: Ops) -> None:
    assert (await rotor.http.get("/admin/keys", headers=ops.headers)).status_code == 200
    revoked = await rotor.http.post("/revoke", data={"token": ops.token}, headers=ops.client.auth)
    assert revoked.status_code == 200, revoked.text
    response = await rotor.http.get("/admin/keys", headers=ops.headers)
    assert answer(response) == refused(REVOKED_TOKEN)


async def test_guard_refuses_an_expired_token(rotor: Rotor, ops: Ops) -> None:
    # Signed by Rotor's own active key; expired from its `exp` second on (no leeway).
    issuer = AccessTokenIssuer(rotor.settings, rotor.http.app.state.services.keys)
    client_id = ops.client.client_id
    fresh = issuer.issue(subject=client_id, client_id=client_id, scope="", family_id=None)
    expired = issuer.issue(
        subject=client_id,
        client_id=client_id,
        scope="",
        family_id=None,
        now=int(time.time()) - rotor.settings.access_token_ttl,
    )
    ok = await rotor.http.get("/admin/keys", headers={"Authorization": f"Bearer {fresh.token}"})
    assert ok.status_code == 200, ok.text
    response = await rotor.http.get(
        "/admin/keys", headers={"Authorization": f"Bearer {expired.token}"}
    )
    assert answer(response) == refused(INVALID_TOKEN)


async def test_guard_refuses_a_token_of_a_revoked_family(rotor: Rotor) -> None:
    admin = await rotor.client(admin=True, name="admin-app")
    await rotor.user()
    session = await login(rotor, admin)
    headers = {"Authorization": f"Bearer {session.access}"}
    assert (await rotor.http.get("/admin/keys", headers=headers)).status_code == 200
    logout = await rotor.http.post("/revoke", data={"token": session.refresh}, headers=admin.auth)
    assert logout.status_code == 200, logout.text
    response = await rotor.http.get("/admin/keys", headers=headers)
    assert answer(response) == refused(REVOKED_TOKEN)


async def test_guard_refuses_a_token_with_flipped_signature_bits(rotor: Rotor, ops: Ops) -> None:
    head, payload, signature = ops.token.split(".")
    raw = bytearray(unb64u(signature))
    raw[0] ^= 0x01
    raw[-1] ^= 0x80
    forged = f"{head}.{payload}.{b64encode(bytes(raw))}"
    response = await rotor.http.get("/admin/keys", headers={"Authorization": f"Bearer {forged}"})
    assert answer(response) == refused(INVALID_TOKEN)


async def test_guard_refuses_a_token_signed_by_a_foreign_key_under_a_published_kid(
    rotor: Rotor, ops: Ops
) -> None:
    foreign = ECKey.generate_key("P-256", private=True)
    header = header_of(ops.token)
    forged = jws.serialize_compact(header, json.dumps(claims_of(ops.token)).encode(), foreign)
    response = await rotor.http.get("/admin/keys", headers={"Authorization": f"Bearer {forged}"})
    assert answer(response) == refused(INVALID_TOKEN)


async def test_guard_refuses_alg_none(rotor: Rotor, ops: Ops) -> None:
    header = {**header_of(ops.token), "alg": "none"}
    unsigned = (
        f"{b64encode(json.dumps(header).encode())}."
        f"{b64encode(json.dumps(claims_of(ops.token)).encode())}."
    )
    response = await rotor.http.get("/admin/keys", headers={"Authorization": f"Bearer {unsigned}"})
    assert answer(response) == refused(INVALID_TOKEN)


async def test_guard_refuses_tokens_signed_by_rotor_with_wrong_claims(
    rotor: Rotor, ops: Ops
) -> None:
    # Signed with Rotor's own active key: only the claims or the header are wrong.
    key = rotor.http.app.state.services.keys.state.active
    header, claims = header_of(ops.token), claims_of(ops.token)
    now = int(time.time())

    def signed(head: dict[str, Any], body: dict[str, Any]) -> str:
        return jws.serialize_compact(head, json.dumps(body).encode(), key.key)

    control = signed(header, claims)
    ok = await rotor.http.get("/admin/keys", headers={"Authorization": f"Bearer {control}"})
    assert ok.status_code == 200, ok.text
    without_jti = {name: value for name, value in claims.items() if name != "jti"}
    variants = {
        "typ-JWT": signed({**header, "typ": "JWT"}, claims),
        "no-typ": signed({k: v for k, v in header.items() if k != "typ"}, claims),
        "other-audience": signed(header, {**claims, "aud": "https://elsewhere.example"}),
        "other-issuer": signed(header, {**claims, "iss": "https://elsewhere.example"}),
        "not-yet-valid": signed(header, {**claims, "nbf": now + 600, "iat": now + 600}),
        "no-jti": signed(header, without_jti),
        "unknown-client": signed(header, {**claims, "client_id": ZERO_ID, "sub": ZERO_ID}),
        "unknown-kid": signed({**header, "kid": "no-such-kid"}, claims),
    }
    answers = {}
    for case, token in variants.items():
        response = await rotor.http.get("/admin/keys", headers={"Authorization": f"Bearer {token}"})
        answers[case] = answer(response)
    # A verified token of a client that does not exist is answered as a revoked one.
    expected = dict.fromkeys(variants, refused(INVALID_TOKEN))
    expected["unknown-client"] = refused(REVOKED_TOKEN)
    assert answers == expected


async def test_guard_checks_the_admin_permission_on_every_request(rotor: Rotor, ops: Ops) -> None:
    assert (await rotor.http.get("/admin/keys", headers=ops.headers)).status_code == 200
    await rotor.db.execute(
        "UPDATE clients SET is_admin = false WHERE id = $1", uuid.UUID(ops.client.client_id)
    )
    response = await rotor.http.get("/admin/keys", headers=ops.headers)
    assert error_of(response) == NOT_ADMIN


async def test_a_wrong_method_on_an_admin_route_is_405_with_allow(rotor: Rotor, ops: Ops) -> None:
    response = await rotor.http.delete(f"/admin/users/{ZERO_ID}", headers=ops.headers)
    assert response.status_code == 405, response.text
    allowed = {method.strip() for method in response.headers["allow"].split(",")}
    assert {"GET", "PATCH"} <= allowed
    assert "DELETE" not in allowed


async def test_guard_answers_403_to_a_valid_token_of_a_client_without_admin(rotor: Rotor) -> None:
    plain = await rotor.client(grants=["client_credentials"], name="not-admin")
    headers = {"Authorization": f"Bearer {await client_token(rotor, plain)}"}
    listed = await rotor.http.get("/admin/keys", headers=headers)
    assert error_of(listed) == NOT_ADMIN
    created = await rotor.http.post(
        "/admin/users", json={"username": "eve", "password": "longpassword"}, headers=headers
    )
    assert error_of(created) == NOT_ADMIN
    assert await rotor.db.fetchval("SELECT count(*) FROM users") == 0


ADMIN_ROUTES = [
    ("POST", "/admin/users"),
    ("GET", f"/admin/users/{ZERO_ID}"),
    ("PATCH", f"/admin/users/{ZERO_ID}"),
    ("POST", f"/admin/users/{ZERO_ID}/password"),
    ("GET", f"/admin/users/{ZERO_ID}/families"),
    ("POST", f"/admin/users/{ZERO_ID}/revoke"),
    ("POST", "/admin/clients"),
    ("GET", f"/admin/clients/{ZERO_ID}"),
    ("POST", f"/admin/clients/{ZERO_ID}/revoke"),
    ("GET", f"/admin/families/{ZERO_ID}"),
    ("POST", f"/admin/families/{ZERO_ID}/revoke"),
    ("GET", "/admin/events"),
    ("GET", "/admin/keys"),
    ("POST", "/admin/keys/rotate"),
    ("POST", "/admin/keys/some-kid/revoke"),
]


async def test_every_admin_route_is_guarded_before_its_body_is_read(rotor: Rotor) -> None:
    answers = {}
    for method, path in ADMIN_ROUTES:
        response = await rotor.http.request(
            method, path, content=b"{not json", headers={"Content-Type": "application/json"}
        )
        answers[method, path] = answer(response)
    assert answers == dict.fromkeys(ADMIN_ROUTES, refused(NO_TOKEN, NO_TOKEN_CHALLENGE))


async def test_every_admin_route_answers_403_to_a_client_without_admin(rotor: Rotor) -> None:
    plain = await rotor.client(grants=["client_credentials"], name="not-admin")
    headers = {"Authorization": f"Bearer {await client_token(rotor, plain)}"}
    answers = {}
    for method, path in ADMIN_ROUTES:
        response = await rotor.http.request(method, path, json={}, headers=headers)
        answers[method, path] = error_of(response)
    assert answers == dict.fromkeys(ADMIN_ROUTES, NOT_ADMIN)


# --------------------------------------------------------------------------- users


async def test_create_user_answers_201_and_stores_an_argon2id_hash(
    rotor: Rotor, ops: Ops, app: RegisteredClient
) -> None:
    response = await rotor.http.post(
        "/admin/users", json={"username": "bob", "password": PASSWORD}, headers=ops.headers
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "username"}
    assert body["username"] == "bob"
    row = await rotor.db.fetchrow(
        "SELECT username, password_hash FROM users WHERE id = $1", uuid.UUID(body["id"])
    )
    assert row["username"] == "bob"
    assert row["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in row["password_hash"]
    assert (await rotor.login(app, "bob", PASSWORD)).status_code == 200


async def test_create_user_with_a_taken_username_is_409(rotor: Rotor, ops: Ops) -> None:
    first = await rotor.http.post(
        "/admin/users", json={"username": "bob", "password": PASSWORD}, headers=ops.headers
    )
    assert first.status_code == 201, first.text
    again = await rotor.http.post(
        "/admin/users",
        json={"username": "bob", "password": "another password"},
        headers=ops.headers,
    )
    assert error_of(again) == error(409, "conflict", "username is taken")
    assert await rotor.db.fetchval("SELECT count(*) FROM users WHERE username = 'bob'") == 1


TOO_SHORT = error(422, "invalid_request", "password must be at least 8 characters")
TOO_LONG = error(422, "invalid_request", "password must be at most 1024 characters")
BAD_USERNAME = error(422, "invalid_request", "username must be 1 to 255 printable characters")

# Each password and its refusal (None: the user is created).
PASSWORD_LENGTHS: dict[str, tuple[str, tuple[int, dict[str, str]] | None]] = {
    "7": ("x" * 7, TOO_SHORT),
    "8": ("x" * 8, None),
    "1024": ("x" * 1024, None),
    "1025": ("x" * 1025, TOO_LONG),
    "7-emoji": ("\U0001f600" * 7, TOO_SHORT),  # 28 bytes in UTF-8, but 7 characters
    "8-emoji": ("\U0001f600" * 8, None),
    "1024-accented": ("\u00e9" * 1024, None),  # 2048 bytes in UTF-8, 1024 characters
    "1025-accented": ("\u00e9" * 1025, TOO_LONG),
}


@pytest.mark.parametrize("case", PASSWORD_LENGTHS)
async def test_password_length_counts_unicode_characters(
    rotor: Rotor, ops: Ops, app: RegisteredClient, case: str
) -> None:
    password, refusal = PASSWORD_LENGTHS[case]
    username = f"user-{case}"
    response = await rotor.http.post(
        "/admin/users", json={"username": username, "password": password}, headers=ops.headers
    )
    if refusal is None:
        assert response.status_code == 201, response.text
    else:
        assert error_of(response) == refusal
    stored = await rotor.db.fetchval("SELECT count(*) FROM users WHERE username = $1", username)
    assert stored == (0 if refusal else 1)
    if refusal is None:
        assert (await rotor.login(app, username, password)).status_code == 200


BAD_USERNAMES = {
    "empty": "",
    "256-chars": "u" * 256,
    "newline": "a\nb",
    "tab": "a\tb",
    "escape": "a\x1bb",
    "nul": "a\x00b",
    "delete": "a\x7fb",
}


async def test_create_user_refuses_a_bad_username_with_422_and_creates_nothing(
    rotor: Rotor, ops: Ops
) -> None:
    before = await rotor.db.fetchval("SELECT count(*) FROM users")
    answers = {}
    for case, username in BAD_USERNAMES.items():
        response = await rotor.http.post(
            "/admin/users", json={"username": username, "password": PASSWORD}, headers=ops.headers
        )
        answers[case] = error_of(response)
    assert answers == dict.fromkeys(BAD_USERNAMES, BAD_USERNAME)
    assert await rotor.db.fetchval("SELECT count(*) FROM users") == before


async def test_create_user_accepts_a_username_of_255_printable_characters(
    rotor: Rotor, ops: Ops
) -> None:
    """The control for the refusals above: the longest username, non-ASCII and spaces."""
    username = "\u00e9 " * 127 + "z"
    assert len(username) == 255
    response = await rotor.http.post(
        "/admin/users", json={"username": username, "password": PASSWORD}, headers=ops.headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["username"] == username
    assert await rotor.db.fetchval("SELECT username FROM users") == username


NEAR_MISSES = {
    "1024-last-char": ("a" * 1023 + "b", "a" * 1024),
    "emoji-last-char": ("\U0001f600" * 8, "\U0001f600" * 7 + "\U0001f601"),
    "past-72-bytes": ("12345678" + "x" * 100, "12345678" + "x" * 99 + "y"),
}


@pytest.mark.parametrize("case", NEAR_MISSES)
async def test_passwords_are_never_truncated(
    rotor: Rotor, ops: Ops, app: RegisteredClient, case: str
) -> None:
    password, near_miss = NEAR_MISSES[case]
    username = f"user-{case}"
    created = await rotor.http.post(
        "/admin/users", json={"username": username, "password": password}, headers=ops.headers
    )
    assert created.status_code == 201, created.text
    wrong = await rotor.login(app, username, near_miss)
    assert wrong.status_code == 400, wrong.text
    assert wrong.json()["error"] == "invalid_grant"
    assert (await rotor.login(app, username, password)).status_code == 200


BAD_USER_BODIES: dict[str, dict[str, Any]] = {
    "no-password": {"json": {"username": "bob"}},
    "no-username": {"json": {"password": PASSWORD}},
    "empty-object": {"json": {}},
    "username-int": {"json": {"username": 5, "password": PASSWORD}},
    "password-int": {"json": {"username": "bob", "password": 12345678}},
    "username-null": {"json": {"username": None, "password": PASSWORD}},
    "array": {"json": ["bob", PASSWORD]},
    "string": {"json": "bob"},
    "invalid-json": {"content": b"{not json"},
    "truncated-json": {"content": b'{"username": "bob", "password": '},
}


@pytest.mark.parametrize("case", BAD_USER_BODIES)
async def test_create_user_with_a_bad_body_is_400(rotor: Rotor, ops: Ops, case: str) -> None:
    headers = {**ops.headers, "Content-Type": "application/json"}
    response = await rotor.http.post("/admin/users", headers=headers, **BAD_USER_BODIES[case])
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert await rotor.db.fetchval("SELECT count(*) FROM users") == 0


STRICT_USER_BODIES = {
    "bad-utf8-in-a-string": (
        b'{"username": "\xff", "password": "' + PASSWORD.encode() + b'"}',
        "the body is not valid JSON",
    ),
    "repeated-username": (
        b'{"username": "bob", "username": "eve", "password": "' + PASSWORD.encode() + b'"}',
        "username is repeated in the JSON body",
    ),
    "repeated-unknown-member": (
        b'{"username": "bob", "password": "' + PASSWORD.encode() + b'", "x": 1, "x": 1}',
        "a member is repeated in the JSON body",
    ),
}


@pytest.mark.parametrize("case", STRICT_USER_BODIES)
async def test_create_user_reads_its_body_strictly(rotor: Rotor, ops: Ops, case: str) -> None:
    content, description = STRICT_USER_BODIES[case]
    headers = {**ops.headers, "Content-Type": "application/json"}
    response = await rotor.http.post("/admin/users", headers=headers, content=content)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "invalid_request", "error_description": description},
    )
    assert await rotor.db.fetchval("SELECT count(*) FROM users") == 0


async def test_a_signed_token_without_a_uuid_client_id_is_401_not_500(
    rotor: Rotor, ops: Ops
) -> None:
    """Rotor never issues one; a guard that trusts the claim's shape would 500."""
    from service.tokens.access import AccessTokenIssuer

    services = rotor.http.app.state.services  # type: ignore[attr-defined]
    issuer = AccessTokenIssuer(services.settings, services.keys)
    issued = issuer.issue(subject="x", client_id="not-a-uuid", scope="", family_id=None)
    answers = {}
    for method, path in ADMIN_ROUTES:
        response = await rotor.http.request(
            method, path, json={}, headers={"Authorization": f"Bearer {issued.token}"}
        )
        answers[method, path] = answer(response)
    assert answers == dict.fromkeys(ADMIN_ROUTES, refused(INVALID_TOKEN))


async def test_get_user_shows_no_hash_and_an_rfc3339_utc_created_at(rotor: Rotor, ops: Ops) -> None:
    user_id = await rotor.user("alice")
    response = await rotor.http.get(f"/admin/users/{user_id}", headers=ops.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == USER_KEYS
    assert body["id"] == user_id
    assert body["username"] == "alice"
    assert body["disabled"] is False
    created = await rotor.db.fetchval(
        "SELECT created_at FROM users WHERE id = $1", uuid.UUID(user_id)
    )
    assert moment(body["created_at"]) == created
    assert "argon2" not in response.text


@pytest.mark.parametrize(
    ("method", "suffix", "payload"),
    [
        ("GET", "", None),
        ("PATCH", "", {"disabled": True}),
        ("POST", "/password", {"password": NEW_PASSWORD}),
        ("GET", "/families", None),
        ("POST", "/revoke", None),
    ],
    ids=["get", "patch", "password", "families", "revoke"],
)
@pytest.mark.parametrize(
    ("user_id", "expected"),
    [
        (ZERO_ID, error(404, "not_found", "no such user")),
        ("not-a-uuid", NOT_A_UUID),
        ("1", NOT_A_UUID),
    ],
    ids=["unknown", "not-a-uuid", "1"],
)
async def test_user_routes_answer_404_for_unknown_and_400_for_malformed_ids(
    rotor: Rotor,
    ops: Ops,
    user_id: str,
    expected: tuple[int, dict[str, str]],
    method: str,
    suffix: str,
    payload: dict[str, Any] | None,
) -> None:
    response = await rotor.http.request(
        method, f"/admin/users/{user_id}{suffix}", json=payload, headers=ops.headers
    )
    assert error_of(response) == expected


async def test_disabling_a_user_revokes_every_family_and_its_tokens(
    rotor: Rotor, ops: Ops, app: RegisteredClient, gateway: RegisteredClient
) -> None:
    user_id = await rotor.user("alice")
    await rotor.user("bob")
    first = await rotate(rotor, app, await login(rotor, app))
    second = await login(rotor, app)
    bystander = await login(rotor, app, "bob")

    response = await rotor.http.patch(
        f"/admin/users/{user_id}", json={"disabled": True}, headers=ops.headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == USER_KEYS
    assert (body["id"], body["username"], body["disabled"]) == (user_id, "alice", True)

    assert await reasons(rotor, first.family_id, second.family_id, bystander.family_id) == {
        first.family_id: "user_disabled",
        second.family_id: "user_disabled",
        bystander.family_id: None,
    }
    disabled = await get_events(rotor, ops, type="user_disabled")
    assert [(event["user_id"], event["family_id"]) for event in disabled] == [(user_id, None)]
    revoked = await get_events(rotor, ops, type="family_revoked")
    assert sorted(event["family_id"] for event in revoked) == sorted(
        [first.family_id, second.family_id]
    )
    assert all(event["detail"] == {"reason": "user_disabled"} for event in revoked)

    for session in (first, second):
        await assert_session_dead(rotor, app, gateway, session)
    await assert_session_live(rotor, gateway, bystander)
    refused = await rotor.login(app, "alice")
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_grant"


async def test_disabling_twice_records_one_user_disabled_event(rotor: Rotor, ops: Ops) -> None:
    user_id = await rotor.user("alice")
    for _ in range(2):
        response = await rotor.http.patch(
            f"/admin/users/{user_id}", json={"disabled": True}, headers=ops.headers
        )
        assert response.status_code == 200, response.text
    assert len(await get_events(rotor, ops, type="user_disabled")) == 1


async def test_enabling_again_does_not_unrevoke_the_families(
    rotor: Rotor, ops: Ops, app: RegisteredClient, gateway: RegisteredClient
) -> None:
    user_id = await rotor.user("alice")
    session = await login(rotor, app)
    disable = await rotor.http.patch(
        f"/admin/users/{user_id}", json={"disabled": True}, headers=ops.headers
    )
    assert disable.status_code == 200, disable.text
    revoked_at = (await family_rows(rotor, session.family_id))[session.family_id]["revoked_at"]

    enable = await rotor.http.patch(
        f"/admin/users/{user_id}", json={"disabled": False}, headers=ops.headers
    )
    assert enable.status_code == 200, enable.text
    assert enable.json()["disabled"] is False

    row = (await family_rows(rotor, session.family_id))[session.family_id]
    assert (row["revoked_at"], row["revoked_reason"]) == (revoked_at, "user_disabled")
    await assert_session_dead(rotor, app, gateway, session)
    fresh = await login(rotor, app)
    await assert_session_live(rotor, gateway, fresh)


@pytest.mark.parametrize(
    ("payload", "description"),
    [
        ({}, "invalid body: Object missing required field `disabled`"),
        ({"disabled": "yes"}, "invalid body: Expected `bool`, got `str` - at `$.disabled`"),
        ({"disabled": None}, "invalid body: Expected `bool`, got `null` - at `$.disabled`"),
        ({"disabled": 2}, "invalid body: Expected `bool`, got `int` - at `$.disabled`"),
        ([True], "the body must be a JSON object"),
    ],
    ids=["empty-object", "disabled-word", "disabled-null", "disabled-int", "array"],
)
async def test_patch_user_with_a_bad_body_is_400_and_changes_nothing(
    rotor: Rotor, ops: Ops, payload: Any, description: str
) -> None:
    user_id = await rotor.user("alice")
    response = await rotor.http.patch(f"/admin/users/{user_id}", json=payload, headers=ops.headers)
    assert error_of(response) == error(400, "invalid_request", description)
    assert await rotor.db.fetchval("SELECT disabled FROM users") is False


@pytest.mark.parametrize(
    ("payload", "sent"),
    [({"disabled": "true"}, "str"), ({"disabled": 1}, "int"), ({"disabled": "1"}, "str")],
    ids=["string-true", "int-1", "string-1"],
)
async def test_patch_user_refuses_booleans_of_the_wrong_json_type(
    rotor: Rotor, ops: Ops, payload: dict[str, Any], sent: str
) -> None:
    user_id = await rotor.user("alice")
    response = await rotor.http.patch(f"/admin/users/{user_id}", json=payload, headers=ops.headers)
    description = f"invalid body: Expected `bool`, got `{sent}` - at `$.disabled`"
    assert error_of(response) == error(400, "invalid_request", description)
    assert await rotor.db.fetchval("SELECT disabled FROM users") is False


async def test_password_change_revokes_families_and_swaps_the_password(
    rotor: Rotor, ops: Ops, app: RegisteredClient, gateway: RegisteredClient
) -> None:
    user_id = await rotor.user("alice")
    sessions = [await login(rotor, app), await login(rotor, app)]
    response = await rotor.http.post(
        f"/admin/users/{user_id}/password", json={"password": NEW_PASSWORD}, headers=ops.headers
    )
    assert response.status_code == 204, response.text
    assert response.content == b""

    family_ids = [session.family_id for session in sessions]
    assert await reasons(rotor, *family_ids) == dict.fromkeys(family_ids, "password_changed")
    revoked = await get_events(rotor, ops, type="family_revoked")
    assert sorted(event["family_id"] for event in revoked) == sorted(family_ids)
    assert all(event["detail"] == {"reason": "password_changed"} for event in revoked)
    for session in sessions:
        await assert_session_dead(rotor, app, gateway, session)

    old = await rotor.login(app, "alice", PASSWORD)
    assert old.status_code == 400, old.text
    assert old.json()["error"] == "invalid_grant"
    assert (await rotor.login(app, "alice", NEW_PASSWORD)).status_code == 200


@pytest.mark.parametrize(
    ("password", "refusal"), [("short", TOO_SHORT), ("y" * 1025, TOO_LONG)], ids=["5", "1025"]
)
async def test_a_refused_password_change_changes_nothing(
    rotor: Rotor,
    ops: Ops,
    app: RegisteredClient,
    gateway: RegisteredClient,
    password: str,
    refusal: tuple[int, dict[str, str]],
) -> None:
    user_id = await rotor.user("alice")
    session = await login(rotor, app)
    response = await rotor.http.post(
        f"/admin/users/{user_id}/password", json={"password": password}, headers=ops.headers
    )
    assert error_of(response) == refusal
    await assert_session_live(rotor, gateway, session)
    assert (await rotor.login(app, "alice", PASSWORD)).status_code == 200


# --------------------------------------------------------------------------- clients


async def test_create_client_shows_the_secret_once_and_it_works(rotor: Rotor, ops: Ops) -> None:
    await rotor.user("alice")
    response = await rotor.http.post(
        "/admin/clients",
        json={
            "name": "web",
            "grant_types": ["password", "refresh_token"],
            "scopes": ["read", "profile"],
            "public": False,
            "can_introspect": False,
            "is_admin": False,
        },
        headers=ops.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    client_id, secret = body["client_id"], body["client_secret"]
    assert str(uuid.UUID(client_id)) == client_id
    assert isinstance(secret, str)
    assert len(secret) >= 32

    stored = await rotor.db.fetchval(
        "SELECT secret_hash FROM clients WHERE id = $1", uuid.UUID(client_id)
    )
    assert secret.encode() not in stored

    web = RegisteredClient(client_id, secret)
    token = await rotor.login(web, "alice")
    assert token.status_code == 200, token.text
    assert token.json()["scope"] == "read profile"

    shown = await rotor.http.get(f"/admin/clients/{client_id}", headers=ops.headers)
    assert shown.status_code == 200, shown.text
    view = shown.json()
    assert not [key for key in view if "secret" in key or "hash" in key]
    assert secret not in shown.text
    assert view["client_id"] == client_id
    assert view["name"] == "web"
    assert view["grant_types"] == ["password", "refresh_token"]
    assert view["scopes"] == ["read", "profile"]
    assert (view["public"], view["can_introspect"], view["is_admin"]) == (False, False, False)


async def test_a_public_client_has_a_null_secret(rotor: Rotor, ops: Ops) -> None:
    await rotor.user("alice")
    response = await rotor.http.post(
        "/admin/clients",
        json={"name": "spa", "grant_types": ["password", "refresh_token"], "public": True},
        headers=ops.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["client_secret"] is None
    stored = await rotor.db.fetchrow(
        "SELECT public, secret_hash FROM clients WHERE id = $1", uuid.UUID(body["client_id"])
    )
    assert (stored["public"], stored["secret_hash"]) == (True, None)
    spa = RegisteredClient(body["client_id"], None)
    assert (await rotor.login(spa, "alice")).status_code == 200


async def test_client_flags_take_effect(rotor: Rotor, ops: Ops) -> None:
    response = await rotor.http.post(
        "/admin/clients",
        json={
            "name": "ops-2",
            "grant_types": ["client_credentials"],
            "can_introspect": True,
            "is_admin": True,
        },
        headers=ops.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    second = RegisteredClient(body["client_id"], body["client_secret"])
    token = await client_token(rotor, second)
    admin = await rotor.http.get("/admin/keys", headers={"Authorization": f"Bearer {token}"})
    assert admin.status_code == 200, admin.text
    assert (await introspect(rotor, second, token))["active"] is True


BAD_NAME = "name must be 1 to 200 printable characters"
UNKNOWN_GRANT = "unknown grant type(s); known: password, client_credentials, refresh_token"
PUBLIC_GRANTS = "a public client may use only the password and refresh_token grants"
PUBLIC_FLAGS = "a public client cannot introspect or be an admin"
BAD_SCOPES = "scopes must be scope tokens (RFC 6749 section 3.3)"

# Each refused body and the error_description of its 400 invalid_request.
BAD_CLIENTS: dict[str, tuple[Any, str]] = {
    "implicit": ({"name": "x", "grant_types": ["implicit"]}, UNKNOWN_GRANT),
    "authorization_code": ({"name": "x", "grant_types": ["authorization_code"]}, UNKNOWN_GRANT),
    "public-client-credentials": (
        {"name": "x", "grant_types": ["client_credentials"], "public": True},
        PUBLIC_GRANTS,
    ),
    "public-mixed": (
        {"name": "x", "grant_types": ["password", "client_credentials"], "public": True},
        PUBLIC_GRANTS,
    ),
    "name-empty": ({"name": "", "grant_types": ["client_credentials"]}, BAD_NAME),
    "name-201-chars": ({"name": "n" * 201, "grant_types": ["client_credentials"]}, BAD_NAME),
    "name-newline": ({"name": "a\nb", "grant_types": ["client_credentials"]}, BAD_NAME),
    "name-nul": ({"name": "a\x00b", "grant_types": ["client_credentials"]}, BAD_NAME),
    # RFC 7662 2.1: introspection needs an authenticated caller; so does admin.
    "public-can-introspect": (
        {"name": "x", "grant_types": ["password"], "public": True, "can_introspect": True},
        PUBLIC_FLAGS,
    ),
    "public-is-admin": (
        {"name": "x", "grant_types": ["password"], "public": True, "is_admin": True},
        PUBLIC_FLAGS,
    ),
    "scope-with-a-space": ({"name": "x", "scopes": ["bad scope"]}, BAD_SCOPES),
    "scope-empty": ({"name": "x", "scopes": ["read", ""]}, BAD_SCOPES),
    "scope-with-a-quote": ({"name": "x", "scopes": ['say"hi']}, BAD_SCOPES),
    "no-name": (
        {"grant_types": ["password"]},
        "invalid body: Object missing required field `name`",
    ),
    "grants-string": (
        {"name": "x", "grant_types": "password"},
        "invalid body: Expected `array`, got `str` - at `$.grant_types`",
    ),
    "public-word": (
        {"name": "x", "public": "no"},
        "invalid body: Expected `bool`, got `str` - at `$.public`",
    ),
    "name-int": ({"name": 7}, "invalid body: Expected `str`, got `int` - at `$.name`"),
    "array": ([{"name": "x"}], "the body must be a JSON object"),
}


async def test_create_client_refusals_are_400_and_create_nothing(rotor: Rotor, ops: Ops) -> None:
    before = await rotor.db.fetchval("SELECT count(*) FROM clients")
    answers = {}
    for case, (payload, _) in BAD_CLIENTS.items():
        response = await rotor.http.post("/admin/clients", json=payload, headers=ops.headers)
        answers[case] = error_of(response)
    assert answers == {
        case: error(400, "invalid_request", description)
        for case, (_, description) in BAD_CLIENTS.items()
    }
    assert await rotor.db.fetchval("SELECT count(*) FROM clients") == before


async def test_create_client_accepts_the_limits_the_refusals_lie_beyond(
    rotor: Rotor, ops: Ops
) -> None:
    """The control for the refusals above: a name of 200 printable characters,
    scope tokens of every allowed kind, a public client without flags."""
    name = "\u00e9 " * 99 + "zz"
    assert len(name) == 200
    scopes = ["read", "a:b/c", "!#[]~"]
    response = await rotor.http.post(
        "/admin/clients",
        json={"name": name, "grant_types": ["password"], "scopes": scopes, "public": True},
        headers=ops.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["name"], body["scopes"], body["public"]) == (name, scopes, True)
    row = await rotor.db.fetchrow(
        "SELECT name, scopes FROM clients WHERE id = $1", uuid.UUID(body["client_id"])
    )
    assert (row["name"], list(row["scopes"])) == (name, scopes)


@pytest.mark.parametrize(
    ("flag", "description"),
    [
        ({"is_admin": "true"}, "invalid body: Expected `bool`, got `str` - at `$.is_admin`"),
        ({"is_admin": 1}, "invalid body: Expected `bool`, got `int` - at `$.is_admin`"),
        ({"public": "false"}, "invalid body: Expected `bool`, got `str` - at `$.public`"),
    ],
    ids=["is_admin-string", "is_admin-int", "public-string"],
)
async def test_create_client_refuses_flags_of_the_wrong_json_type(
    rotor: Rotor, ops: Ops, flag: dict[str, Any], description: str
) -> None:
    before = await rotor.db.fetchval("SELECT count(*) FROM clients")
    payload = {"name": "x", "grant_types": ["client_credentials"], **flag}
    response = await rotor.http.post("/admin/clients", json=payload, headers=ops.headers)
    assert error_of(response) == error(400, "invalid_request", description)
    assert await rotor.db.fetchval("SELECT count(*) FROM clients") == before


async def test_create_client_with_invalid_json_is_400(rotor: Rotor, ops: Ops) -> None:
    before = await rotor.db.fetchval("SELECT count(*) FROM clients")
    response = await rotor.http.post(
        "/admin/clients",
        content=b'{"name": ',
        headers={**ops.headers, "Content-Type": "application/json"},
    )
    assert error_of(response) == error(400, "invalid_request", "the body is not valid JSON")
    assert await rotor.db.fetchval("SELECT count(*) FROM clients") == before


@pytest.mark.parametrize(
    ("method", "suffix"), [("GET", ""), ("POST", "/revoke")], ids=["get", "revoke"]
)
@pytest.mark.parametrize("subject", [ZERO_ID, "not-a-uuid"], ids=["unknown", "not-a-uuid"])
@pytest.mark.parametrize(
    ("kind", "unknown"), [("clients", "no such client"), ("families", "no such family")]
)
async def test_client_and_family_routes_answer_404_for_unknown_and_400_for_malformed_ids(
    rotor: Rotor, ops: Ops, kind: str, unknown: str, subject: str, method: str, suffix: str
) -> None:
    expected = error(404, "not_found", unknown) if subject == ZERO_ID else NOT_A_UUID
    response = await rotor.http.request(
        method, f"/admin/{kind}/{subject}{suffix}", headers=ops.headers
    )
    assert error_of(response) == expected


# --------------------------------------------------------------------------- families


async def test_families_list_newest_first_with_their_fields(
    rotor: Rotor, ops: Ops, app: RegisteredClient
) -> None:
    user_id = await rotor.user("alice")
    older = await rotate(rotor, app, await login(rotor, app))
    newer = await login(rotor, app)
    response = await rotor.http.get(f"/admin/users/{user_id}/families", headers=ops.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["next"] is None
    items = body["items"]
    assert [item["id"] for item in items] == [newer.family_id, older.family_id]
    rows = {
        str(row["id"]): row
        for row in await rotor.db.fetch(
            "SELECT id, created_at, last_rotated_at, expires_at FROM token_families"
        )
    }
    for item in items:
        assert set(item) >= FAMILY_KEYS
        row = rows[item["id"]]
        assert item["client_id"] == app.client_id
        assert (item["status"], item["revoked_reason"]) == ("active", None)
        assert moment(item["created_at"]) == row["created_at"]
        assert moment(item["expires_at"]) == row["expires_at"]
        assert item["last_rotated_at"] == utc(row["last_rotated_at"])
    assert items[0]["last_rotated_at"] is None
    assert moment(items[1]["last_rotated_at"]) == rows[older.family_id]["last_rotated_at"]


async def test_family_status_reads_revoked_before_expired_before_active(
    rotor: Rotor, ops: Ops, app: RegisteredClient
) -> None:
    user_id = await rotor.user("alice")
    active, revoked, revoked_expired, absolute, idled, both = [
        await login(rotor, app) for _ in range(6)
    ]
    for session in (revoked, revoked_expired):
        response = await rotor.http.post(
            f"/admin/families/{session.family_id}/revoke", headers=ops.headers
        )
        assert response.json() == {"revoked": 1}
    await rotor.db.execute(
        "UPDATE token_families SET expires_at = now() - interval '1 hour' "
        "WHERE id = ANY($1::uuid[])",
        [uuid.UUID(s.family_id) for s in (revoked_expired, absolute, both)],
    )
    await rotor.db.execute(
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 minute' "
        "WHERE family_id = ANY($1::uuid[])",
        [uuid.UUID(s.family_id) for s in (idled, both)],
    )
    expected = {
        active.family_id: ("active", None),
        revoked.family_id: ("revoked", "admin"),
        revoked_expired.family_id: ("revoked", "admin"),
        absolute.family_id: ("expired", None),
        idled.family_id: ("expired", None),
        both.family_id: ("expired", None),
    }
    listed = await rotor.http.get(f"/admin/users/{user_id}/families", headers=ops.headers)
    assert listed.status_code == 200, listed.text
    assert {
        item["id"]: (item["status"], item["revoked_reason"]) for item in listed.json()["items"]
    } == expected
    for family_id, state in expected.items():
        one = await rotor.http.get(f"/admin/families/{family_id}", headers=ops.headers)
        assert (one.json()["status"], one.json()["revoked_reason"]) == state


async def test_families_page_through_every_family_once_newest_first(
    rotor: Rotor, ops: Ops, app: RegisteredClient
) -> None:
    user_id = await rotor.user("alice")
    made = [(await login(rotor, app)).family_id for _ in range(5)]
    path = f"/admin/users/{user_id}/families"
    pages = await walk(rotor, ops, path, limit=2)
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [item["id"] for page in pages for item in page] == made[::-1]
    # Exactly a page's worth left: the last full page says there is no more.
    assert [len(page) for page in await walk(rotor, ops, path, limit=5)] == [5]
    assert [len(page) for page in await walk(rotor, ops, path, limit=4)] == [4, 1]


async def test_a_family_made_while_paging_neither_repeats_nor_skips_older_ones(
    rotor: Rotor, ops: Ops, app: RegisteredClient
) -> None:
    user_id = await rotor.user("alice")
    made = [(await login(rotor, app)).family_id for _ in range(4)]
    path = f"/admin/users/{user_id}/families"
    first = await rotor.http.get(path, params={"limit": 2}, headers=ops.headers)
    newer = await login(rotor, app)
    second = await rotor.http.get(
        path, params={"limit": 2, "cursor": first.json()["next"]}, headers=ops.headers
    )
    assert second.json()["next"] is None
    seen = [item["id"] for item in first.json()["items"] + second.json()["items"]]
    assert seen == made[::-1]
    assert newer.family_id not in seen


async def test_families_paging_survives_identical_creation_times(
    rotor: Rotor, ops: Ops, app: RegisteredClient
) -> None:
    user_id = await rotor.user("alice")
    made = [(await login(rotor, app)).family_id for _ in range(5)]
    await rotor.db.execute("UPDATE token_families SET created_at = '2030-01-01T00:00:00Z'")
    pages = await walk(rotor, ops, f"/admin/users/{user_id}/families", limit=2)
    seen = [item["id"] for page in pages for item in page]
    assert [len(page) for page in pages] == [2, 2, 1]
    assert sorted(seen) == sorted(made)


LIMIT_RANGE = "limit must be between 1 and 500"
LIMIT_NOT_INTEGER = "invalid or missing field(s): limit"
FOREIGN_CURSOR = "cursor is not one this server issued"

# Each refused query and the error_description of its 400 invalid_request.
BAD_PAGING: dict[str, tuple[dict[str, str], str]] = {
    "limit-0": ({"limit": "0"}, LIMIT_RANGE),
    "limit-501": ({"limit": "501"}, LIMIT_RANGE),
    "limit-negative": ({"limit": "-1"}, LIMIT_RANGE),
    "limit-abc": ({"limit": "abc"}, LIMIT_NOT_INTEGER),
    "limit-float": ({"limit": "1.5"}, LIMIT_NOT_INTEGER),
    "cursor-garbage": ({"cursor": "garbage"}, FOREIGN_CURSOR),
    "cursor-not-base64": ({"cursor": "!!!!"}, FOREIGN_CURSOR),
    "cursor-of-another-list": ({"cursor": b64encode(b"[1]")}, FOREIGN_CURSOR),
    "cursor-bad-values": (
        {"cursor": b64encode(b'["yesterday", "not-a-uuid"]')},
        FOREIGN_CURSOR,
    ),
}


@pytest.mark.parametrize("case", BAD_PAGING)
async def test_families_list_refuses_bad_limits_and_cursors(
    rotor: Rotor, ops: Ops, case: str
) -> None:
    params, description = BAD_PAGING[case]
    user_id = await rotor.user("alice")
    response = await rotor.http.get(
        f"/admin/users/{user_id}/families", params=params, headers=ops.headers
    )
    assert error_of(response) == error(400, "invalid_request", description)


@pytest.mark.parametrize("limit", ["1", "500"])
async def test_families_list_accepts_the_limits_at_the_edges(
    rotor: Rotor, ops: Ops, limit: str
) -> None:
    user_id = await rotor.user("alice")
    response = await rotor.http.get(
        f"/admin/users/{user_id}/families", params={"limit": limit}, headers=ops.headers
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "next": None}


async def test_family_detail_has_the_chain_oldest_first_and_no_token(
    rotor: Rotor, ops: Ops, app: RegisteredClient
) -> None:
    await rotor.user("alice")
    first = await login(rotor, app)
    second = await rotate(rotor, app, first)
    third = await rotate(rotor, app, second)
    response = await rotor.http.get(f"/admin/families/{first.family_id}", headers=ops.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= FAMILY_KEYS | {"chain"}
    assert (body["id"], body["client_id"], body["status"]) == (
        first.family_id,
        app.client_id,
        "active",
    )
    rows = await rotor.db.fetch(
        "SELECT generation, issued_at, spent_at, expires_at FROM refresh_tokens "
        "WHERE family_id = $1 ORDER BY generation",
        uuid.UUID(first.family_id),
    )
    assert [set(link) for link in body["chain"]] == [CHAIN_KEYS] * 3
    assert body["chain"] == [
        {
            "generation": row["generation"],
            "issued_at": utc(row["issued_at"]),
            "spent_at": utc(row["spent_at"]),
            "expires_at": utc(row["expires_at"]),
        }
        for row in rows
    ]
    assert [link["generation"] for link in body["chain"]] == [1, 2, 3]
    assert [link["spent_at"] is None for link in body["chain"]] == [False, False, True]
    family = await rotor.db.fetchrow(
        "SELECT last_rotated_at FROM token_families WHERE id = $1", uuid.UUID(first.family_id)
    )
    assert moment(body["last_rotated_at"]) == family["last_rotated_at"]
    assert not keys_anywhere(body) & {"token", "token_hash", "refresh_token", "hash"}
    for session in (first, second, third):
        assert session.refresh not in response.text


# --------------------------------------------------------------------------- revocation


async def test_revoke_one_family_counts_newly_revoked_families(
    rotor: Rotor, ops: Ops, app: RegisteredClient, gateway: RegisteredClient
) -> None:
    await rotor.user("alice")
    target, other = await login(rotor, app), await login(rotor, app)
    headers = {**ops.headers, "User-Agent": "ops-console/1.0"}
    first = await rotor.http.post(f"/admin/families/{target.family_id}/revoke", headers=headers)
    assert first.status_code == 200, first.text
    assert first.json() == {"revoked": 1}
    again = await rotor.http.post(f"/admin/families/{target.family_id}/revoke", headers=headers)
    assert again.status_code == 200, again.text
    assert again.json() == {"revoked": 0}

    assert await reasons(rotor, target.family_id, other.family_id) == {
        target.family_id: "admin",
        other.family_id: None,
    }
    events = await get_events(rotor, ops, type="family_revoked")
    assert [(e["family_id"], e["detail"], e["user_agent"]) for e in events] == [
        (target.family_id, {"reason": "admin"}, "ops-console/1.0")
    ]
    await assert_session_dead(rotor, app, gateway, target)
    await assert_session_live(rotor, gateway, other)


async def test_revoke_a_user_counts_only_live_families(
    rotor: Rotor, ops: Ops, app: RegisteredClient, gateway: RegisteredClient
) -> None:
    user_id = await rotor.user("alice")
    await rotor.user("bob")
    live = [await login(rotor, app) for _ in range(3)]
    logged_out = await login(rotor, app)
    bystander = await login(rotor, app, "bob")
    logout = await rotor.http.post("/revoke", data={"token": logged_out.refresh}, headers=app.auth)
    assert logout.status_code == 200, logout.text

    response = await rotor.http.post(f"/admin/users/{user_id}/revoke", headers=ops.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"revoked": 3}

    expected = {s.family_id: "admin" for s in live}
    expected |= {logged_out.family_id: "logout", bystander.family_id: None}
    assert await reasons(rotor, *expected) == expected
    by_admin = await get_events(rotor, ops, type="family_revoked", user_id=user_id)
    admin_events = [e["family_id"] for e in by_admin if e["detail"] == {"reason": "admin"}]
    assert sorted(admin_events) == sorted(s.family_id for s in live)
    assert len(by_admin) == 4  # three by the operator, one by the logout
    for session in live:
        await assert_session_dead(rotor, app, gateway, session)
    await assert_session_live(rotor, gateway, bystander)
    again = await rotor.http.post(f"/admin/users/{user_id}/revoke", headers=ops.headers)
    assert again.json() == {"revoked": 0}


async def test_revoke_a_client_revokes_its_families_only(
    rotor: Rotor, ops: Ops, gateway: RegisteredClient
) -> None:
    await rotor.user("alice")
    await rotor.user("bob")
    target = await rotor.client(name="target")
    other = await rotor.client(name="other")
    doomed = [await login(rotor, target, "alice"), await login(rotor, target, "bob")]
    spared = await login(rotor, other, "alice")

    response = await rotor.http.post(
        f"/admin/clients/{target.client_id}/revoke", headers=ops.headers
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"revoked": 2}

    expected = {s.family_id: "client_revoked" for s in doomed} | {spared.family_id: None}
    assert await reasons(rotor, *expected) == expected
    events = await get_events(rotor, ops, type="family_revoked")
    assert sorted(e["family_id"] for e in events) == sorted(s.family_id for s in doomed)
    assert all(e["detail"] == {"reason": "client_revoked"} for e in events)
    assert all(e["client_id"] == target.client_id for e in events)
    for session in doomed:
        await assert_session_dead(rotor, target, gateway, session)
    await assert_session_live(rotor, gateway, spared)
    # The client itself is not disabled: it can start new sessions.
    fresh = await login(rotor, target, "alice")
    await assert_session_live(rotor, gateway, fresh)


# --------------------------------------------------------------------------- events


async def test_events_are_newest_first_with_exactly_the_contract_keys(
    rotor: Rotor, ops: Ops, app: RegisteredClient
) -> None:
    user_id = await rotor.user("alice")
    wrong = await rotor.login(app, "alice", "not the password")
    assert wrong.status_code == 400, wrong.text
    unknown = await rotor.login(app, "nobody", "not the password")
    assert unknown.status_code == 400, unknown.text
    session = await login(rotor, app)
    revoked = await rotor.http.post(
        f"/admin/families/{session.family_id}/revoke", headers=ops.headers
    )
    assert revoked.status_code == 200, revoked.text
    disabled = await rotor.http.patch(
        f"/admin/users/{user_id}", json={"disabled": True}, headers=ops.headers
    )
    assert disabled.status_code == 200, disabled.text

    items = await get_events(rotor, ops)
    assert [set(item) for item in items] == [EVENT_KEYS] * len(items)
    ids = [
        str(row["id"])
        for row in await rotor.db.fetch("SELECT id FROM security_events ORDER BY seq DESC")
    ]
    assert [item["id"] for item in items] == ids
    assert [item["type"] for item in items] == [
        "user_disabled",
        "family_revoked",
        "login_failed",
        "login_failed",
    ]
    times = [moment(item["at"]) for item in items]
    assert times == sorted(times, reverse=True)

    disabled_event, family_event, unknown_event, failed_event = items
    assert (disabled_event["user_id"], disabled_event["family_id"]) == (user_id, None)
    assert (family_event["family_id"], family_event["user_id"]) == (session.family_id, user_id)
    assert family_event["detail"] == {"reason": "admin"}
    assert (failed_event["user_id"], failed_event["client_id"]) == (user_id, app.client_id)
    assert (unknown_event["user_id"], unknown_event["client_id"]) == (None, app.client_id)
    assert "not the password" not in json.dumps(items)


async def test_a_reuse_detected_event_names_the_generation_and_its_age(
    rotor: Rotor, ops: Ops, app: RegisteredClient
) -> None:
    user_id = await rotor.user("alice")
    first = await login(rotor, app)
    await rotate(rotor, app, first)
    await rotor.db.execute(
        "UPDATE refresh_tokens SET spent_at = spent_at - interval '100 seconds' "
        "WHERE family_id = $1 AND generation = 1",
        uuid.UUID(first.family_id),
    )
    replay = await refresh(rotor, app, first.refresh)
    assert replay.status_code == 400, replay.text
    assert replay.json()["error"] == "invalid_grant"

    reuse = await get_events(rotor, ops, type="reuse_detected")
    assert len(reuse) == 1
    event = reuse[0]
    assert (event["user_id"], event["client_id"], event["family_id"]) == (
        user_id,
        app.client_id,
        first.family_id,
    )
    assert set(event["detail"]) == {"generation", "seconds_since_spent"}
    assert event["detail"]["generation"] == 1
    assert 100 <= event["detail"]["seconds_since_spent"] < 130
    revoked = await get_events(rotor, ops, type="family_revoked", family_id=first.family_id)
    assert [e["detail"] for e in revoked] == [{"reason": "reuse_detected"}]


async def test_event_filters_narrow_exactly(rotor: Rotor, ops: Ops, app: RegisteredClient) -> None:
    alice = await rotor.user("alice")
    bob = await rotor.user("bob")
    for username in ("alice", "bob"):
        assert (await rotor.login(app, username, "not the password")).status_code == 400
    alice_session = await login(rotor, app, "alice")
    bob_session = await login(rotor, app, "bob")
    for session in (alice_session, bob_session):
        response = await rotor.http.post(
            f"/admin/families/{session.family_id}/revoke", headers=ops.headers
        )
        assert response.json() == {"revoked": 1}
    await rotor.db.execute(
        "UPDATE security_events SET at = now() - interval '1 hour' "
        "WHERE type = 'login_failed' AND user_id = $1",
        uuid.UUID(alice),
    )

    async def ids(sql: str, *args: Any) -> list[str]:
        rows = await rotor.db.fetch(
            f"SELECT id FROM security_events {sql} ORDER BY seq DESC", *args
        )
        return [str(row["id"]) for row in rows]

    def listed(items: list[dict[str, Any]]) -> list[str]:
        return [item["id"] for item in items]

    assert len(await ids("")) == 4
    assert listed(await get_events(rotor, ops, type="login_failed")) == await ids(
        "WHERE type = 'login_failed'"
    )
    assert len(await get_events(rotor, ops, type="login_failed")) == 2
    assert listed(await get_events(rotor, ops, user_id=alice)) == await ids(
        "WHERE user_id = $1", uuid.UUID(alice)
    )
    assert len(await get_events(rotor, ops, user_id=alice)) == 2
    assert listed(await get_events(rotor, ops, family_id=bob_session.family_id)) == await ids(
        "WHERE family_id = $1", uuid.UUID(bob_session.family_id)
    )
    assert len(await get_events(rotor, ops, family_id=bob_session.family_id)) == 1
    assert listed(await get_events(rotor, ops, type="family_revoked", user_id=bob)) == await ids(
        "WHERE type = 'family_revoked' AND user_id = $1", uuid.UUID(bob)
    )
    assert await get_events(rotor, ops, type="key_rotated") == []

    half_hour_ago = datetime.now(UTC) - timedelta(minutes=30)
    recent = await ids("WHERE at >= now() - interval '30 minutes'")
    assert len(recent) == 3
    as_z = half_hour_ago.isoformat().replace("+00:00", "Z")
    as_offset = half_hour_ago.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert listed(await get_events(rotor, ops, since=as_z)) == recent
    assert listed(await get_events(rotor, ops, since=as_offset)) == recent
    assert listed(await get_events(rotor, ops, since=as_z, user_id=alice)) == await ids(
        "WHERE at >= now() - interval '30 minutes' AND user_id = $1", uuid.UUID(alice)
    )


EVENT_TYPE_LIST = (
    "type must be one of reuse_detected, family_revoked, login_failed, login_locked, "
    "key_rotated, key_revoked, user_disabled, dpop_mismatch"
)
NOT_A_TIME = "since must be an RFC 3339 time"

# Each refused filter and the error_description of its 400 invalid_request.
BAD_EVENT_FILTERS: dict[str, tuple[dict[str, str], str]] = {
    "type-unknown": ({"type": "nope"}, EVENT_TYPE_LIST),
    "type-case": ({"type": "LOGIN_FAILED"}, EVENT_TYPE_LIST),
    "user-id": ({"user_id": "abc"}, "user_id must be a UUID"),
    "family-id": ({"family_id": "abc"}, "family_id must be a UUID"),
    "since-word": ({"since": "yesterday"}, NOT_A_TIME),
    "since-month-13": ({"since": "2024-13-01T00:00:00Z"}, NOT_A_TIME),
    "since-no-offset": (
        {"since": "2024-01-01T00:00:00"},
        "since must carry a time zone (RFC 3339)",
    ),
    "limit-0": ({"limit": "0"}, LIMIT_RANGE),
    "limit-501": ({"limit": "501"}, LIMIT_RANGE),
    "limit-negative": ({"limit": "-1"}, LIMIT_RANGE),
    "limit-abc": ({"limit": "abc"}, LIMIT_NOT_INTEGER),
    "cursor-garbage": ({"cursor": "garbage"}, FOREIGN_CURSOR),
    "cursor-of-another-list": (
        {"cursor": b64encode(b'["2024-01-01T00:00:00+00:00", "x"]')},
        FOREIGN_CURSOR,
    ),
    # Values Python holds but PostgreSQL cannot: refused before the database.
    "since-after-9999-in-utc": ({"since": "9999-12-31T23:59:59-01:00"}, "since is out of range"),
    "cursor-beyond-bigint": ({"cursor": b64encode(b"[9223372036854775808]")}, FOREIGN_CURSOR),
}


async def test_event_list_refuses_bad_filters(rotor: Rotor, ops: Ops) -> None:
    answers = {}
    for case, (params, _) in BAD_EVENT_FILTERS.items():
        response = await rotor.http.get("/admin/events", params=params, headers=ops.headers)
        answers[case] = error_of(response)
    assert answers == {
        case: error(400, "invalid_request", description)
        for case, (_, description) in BAD_EVENT_FILTERS.items()
    }


async def test_events_page_through_every_event_once(
    rotor: Rotor, ops: Ops, app: RegisteredClient
) -> None:
    await rotor.user("alice")
    for _ in range(5):
        assert (await rotor.login(app, "alice", "not the password")).status_code == 400
    pages = await walk(rotor, ops, "/admin/events", limit=2)
    assert [len(page) for page in pages] == [2, 2, 1]
    rows = await rotor.db.fetch("SELECT id FROM security_events ORDER BY seq DESC")
    assert [item["id"] for page in pages for item in page] == [str(row["id"]) for row in rows]
    assert len(rows) == 5


async def test_event_list_pages_by_50_by_default(rotor: Rotor, ops: Ops) -> None:
    await rotor.db.execute(
        "INSERT INTO security_events (id, type, detail) "
        "SELECT gen_random_uuid(), 'login_failed', '{}'::jsonb FROM generate_series(1, 51)"
    )
    first = await rotor.http.get("/admin/events", headers=ops.headers)
    assert first.status_code == 200, first.text
    assert len(first.json()["items"]) == 50
    cursor = first.json()["next"]
    assert isinstance(cursor, str)
    second = await rotor.http.get("/admin/events", params={"cursor": cursor}, headers=ops.headers)
    assert second.status_code == 200, second.text
    assert (len(second.json()["items"]), second.json()["next"]) == (1, None)
    seen = {item["id"] for item in first.json()["items"] + second.json()["items"]}
    assert len(seen) == 51


async def test_a_lockout_is_a_login_locked_event_not_a_login_failed_one(
    settings: Settings, db: asyncpg.Connection
) -> None:
    configured = settings.with_overrides(login_max_failures=1)
    async with AsyncTestClient(create_app(configured)) as http:
        rotor = Rotor(http, configured, db)
        user_id = await rotor.user("alice")
        app = await rotor.client(name="app")
        admin = await rotor.client(grants=["client_credentials"], scopes=[], admin=True)
        ops = Ops(admin, await client_token(rotor, admin))
        failed = await rotor.login(app, "alice", "not the password")
        assert failed.status_code == 400, failed.text
        locked = await rotor.login(app, "alice", PASSWORD)
        assert locked.status_code == 429, locked.text
        items = await get_events(rotor, ops)
        assert [item["type"] for item in items] == ["login_locked", "login_failed"]
        assert items[0]["client_id"] == app.client_id
        assert items[1]["user_id"] == user_id
