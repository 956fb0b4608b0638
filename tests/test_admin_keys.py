"""Signing keys for operators (CONTRACT 2 "Signing keys", 3.6, 4): listing,
rotation, revocation, their effect on signing, the JWKS and introspection,
and the `rotor rotate-keys` command seen from another running process.

The app under test runs in the AsyncTestClient's portal thread (its own event
loop), so calls into its services go through that portal. Time never passes:
"long ago" is made by moving timestamps back with SQL.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.config import Settings
from service.tokens.pruning import prune
from tests.conftest import TEST_SECRET
from tests.helpers import Ops, RegisteredClient, Rotor, client_token, operator

KEY_KEYS = {"kid", "alg", "state", "created_at", "activated_at", "retired_at"}
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "private_box", "private_jwk", "private"}
CLI_DEADLINE = 5.0
YOUNG_NEXT_KEY = {
    "error": "conflict",
    "error_description": (
        "the next key has been published for less than 300 s (ROTOR_JWKS_MAX_AGE); "
        "caches may not know it yet: retry later or force"
    ),
}


# --------------------------------------------------------------------------- helpers


@dataclass
class Keys:
    """The kids by state, read from the database."""

    active: str
    next: str
    retired: list[str]
    revoked: list[str]
    removed: list[str]


def b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def kid_of(token: str) -> str:
    header: dict[str, Any] = json.loads(b64decode(token.split(".")[0]))
    return str(header["kid"])


def invalid_request(description: str) -> dict[str, str]:
    return {"error": "invalid_request", "error_description": description}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def keys_in_db(db: asyncpg.Connection) -> Keys:
    rows = await db.fetch("SELECT kid, state FROM signing_keys ORDER BY created_at, kid")
    by_state: dict[str, list[str]] = {}
    for row in rows:
        by_state.setdefault(row["state"], []).append(row["kid"])
    assert len(by_state.get("active", [])) == 1, by_state
    assert len(by_state.get("next", [])) == 1, by_state
    return Keys(
        by_state["active"][0],
        by_state["next"][0],
        by_state.get("retired", []),
        by_state.get("revoked", []),
        by_state.get("removed", []),
    )


async def snapshot(db: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT kid, state, created_at, activated_at, retired_at, revoked_at, removed_at "
        "FROM signing_keys ORDER BY kid"
    )
    return [tuple(row) for row in rows]


async def jwks_kids(rotor: Rotor) -> set[str]:
    response = await rotor.http.get("/.well-known/jwks.json")
    assert response.status_code == 200, response.text
    return {key["kid"] for key in response.json()["keys"]}


async def login_token(rotor: Rotor, client: RegisteredClient) -> str:
    response = await rotor.login(client)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def introspect(rotor: Rotor, gateway: RegisteredClient, token: str) -> dict[str, Any]:
    response = await rotor.http.post("/introspect", data={"token": token}, headers=gateway.auth)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def events_of(rotor: Rotor, ops: Ops, kind: str) -> list[dict[str, Any]]:
    response = await rotor.http.get("/admin/events", params={"type": kind}, headers=ops.headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def reload_ring(rotor: Rotor) -> None:
    """The app's key ring reloads now (in the app's own event loop)."""
    rotor.http.blocking_portal.call(rotor.http.app.state.services.keys.reload)


def keys_anywhere(document: Any) -> set[str]:
    if isinstance(document, dict):
        found = set(document)
        for value in document.values():
            found |= keys_anywhere(value)
        return found
    if isinstance(document, list):
        return set().union(*(keys_anywhere(item) for item in document)) if document else set()
    return set()


@pytest.fixture
async def ops(rotor: Rotor) -> Ops:
    return await operator(rotor)


@pytest.fixture
async def app(rotor: Rotor) -> RegisteredClient:
    await rotor.user()
    return await rotor.client(name="app")


@pytest.fixture
async def gateway(rotor: Rotor) -> RegisteredClient:
    return await rotor.client(grants=[], scopes=[], introspect=True, name="gateway")


async def rotate(rotor: Rotor, ops: Ops, body: Any = None) -> Any:
    if body is None:
        return await rotor.http.post("/admin/keys/rotate", headers=ops.headers)
    return await rotor.http.post("/admin/keys/rotate", json=body, headers=ops.headers)


# --------------------------------------------------------------------------- listing


async def test_keys_list_one_active_and_one_next_without_private_material(
    rotor: Rotor, ops: Ops
) -> None:
    response = await rotor.http.get("/admin/keys", headers=ops.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items", "next"}
    assert body["next"] is None
    items = body["items"]
    assert [set(item) for item in items] == [KEY_KEYS, KEY_KEYS]
    assert sorted(item["state"] for item in items) == ["active", "next"]
    assert not keys_anywhere(body) & PRIVATE_MEMBERS
    assert "private" not in response.text

    keys = await keys_in_db(rotor.db)
    by_kid = {item["kid"]: item for item in items}
    assert set(by_kid) == {keys.active, keys.next}
    active, upcoming = by_kid[keys.active], by_kid[keys.next]
    assert (active["state"], active["alg"], active["retired_at"]) == ("active", "ES256", None)
    assert active["activated_at"].endswith("Z")
    assert active["created_at"].endswith("Z")
    assert (upcoming["state"], upcoming["activated_at"], upcoming["retired_at"]) == (
        "next",
        None,
        None,
    )


async def test_keys_list_pages(rotor: Rotor, ops: Ops) -> None:
    force = await rotate(rotor, ops, {"force": True})
    assert force.status_code == 200, force.text
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        response = await rotor.http.get("/admin/keys", params=params, headers=ops.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) == 1
        seen += [item["kid"] for item in body["items"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert pages == 3
    kids = await rotor.db.fetch("SELECT kid FROM signing_keys")
    assert sorted(seen) == sorted(row["kid"] for row in kids)
    newest = await rotor.db.fetchval("SELECT kid FROM signing_keys WHERE state = 'next'")
    assert seen[0] == newest


@pytest.mark.parametrize(
    ("params", "description"),
    [
        ({"limit": "0"}, "limit must be between 1 and 500"),
        ({"limit": "501"}, "limit must be between 1 and 500"),
        ({"limit": "abc"}, "invalid or missing field(s): limit"),
        ({"cursor": "garbage"}, "cursor is not one this server issued"),
    ],
)
async def test_keys_list_refuses_bad_paging(
    rotor: Rotor, ops: Ops, params: dict[str, str], description: str
) -> None:
    response = await rotor.http.get("/admin/keys", params=params, headers=ops.headers)
    assert (response.status_code, response.json()) == (400, invalid_request(description))


# --------------------------------------------------------------------------- rotation


@pytest.mark.parametrize("body", [None, {}, {"force": False}])
async def test_rotation_of_a_young_next_key_is_409_and_changes_nothing(
    rotor: Rotor, ops: Ops, app: RegisteredClient, body: Any
) -> None:
    before = await snapshot(rotor.db)
    keys = await keys_in_db(rotor.db)
    assert rotor.settings.jwks_max_age == 300
    response = await rotate(rotor, ops, body)
    assert (response.status_code, response.json()) == (409, YOUNG_NEXT_KEY)
    assert await snapshot(rotor.db) == before
    assert await events_of(rotor, ops, "key_rotated") == []
    assert kid_of(await login_token(rotor, app)) == keys.active


async def test_rotation_with_no_next_key_makes_and_keeps_one_and_answers_409(
    rotor: Rotor, ops: Ops
) -> None:
    """Reached only if the next key's row went missing: the new next key must
    survive the 409 that asks to wait, or every retry would answer the same."""
    await rotor.db.execute("DELETE FROM signing_keys WHERE state = 'next'")
    response = await rotate(rotor, ops, {"force": True})
    assert (response.status_code, response.json()) == (
        409,
        {
            "error": "conflict",
            "error_description": "there was no next key; one was made: rotate again later",
        },
    )
    made = await rotor.db.fetchval("SELECT count(*) FROM signing_keys WHERE state = 'next'")
    assert made == 1
    assert (await rotate(rotor, ops, {"force": True})).status_code == 200


@pytest.mark.parametrize(
    ("body", "description"),
    [
        pytest.param(b"{not json", "the body is not valid JSON", id="not-json"),
        pytest.param(
            b'{"force": "yes"}',
            "invalid body: Expected `bool`, got `str` - at `$.force`",
            id="force-word",
        ),
        pytest.param(
            b'{"force": null}',
            "invalid body: Expected `bool`, got `null` - at `$.force`",
            id="force-null",
        ),
        pytest.param(b"[true]", "the body must be a JSON object", id="array"),
        pytest.param(
            b'{"force": true, "force": false}',
            "force is repeated in the JSON body",
            id="force-repeated",
        ),
    ],
)
async def test_rotation_with_a_bad_body_is_400_and_changes_nothing(
    rotor: Rotor, ops: Ops, body: bytes, description: str
) -> None:
    before = await snapshot(rotor.db)
    headers = {**ops.headers, "Content-Type": "application/json"}
    response = await rotor.http.post("/admin/keys/rotate", content=body, headers=headers)
    assert (response.status_code, response.json()) == (400, invalid_request(description))
    assert await snapshot(rotor.db) == before


@pytest.mark.parametrize(
    ("body", "sent"), [({"force": "true"}, "str"), ({"force": 1}, "int")], ids=["string", "int"]
)
async def test_rotation_refuses_a_force_of_the_wrong_json_type(
    rotor: Rotor, ops: Ops, body: dict[str, Any], sent: str
) -> None:
    before = await snapshot(rotor.db)
    response = await rotate(rotor, ops, body)
    description = f"invalid body: Expected `bool`, got `{sent}` - at `$.force`"
    assert (response.status_code, response.json()) == (400, invalid_request(description))
    assert await snapshot(rotor.db) == before


async def test_forced_rotation_promotes_next_retires_active_and_makes_a_new_next(
    rotor: Rotor, ops: Ops, app: RegisteredClient, gateway: RegisteredClient
) -> None:
    before = await keys_in_db(rotor.db)
    old_user_token = await login_token(rotor, app)
    assert kid_of(old_user_token) == before.active

    response = await rotate(rotor, ops, {"force": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == KEY_KEYS
    assert (body["kid"], body["state"], body["alg"], body["retired_at"]) == (
        before.next,
        "active",
        "ES256",
        None,
    )
    assert body["activated_at"].endswith("Z")

    after = await keys_in_db(rotor.db)
    assert after.active == before.next
    assert after.retired == [before.active]
    assert after.next not in (before.active, before.next)
    retired_at = await rotor.db.fetchval(
        "SELECT retired_at FROM signing_keys WHERE kid = $1", before.active
    )
    assert retired_at is not None
    listed = await rotor.http.get("/admin/keys", headers=ops.headers)
    states = {item["kid"]: item["state"] for item in listed.json()["items"]}
    assert states == {before.active: "retired", before.next: "active", after.next: "next"}
    retired_view = next(i for i in listed.json()["items"] if i["kid"] == before.active)
    assert retired_view["retired_at"].endswith("Z")
    assert body in listed.json()["items"]  # the new active key, as listed

    rotated = await events_of(rotor, ops, "key_rotated")
    assert len(rotated) == 1

    # The rotating process signs with the new key at once.
    assert kid_of(await login_token(rotor, app)) == before.next
    # Tokens of the retired key stay valid until they expire.
    assert (await introspect(rotor, gateway, old_user_token))["active"] is True
    assert (await introspect(rotor, gateway, ops.token))["active"] is True
    assert (await rotor.verify(old_user_token)).claims["sub"]
    assert await jwks_kids(rotor) == {before.active, before.next, after.next}
    published = (await rotor.http.get("/.well-known/jwks.json")).json()["keys"]
    assert not keys_anywhere(published) & PRIVATE_MEMBERS


@pytest.mark.parametrize(("age", "status"), [(290, 409), (310, 200)])
async def test_rotation_without_force_waits_for_jwks_max_age(
    rotor: Rotor, ops: Ops, age: int, status: int
) -> None:
    assert rotor.settings.jwks_max_age == 300
    await rotor.db.execute(
        "UPDATE signing_keys SET created_at = now() - make_interval(secs => $1) "
        "WHERE state = 'next'",
        age,
    )
    before = await keys_in_db(rotor.db)
    response = await rotate(rotor, ops)
    assert response.status_code == status, response.text
    if status == 409:
        assert response.json() == YOUNG_NEXT_KEY
    after = await keys_in_db(rotor.db)
    assert after.active == (before.next if status == 200 else before.active)


async def test_rotation_without_force_with_jwks_max_age_zero(
    settings: Settings, db: asyncpg.Connection
) -> None:
    configured = settings.with_overrides(jwks_max_age=0)
    async with AsyncTestClient(create_app(configured)) as http:
        rotor = Rotor(http, configured, db)
        client = await rotor.client(grants=["client_credentials"], scopes=[], admin=True)
        ops = Ops(client, await client_token(rotor, client))
        before = await keys_in_db(db)
        response = await rotate(rotor, ops)
        assert response.status_code == 200, response.text
        assert response.json()["kid"] == before.next
        assert (await keys_in_db(db)).retired == [before.active]
        assert len(await events_of(rotor, ops, "key_rotated")) == 1


async def test_a_retired_key_leaves_the_jwks_once_its_tokens_have_expired(
    rotor: Rotor, ops: Ops
) -> None:
    before = await keys_in_db(rotor.db)
    assert (await rotate(rotor, ops, {"force": True})).status_code == 200
    after = await keys_in_db(rotor.db)
    ttl = rotor.settings.access_token_ttl

    # Retired a little less than a token lifetime ago: still published.
    await rotor.db.execute(
        "UPDATE signing_keys SET retired_at = now() - make_interval(secs => $2) WHERE kid = $1",
        before.active,
        ttl - 10,
    )
    reload_ring(rotor)
    assert await jwks_kids(rotor) == {before.active, after.active, after.next}

    # Retired longer ago than the last token it signed can live: gone.
    await rotor.db.execute(
        "UPDATE signing_keys SET retired_at = now() - make_interval(secs => $2) WHERE kid = $1",
        before.active,
        ttl + 1,
    )
    reload_ring(rotor)
    assert await jwks_kids(rotor) == {after.active, after.next}

    report = await prune(rotor.db, retention=604800, access_ttl=ttl, login_window=900)
    assert report.keys_removed == 1
    assert await keys_in_db(rotor.db) == Keys(after.active, after.next, [], [], [before.active])
    listed = await rotor.http.get(
        "/admin/keys", headers=bearer(await client_token(rotor, ops.client))
    )
    states = {item["kid"]: item["state"] for item in listed.json()["items"]}
    assert states[before.active] == "removed"


# --------------------------------------------------------------------------- revocation


async def test_revoking_the_active_key_promotes_next_and_kills_its_tokens_at_once(
    rotor: Rotor, ops: Ops, app: RegisteredClient, gateway: RegisteredClient
) -> None:
    before = await keys_in_db(rotor.db)
    user_token = await login_token(rotor, app)
    assert kid_of(user_token) == kid_of(ops.token) == before.active

    response = await rotor.http.post(f"/admin/keys/{before.active}/revoke", headers=ops.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == KEY_KEYS
    assert (body["kid"], body["state"]) == (before.active, "revoked")

    after = await keys_in_db(rotor.db)
    assert after.active == before.next
    assert after.revoked == [before.active]
    assert after.next not in (before.active, before.next)
    # Leaves the JWKS at once: no waiting for a refresh tick.
    assert await jwks_kids(rotor) == {after.active, after.next}
    for token in (user_token, ops.token):
        assert await introspect(rotor, gateway, token) == {"active": False}
    refused = await rotor.http.get("/admin/keys", headers=ops.headers)
    # The revoked key left the ring: its tokens no longer verify at all.
    assert (refused.status_code, refused.json(), refused.headers["www-authenticate"]) == (
        401,
        {"error": "invalid_token", "error_description": "the access token is invalid or expired"},
        'Bearer realm="rotor", error="invalid_token"',
    )

    assert kid_of(await login_token(rotor, app)) == after.active
    fresh = Ops(ops.client, await client_token(rotor, ops.client))
    assert kid_of(fresh.token) == after.active
    revoked_events = await events_of(rotor, fresh, "key_revoked")
    assert len(revoked_events) == 1

    again = await rotor.http.post(f"/admin/keys/{before.active}/revoke", headers=fresh.headers)
    assert again.status_code == 200, again.text
    assert (again.json()["kid"], again.json()["state"]) == (before.active, "revoked")
    assert await keys_in_db(rotor.db) == after


async def test_revoking_a_retired_key_kills_the_tokens_it_signed(
    rotor: Rotor, ops: Ops, app: RegisteredClient, gateway: RegisteredClient
) -> None:
    before = await keys_in_db(rotor.db)
    old_token = await login_token(rotor, app)
    assert (await rotate(rotor, ops, {"force": True})).status_code == 200
    fresh = Ops(ops.client, await client_token(rotor, ops.client))
    rotated = await keys_in_db(rotor.db)
    assert (await introspect(rotor, gateway, old_token))["active"] is True

    response = await rotor.http.post(f"/admin/keys/{before.active}/revoke", headers=fresh.headers)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "revoked"
    assert await introspect(rotor, gateway, old_token) == {"active": False}
    assert await jwks_kids(rotor) == {rotated.active, rotated.next}
    after = await keys_in_db(rotor.db)
    assert (after.active, after.next) == (rotated.active, rotated.next)
    assert (await introspect(rotor, gateway, fresh.token))["active"] is True


async def test_revoking_the_next_key_replaces_it(rotor: Rotor, ops: Ops) -> None:
    before = await keys_in_db(rotor.db)
    response = await rotor.http.post(f"/admin/keys/{before.next}/revoke", headers=ops.headers)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "revoked"
    after = await keys_in_db(rotor.db)
    assert after.active == before.active
    assert after.revoked == [before.next]
    assert after.next not in (before.active, before.next)
    assert await jwks_kids(rotor) == {after.active, after.next}


@pytest.mark.parametrize("kid", ["no-such-kid", "00000000-0000-0000-0000-000000000000", "%00"])
async def test_revoking_an_unknown_kid_is_404(rotor: Rotor, ops: Ops, kid: str) -> None:
    before = await snapshot(rotor.db)
    response = await rotor.http.post(f"/admin/keys/{kid}/revoke", headers=ops.headers)
    assert (response.status_code, response.json()) == (
        404,
        {"error": "not_found", "error_description": "no such key"},
    )
    assert await snapshot(rotor.db) == before


# --------------------------------------------------------------------------- the command line


def run_cli(rotor: Rotor, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ROTOR_") and key != "DATABASE_URL"
    }
    env["DATABASE_URL"] = rotor.settings.database_url
    env["ROTOR_SECRET"] = base64.urlsafe_b64encode(TEST_SECRET).rstrip(b"=").decode()
    return subprocess.run(
        [str(Path(sys.executable).parent / "rotor"), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_cli_rotate_keys_refuses_a_young_next_key(
    rotor: Rotor, app: RegisteredClient, tmp_path: Path
) -> None:
    before = await snapshot(rotor.db)
    keys = await keys_in_db(rotor.db)
    done = run_cli(rotor, tmp_path, "rotate-keys")
    assert done.returncode != 0, done.stdout
    assert done.stdout == ""
    assert await snapshot(rotor.db) == before
    assert kid_of(await login_token(rotor, app)) == keys.active
    assert not (tmp_path / ".rotor").exists()


async def test_cli_forced_rotation_reaches_a_running_process_within_5_seconds(
    rotor: Rotor, app: RegisteredClient, tmp_path: Path
) -> None:
    assert rotor.settings.key_refresh_interval < CLI_DEADLINE
    before = await keys_in_db(rotor.db)
    assert kid_of(await login_token(rotor, app)) == before.active

    done = run_cli(rotor, tmp_path, "rotate-keys", "--force")
    returned = time.monotonic()
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert set(printed) == KEY_KEYS
    assert (printed["kid"], printed["state"]) == (before.next, "active")

    after = await keys_in_db(rotor.db)
    assert (after.active, after.retired) == (before.next, [before.active])
    signed_by = before.active
    while signed_by != before.next and time.monotonic() - returned < CLI_DEADLINE:
        await asyncio.sleep(0.05)
        signed_by = kid_of(await login_token(rotor, app))
    assert signed_by == before.next, "the running process still signs with the old key"
    while time.monotonic() - returned < CLI_DEADLINE and after.next not in await jwks_kids(rotor):
        await asyncio.sleep(0.05)
    assert await jwks_kids(rotor) == {before.active, before.next, after.next}
