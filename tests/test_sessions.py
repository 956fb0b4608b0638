"""The user's own sessions (CONTRACT 3.8): `GET /sessions`, `DELETE /sessions/{id}`,
`POST /sessions/revoke-others`, by the user's own access token.

Every answer is checked on the wire (status, body, headers) and, where it promises a
lasting effect, in the database through the test's own connection and through the
token endpoints. The listing tests are served in this event loop to a client at
PEER_IP (service/http/caller.py reads the address as the login limits do); the
refusals use the in-process `rotor` fixture, whose app issues tokens for the tests.
Time never passes: "long ago" is made by moving timestamps with SQL.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.config import Settings
from service.db.migrate import upgrade
from service.tokens.access import AccessTokenIssuer
from service.tokens.families import token_fingerprint
from tests.helpers import (
    PASSWORD,
    PEER_IP,
    RegisteredClient,
    Rotor,
    assert_error,
    assert_no_store,
    claims_of,
    client_token,
    operator,
    serve_in_loop,
    unb64u,
)

UA = "Mozilla/5.0 (X11; Linux x86_64) rotor-tests/1.0"
SESSION_KEYS = {
    "id",
    "client_id",
    "client_name",
    "created_at",
    "last_rotated_at",
    "expires_at",
    "login_ip",
    "login_user_agent",
    "last_ip",
    "last_user_agent",
    "current",
}

# The refusals (service/tokens/sessions.py, service/errors.py). RFC 6750 3: the
# challenge names the error only when a Bearer token was presented.
NO_TOKEN_CHALLENGE = 'Bearer realm="rotor"'
TOKEN_CHALLENGE = 'Bearer realm="rotor", error="invalid_token"'
SCOPE_CHALLENGE = 'Bearer realm="rotor", error="insufficient_scope"'
NO_TOKEN = "a Bearer access token is required"
INVALID_TOKEN = "the access token is invalid or expired"
INACTIVE_TOKEN = "the access token is no longer active"
NO_USER = "the access token is not a user's: it has no session"
NOT_FOUND = {"error": "not_found", "error_description": "no such session"}
LIMIT_RANGE = "limit must be between 1 and 500"
LIMIT_NOT_INTEGER = "invalid or missing field(s): limit"
FOREIGN_CURSOR = "cursor is not one this server issued"


# --------------------------------------------------------------------------- helpers


@dataclass
class Signed:
    """A user's session as the app holding it sees it."""

    access: str
    refresh: str
    family_id: str

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}


def request_headers(agent: str, forwarded_for: str | None) -> dict[str, str]:
    headers = {"User-Agent": agent}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return headers


async def sign_in(
    rotor: Rotor,
    client: RegisteredClient,
    username: str = "alice",
    *,
    agent: str = UA,
    forwarded_for: str | None = None,
) -> Signed:
    response = await rotor.token(
        {"grant_type": "password", "username": username, "password": PASSWORD},
        {**client.auth, **request_headers(agent, forwarded_for)},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return Signed(
        body["access_token"], body["refresh_token"], claims_of(body["access_token"])["sid"]
    )


async def rotate(
    rotor: Rotor,
    client: RegisteredClient,
    signed: Signed,
    *,
    via: str = "/refresh",
    agent: str = UA,
    forwarded_for: str | None = None,
) -> Signed:
    headers = {**client.auth, **request_headers(agent, forwarded_for)}
    if via == "/refresh":
        response = await rotor.http.post(
            "/refresh", json={"refresh_token": signed.refresh}, headers=headers
        )
    else:
        response = await rotor.token(
            {"grant_type": "refresh_token", "refresh_token": signed.refresh}, headers
        )
    assert response.status_code == 200, response.text
    body = response.json()
    return Signed(body["access_token"], body["refresh_token"], signed.family_id)


async def listed(rotor: Rotor, signed: Signed, **params: Any) -> list[dict[str, Any]]:
    """The one page of the caller's sessions."""
    response = await rotor.http.get("/sessions", params=params, headers=signed.bearer)
    assert response.status_code == 200, response.text
    assert_no_store(response)
    body = response.json()
    assert set(body) == {"items", "next"}, body
    assert body["next"] is None, "more than one page: raise the limit in the test"
    items: list[dict[str, Any]] = body["items"]
    return items


def utc(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def family_row(rotor: Rotor, family_id: str) -> asyncpg.Record:
    row = await rotor.db.fetchrow(
        "SELECT f.*, c.name AS client_name FROM token_families f "
        "JOIN clients c ON c.id = f.client_id WHERE f.id = $1",
        uuid.UUID(family_id),
    )
    assert row is not None
    return row


async def view(
    rotor: Rotor,
    signed: Signed,
    *,
    login: tuple[str | None, str | None],
    last: tuple[str | None, str | None] | None = None,
    current: bool = False,
) -> dict[str, Any]:
    """The listed session as it must read: times from the database, IPs and user
    agents as the test sent them (`last` is the login's when not given)."""
    row = await family_row(rotor, signed.family_id)
    last_ip, last_agent = login if last is None else last
    return {
        "id": signed.family_id,
        "client_id": str(row["client_id"]),
        "client_name": row["client_name"],
        "created_at": utc(row["created_at"]),
        "last_rotated_at": utc(row["last_rotated_at"]),
        "expires_at": utc(row["expires_at"]),
        "login_ip": login[0],
        "login_user_agent": login[1],
        "last_ip": last_ip,
        "last_user_agent": last_agent,
        "current": current,
    }


async def created_hours_ago(rotor: Rotor, signed: Signed, hours: int) -> None:
    """A known order: newest first means fewest hours ago first."""
    await rotor.db.execute(
        "UPDATE token_families SET created_at = now() - make_interval(hours => $2) WHERE id = $1",
        uuid.UUID(signed.family_id),
        hours,
    )


async def expire(rotor: Rotor, signed: Signed) -> None:
    """The family's absolute limit passed."""
    await rotor.db.execute(
        "UPDATE token_families SET expires_at = now() - interval '1 second' WHERE id = $1",
        uuid.UUID(signed.family_id),
    )


async def idle_out(rotor: Rotor, signed: Signed) -> None:
    """The family's live refresh token idled out."""
    await rotor.db.execute(
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' "
        "WHERE family_id = $1 AND spent_at IS NULL",
        uuid.UUID(signed.family_id),
    )


async def revoke_refresh(rotor: Rotor, client: RegisteredClient, signed: Signed) -> None:
    """The app's logout (RFC 7009): the family is revoked."""
    response = await rotor.http.post("/revoke", data={"token": signed.refresh}, headers=client.auth)
    assert response.status_code == 200, response.text


async def revocations(rotor: Rotor, *signed: Signed) -> dict[str, str | None]:
    """Each family's revoked_reason (None: not revoked)."""
    rows = await rotor.db.fetch(
        "SELECT id, revoked_reason FROM token_families WHERE id = ANY($1::uuid[])",
        [uuid.UUID(s.family_id) for s in signed],
    )
    return {str(row["id"]): row["revoked_reason"] for row in rows}


async def revoked_events(rotor: Rotor) -> list[dict[str, Any]]:
    rows = await rotor.db.fetch(
        "SELECT type, user_id, client_id, family_id, host(ip) AS ip, user_agent, detail::text "
        "FROM security_events WHERE type = 'family_revoked' ORDER BY seq"
    )
    return [
        {
            **{key: row[key] for key in ("type", "ip", "user_agent")},
            "user_id": str(row["user_id"]),
            "client_id": str(row["client_id"]),
            "family_id": str(row["family_id"]),
            "detail": json.loads(row["detail"]),
        }
        for row in rows
    ]


def logout_event(
    user_id: str, client: RegisteredClient, signed: Signed, agent: str
) -> dict[str, Any]:
    """The family_revoked event of a session signed out at /sessions from PEER_IP."""
    return {
        "type": "family_revoked",
        "ip": PEER_IP,
        "user_agent": agent,
        "user_id": user_id,
        "client_id": client.client_id,
        "family_id": signed.family_id,
        "detail": {"reason": "logout"},
    }


def by_family(event: dict[str, Any]) -> str:
    return str(event["family_id"])


async def refresh_error(rotor: Rotor, client: RegisteredClient, signed: Signed) -> Any:
    response = await rotor.http.post(
        "/refresh", json={"refresh_token": signed.refresh}, headers=client.auth
    )
    return response.status_code, response.json()["error"]


DEAD_REFRESH = (400, "invalid_grant")


def cursor_of(*values: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(list(values))).decode().rstrip("=")


@pytest.fixture
async def site(settings: Settings, db: asyncpg.Connection) -> AsyncIterator[Rotor]:
    """Rotor served to a client at PEER_IP, which is not a trusted proxy. The app's
    lifespan must begin and end in one task (anyio's cancel scopes), and a fixture's
    set-up and tear-down run in two: it is held by a task of its own."""
    served: asyncio.Future[Rotor] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    async def serve() -> None:
        async with serve_in_loop(settings, db) as rotor:
            served.set_result(rotor)
            await stop.wait()

    task = asyncio.create_task(serve())
    waiting: list[asyncio.Future[Any]] = [task, served]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # it failed to start: raise why
    yield served.result()
    stop.set()
    await task


@pytest.fixture
async def web(site: Rotor) -> RegisteredClient:
    return await site.client(name="web")


# --------------------------------------------------------------------------- the list


async def test_the_list_is_the_users_active_sessions_newest_first(
    site: Rotor, web: RegisteredClient
) -> None:
    mobile = await site.client(name="mobile app")
    await site.user("alice")
    await site.user("bob")
    oldest = await sign_in(site, web, agent="Agent/1")
    middle = await sign_in(site, mobile, agent="Agent/2")
    newest = await sign_in(site, web, agent="Agent/3")
    for signed, hours in ((oldest, 3), (middle, 2), (newest, 1)):
        await created_hours_ago(site, signed, hours)
    # Not listed: revoked, past the absolute limit, idled out, another user's.
    revoked = await sign_in(site, web)
    await revoke_refresh(site, web, revoked)
    expired, idle = await sign_in(site, web), await sign_in(site, web)
    await expire(site, expired)
    await idle_out(site, idle)
    await sign_in(site, web, "bob")

    items = await listed(site, middle)

    assert items == [
        await view(site, newest, login=(PEER_IP, "Agent/3")),
        await view(site, middle, login=(PEER_IP, "Agent/2"), current=True),
        await view(site, oldest, login=(PEER_IP, "Agent/1")),
    ]
    assert [set(item) for item in items] == [SESSION_KEYS] * 3
    assert [item["client_name"] for item in items] == ["web", "mobile app", "web"]


async def test_current_is_the_family_of_the_presented_token(
    site: Rotor, web: RegisteredClient
) -> None:
    await site.user()
    first, second = await sign_in(site, web), await sign_in(site, web)
    await created_hours_ago(site, first, 2)
    answers = {
        "first": [item["current"] for item in await listed(site, first)],
        "second": [item["current"] for item in await listed(site, second)],
    }
    assert answers == {"first": [False, True], "second": [True, False]}


@pytest.mark.parametrize("via", ["/refresh", "/token"])
async def test_last_use_is_the_login_until_the_first_rotation_then_the_latest(
    settings: Settings, db: asyncpg.Connection, via: str
) -> None:
    trusted = (ipaddress.ip_network(f"{PEER_IP}/32"),)
    async with serve_in_loop(settings, db, trusted_proxies=trusted) as rotor:
        app = await rotor.client(name="web")
        await rotor.user()
        login = ("198.51.100.1", "Login/1")
        signed = await sign_in(rotor, app, agent=login[1], forwarded_for=login[0])
        before = await listed(rotor, signed)
        expected_before = [await view(rotor, signed, login=login, current=True)]

        second = await rotate(
            rotor, app, signed, via=via, agent="Rotate/2", forwarded_for="198.51.100.2"
        )
        after_one = await listed(rotor, second)
        expected_after_one = [
            await view(rotor, second, login=login, last=("198.51.100.2", "Rotate/2"), current=True)
        ]

        third = await rotate(
            rotor, app, second, via=via, agent="Rotate/3", forwarded_for="2001:db8::7"
        )
        after_two = await listed(rotor, third)
        expected_after_two = [
            await view(rotor, third, login=login, last=("2001:db8::7", "Rotate/3"), current=True)
        ]

    assert (before, before[0]["last_rotated_at"]) == (expected_before, None)
    assert after_one == expected_after_one
    assert after_two == expected_after_two
    rotated = [
        datetime.fromisoformat(after[0]["last_rotated_at"]) for after in (after_one, after_two)
    ]
    assert rotated[1] > rotated[0]


@pytest.mark.parametrize(
    ("trust_the_peer", "login_ip", "last_ip"),
    [
        pytest.param(True, "198.51.100.1", "198.51.100.2", id="from-a-trusted-proxy"),
        pytest.param(False, PEER_IP, PEER_IP, id="from-anyone-else"),
    ],
)
async def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    settings: Settings, db: asyncpg.Connection, trust_the_peer: bool, login_ip: str, last_ip: str
) -> None:
    trusted = [ipaddress.ip_network("192.0.2.0/24")]  # never the peer
    if trust_the_peer:
        trusted.append(ipaddress.ip_network(f"{PEER_IP}/32"))
    async with serve_in_loop(settings, db, trusted_proxies=tuple(trusted)) as rotor:
        app = await rotor.client(name="web")
        await rotor.user()
        signed = await sign_in(rotor, app, forwarded_for="198.51.100.1")
        signed = await rotate(rotor, app, signed, forwarded_for="198.51.100.2")
        (item,) = await listed(rotor, signed)
    assert (item["login_ip"], item["last_ip"]) == (login_ip, last_ip)


async def test_user_agents_are_cut_at_256_characters(site: Rotor, web: RegisteredClient) -> None:
    await site.user()
    long_login = await sign_in(site, web, agent="L" * 257)
    exact = await rotate(site, web, await sign_in(site, web), agent="E" * 256)
    much_longer = await rotate(site, web, await sign_in(site, web), agent="R" * 5000)
    empty = await sign_in(site, web, agent="")
    for signed, hours in ((long_login, 4), (exact, 3), (much_longer, 2), (empty, 1)):
        await created_hours_ago(site, signed, hours)
    agents = [
        (item["login_user_agent"], item["last_user_agent"]) for item in await listed(site, empty)
    ]
    assert agents == [(None, None), (UA, "R" * 256), (UA, "E" * 256), ("L" * 256, "L" * 256)]


async def test_a_session_opened_before_migration_0003_lists_without_its_origin(
    settings: Settings, empty_database_url: str
) -> None:
    """Families that exist when the columns arrive get NULL: where they were opened
    was never recorded. Their first rotation afterwards records the last use."""
    await asyncio.to_thread(upgrade, empty_database_url, "0002")
    old_token = "a-refresh-token-issued-before-0003"
    connection = await asyncpg.connect(empty_database_url)
    try:
        user_id, client_id, family_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        await connection.execute(
            "INSERT INTO users (id, username, password_hash) VALUES ($1, 'alice', 'x')", user_id
        )
        await connection.execute(
            "INSERT INTO clients (id, name, secret_hash, public, grant_types, scopes) "
            "VALUES ($1, 'old app', NULL, true, '{refresh_token}', '{read}')",
            client_id,
        )
        await connection.execute(
            "INSERT INTO token_families (id, user_id, client_id, scope, expires_at) "
            "VALUES ($1, $2, $3, 'read', now() + interval '1 day')",
            family_id,
            user_id,
            client_id,
        )
        await connection.execute(
            "INSERT INTO refresh_tokens (token_hash, family_id, generation, expires_at) "
            "VALUES ($1, $2, 1, now() + interval '1 hour')",
            token_fingerprint(old_token),
            family_id,
        )
        await asyncio.to_thread(upgrade, empty_database_url)
        migrated = settings.with_overrides(database_url=empty_database_url)
        async with AsyncTestClient(create_app(migrated)) as http:
            rotor = Rotor(http, migrated, connection)
            services = http.app.state.services
            issuer = AccessTokenIssuer(migrated, services.keys)
            access = issuer.issue(
                subject=str(user_id), client_id=str(client_id), scope="read", family_id=family_id
            ).token
            signed = Signed(access, old_token, str(family_id))
            before = await listed(rotor, signed)
            expected_before = [await view(rotor, signed, login=(None, None), current=True)]
            response = await http.post(
                "/refresh",
                json={"refresh_token": old_token, "client_id": str(client_id)},
                headers={"User-Agent": "Rotate/1"},
            )
            assert response.status_code == 200, response.text
            after = await listed(rotor, signed)
            # The test client has no IP address (its peer is "testclient").
            expected_after = [
                await view(rotor, signed, login=(None, None), last=(None, "Rotate/1"), current=True)
            ]
    finally:
        await connection.close()
    assert (before, after) == (expected_before, expected_after)


# --------------------------------------------------------------------------- paging


async def test_paging_walks_every_session_once_newest_first(
    site: Rotor, web: RegisteredClient
) -> None:
    await site.user()
    made = [await sign_in(site, web) for _ in range(5)]
    whole = [item["id"] for item in await listed(site, made[0], limit=500)]
    pages: list[list[str]] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        response = await site.http.get("/sessions", params=params, headers=made[0].bearer)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item["id"] for item in body["items"]])
        if body["next"] is None:
            break
        assert isinstance(body["next"], str)
        assert len(pages) < 10, "paging does not end"
        params["cursor"] = body["next"]
    assert ([len(page) for page in pages], [fid for page in pages for fid in page]) == (
        [2, 2, 1],
        whole,
    )
    assert sorted(whole) == sorted(signed.family_id for signed in made)


BAD_PAGING: dict[str, tuple[dict[str, str], str]] = {
    "limit-0": ({"limit": "0"}, LIMIT_RANGE),
    "limit-501": ({"limit": "501"}, LIMIT_RANGE),
    "limit-negative": ({"limit": "-1"}, LIMIT_RANGE),
    "limit-abc": ({"limit": "abc"}, LIMIT_NOT_INTEGER),
    "limit-float": ({"limit": "1.5"}, LIMIT_NOT_INTEGER),
    "cursor-garbage": ({"cursor": "not a cursor!"}, FOREIGN_CURSOR),
    "cursor-not-json": ({"cursor": "bm90IGpzb24"}, FOREIGN_CURSOR),
    "cursor-three-values": (
        {"cursor": cursor_of("2026-01-01T00:00:00+00:00", 1, 2)},
        FOREIGN_CURSOR,
    ),
    "cursor-not-a-time": ({"cursor": cursor_of("yesterday", str(uuid.uuid4()))}, FOREIGN_CURSOR),
    "cursor-not-a-uuid": (
        {"cursor": cursor_of("2026-01-01T00:00:00+00:00", "nope")},
        FOREIGN_CURSOR,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_PAGING))
async def test_paging_refuses_bad_limits_and_cursors(
    site: Rotor, web: RegisteredClient, case: str
) -> None:
    await site.user()
    signed = await sign_in(site, web)
    params, description = BAD_PAGING[case]
    response = await site.http.get("/sessions", params=params, headers=signed.bearer)
    assert_error(response, 400, "invalid_request", description, case=case)


@pytest.mark.parametrize("limit", ["1", "500"])
async def test_paging_accepts_the_limits_at_the_edges(
    site: Rotor, web: RegisteredClient, limit: str
) -> None:
    await site.user()
    signed = await sign_in(site, web)
    response = await site.http.get("/sessions", params={"limit": limit}, headers=signed.bearer)
    assert (response.status_code, [item["id"] for item in response.json()["items"]]) == (
        200,
        [signed.family_id],
    )


# --------------------------------------------------------------------------- DELETE


async def test_delete_revokes_that_session_with_reason_logout_and_its_event(
    site: Rotor, web: RegisteredClient
) -> None:
    alice_id = await site.user()
    laptop = await sign_in(site, web)
    phone = await sign_in(site, web)
    response = await site.http.delete(
        f"/sessions/{phone.family_id}", headers={**laptop.bearer, "User-Agent": "Settings/1"}
    )
    assert (response.status_code, response.content) == (204, b"")
    assert_no_store(response)
    assert await revocations(site, laptop, phone) == {
        laptop.family_id: None,
        phone.family_id: "logout",
    }
    assert await revoked_events(site) == [logout_event(alice_id, web, phone, "Settings/1")]
    assert await refresh_error(site, web, phone) == DEAD_REFRESH
    assert [item["id"] for item in await listed(site, laptop)] == [laptop.family_id]


async def test_delete_answers_the_same_404_for_anything_not_the_callers_live_session(
    site: Rotor, web: RegisteredClient
) -> None:
    await site.user("alice")
    await site.user("bob")
    alice = await sign_in(site, web, "alice")
    bob = await sign_in(site, web, "bob")
    revoked = await sign_in(site, web)
    await revoke_refresh(site, web, revoked)
    expired = await sign_in(site, web)
    await expire(site, expired)
    idle = await sign_in(site, web)
    await idle_out(site, idle)
    events_before = await revoked_events(site)
    targets = {
        "another-users-session": bob.family_id,
        "unknown": str(uuid.uuid4()),
        "malformed": "not-a-session-id",
        "malformed-quote": "a%22b",
        "already-revoked": revoked.family_id,
        "past-its-limit": expired.family_id,
        "idled-out": idle.family_id,
    }
    answers = {}
    for case, target in targets.items():
        response = await site.http.delete(f"/sessions/{target}", headers=alice.bearer)
        assert_error(response, 404, "not_found", NOT_FOUND["error_description"], case=case)
        answers[case] = response.content
    assert answers == dict.fromkeys(targets, msgspec.json.encode(NOT_FOUND))
    # Nothing changed: bob's session lives, the dead ones keep their state, no event.
    assert await revocations(site, bob, revoked, expired, idle) == {
        bob.family_id: None,
        revoked.family_id: "logout",
        expired.family_id: None,
        idle.family_id: None,
    }
    assert await revoked_events(site) == events_before
    assert [item["current"] for item in await listed(site, bob)] == [True]


async def test_deleting_the_current_session_ends_it_and_its_token(
    site: Rotor, web: RegisteredClient
) -> None:
    await site.user()
    signed = await sign_in(site, web)
    response = await site.http.delete(f"/sessions/{signed.family_id}", headers=signed.bearer)
    assert (response.status_code, response.content) == (204, b"")
    assert await revocations(site, signed) == {signed.family_id: "logout"}
    again = await site.http.get("/sessions", headers=signed.bearer)
    assert_error(again, 401, "invalid_token", INACTIVE_TOKEN, www_authenticate=TOKEN_CHALLENGE)
    assert await refresh_error(site, web, signed) == DEAD_REFRESH


# --------------------------------------------------------------------------- revoke-others


async def test_revoke_others_ends_every_other_active_session_and_keeps_the_current(
    site: Rotor, web: RegisteredClient
) -> None:
    alice_id = await site.user("alice")
    await site.user("bob")
    mobile = await site.client(name="mobile app")
    current = await sign_in(site, web)
    others = [await sign_in(site, web), await sign_in(site, mobile)]
    revoked, expired = await sign_in(site, web), await sign_in(site, web)
    await revoke_refresh(site, web, revoked)
    await expire(site, expired)
    bob = await sign_in(site, web, "bob")
    events_before = await revoked_events(site)

    response = await site.http.post(
        "/sessions/revoke-others", headers={**current.bearer, "User-Agent": "Settings/1"}
    )

    assert (response.status_code, response.json()) == (200, {"revoked": 2})
    assert_no_store(response)
    assert await revocations(site, current, *others, revoked, expired, bob) == {
        current.family_id: None,
        others[0].family_id: "logout",
        others[1].family_id: "logout",
        revoked.family_id: "logout",  # by /revoke, before: not counted again
        expired.family_id: None,  # already dead: not counted
        bob.family_id: None,
    }
    new_events = (await revoked_events(site))[len(events_before) :]
    assert sorted(new_events, key=by_family) == sorted(
        [
            logout_event(alice_id, client, other, "Settings/1")
            for other, client in zip(others, (web, mobile), strict=True)
        ],
        key=by_family,
    )
    assert [
        await refresh_error(site, client, other)
        for other, client in zip(others, (web, mobile), strict=True)
    ] == [DEAD_REFRESH, DEAD_REFRESH]
    assert [item["id"] for item in await listed(site, current)] == [current.family_id]
    await rotate(site, web, current)  # the current session lives on


async def test_revoke_others_without_another_session_revokes_none(
    site: Rotor, web: RegisteredClient
) -> None:
    await site.user()
    signed = await sign_in(site, web)
    response = await site.http.post("/sessions/revoke-others", headers=signed.bearer)
    assert (response.status_code, response.json()) == (200, {"revoked": 0})
    assert await revocations(site, signed) == {signed.family_id: None}


# --------------------------------------------------------------------------- who may


OPERATIONS = ("list", "delete", "revoke-others")


async def call(rotor: Rotor, operation: str, headers: dict[str, str], family_id: str) -> Any:
    if operation == "list":
        return await rotor.http.get("/sessions", headers=headers)
    if operation == "delete":
        return await rotor.http.delete(f"/sessions/{family_id}", headers=headers)
    return await rotor.http.post("/sessions/revoke-others", headers=headers)


def refusal(response: httpx.Response) -> tuple[int, Any, str | None, str | None]:
    """Status, body, challenge and cache-control of an answer."""
    return (
        response.status_code,
        response.json(),
        response.headers.get("www-authenticate"),
        response.headers.get("cache-control"),
    )


def refused(description: str, challenge: str = TOKEN_CHALLENGE) -> tuple[int, Any, str, str]:
    return 401, {"error": "invalid_token", "error_description": description}, challenge, "no-store"


@dataclass
class Arranged:
    """A user with two sessions of one app, and the app's client credentials."""

    rotor: Rotor
    app: RegisteredClient
    user_id: str
    signed: Signed
    other: Signed


async def arrange(rotor: Rotor) -> Arranged:
    app = await rotor.client(name="web")
    user_id = await rotor.user()
    return Arranged(rotor, app, user_id, await sign_in(rotor, app), await sign_in(rotor, app))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def no_authorization(a: Arranged) -> dict[str, str]:
    return {}


async def empty_bearer(a: Arranged) -> dict[str, str]:
    return {"Authorization": "Bearer "}


async def basic_credentials(a: Arranged) -> dict[str, str]:
    return a.app.auth


async def dpop_scheme(a: Arranged) -> dict[str, str]:
    # An unbound token under the DPoP scheme (RFC 9449 7.1: the scheme of bound
    # tokens); the bound ones are tests/test_dpop.py's.
    return {"Authorization": f"DPoP {a.signed.access}"}


async def garbage(a: Arranged) -> dict[str, str]:
    return bearer("garbage")


async def refresh_token_as_bearer(a: Arranged) -> dict[str, str]:
    return bearer(a.signed.refresh)


async def expired_token(a: Arranged) -> dict[str, str]:
    # Signed by Rotor's own active key; expired from its `exp` second on (no leeway).
    issuer = AccessTokenIssuer(a.rotor.settings, a.rotor.http.app.state.services.keys)
    issued = issuer.issue(
        subject=a.user_id,
        client_id=a.app.client_id,
        scope="read write",
        family_id=uuid.UUID(a.signed.family_id),
        now=int(time.time()) - a.rotor.settings.access_token_ttl,
    )
    return bearer(issued.token)


async def revoked_family(a: Arranged) -> dict[str, str]:
    await revoke_refresh(a.rotor, a.app, a.signed)
    return a.signed.bearer


async def revoked_jti(a: Arranged) -> dict[str, str]:
    response = await a.rotor.http.post(
        "/revoke", data={"token": a.signed.access}, headers=a.app.auth
    )
    assert response.status_code == 200, response.text
    return a.signed.bearer


async def expired_family(a: Arranged) -> dict[str, str]:
    await expire(a.rotor, a.signed)
    return a.signed.bearer


async def idled_out_family(a: Arranged) -> dict[str, str]:
    await idle_out(a.rotor, a.signed)
    return a.signed.bearer


async def disabled_user(a: Arranged) -> dict[str, str]:
    # The user alone, not its families: the live-family predicate checks the user too.
    await a.rotor.db.execute("UPDATE users SET disabled = true WHERE id = $1", uuid.UUID(a.user_id))
    return a.signed.bearer


async def revoked_key(a: Arranged) -> dict[str, str]:
    ops = await operator(a.rotor)
    kid = json.loads(unb64u(a.signed.access.split(".")[0]))["kid"]
    response = await a.rotor.http.post(f"/admin/keys/{kid}/revoke", headers=ops.headers)
    assert response.status_code == 200, response.text
    return a.signed.bearer


REFUSALS = {
    no_authorization: refused(NO_TOKEN, NO_TOKEN_CHALLENGE),
    empty_bearer: refused(NO_TOKEN, NO_TOKEN_CHALLENGE),
    basic_credentials: refused(NO_TOKEN, NO_TOKEN_CHALLENGE),
    dpop_scheme: refused("the access token is not DPoP-bound: present it as Bearer"),
    garbage: refused(INVALID_TOKEN),
    refresh_token_as_bearer: refused(INVALID_TOKEN),
    expired_token: refused(INVALID_TOKEN),
    revoked_key: refused(INVALID_TOKEN),
    revoked_family: refused(INACTIVE_TOKEN),
    revoked_jti: refused(INACTIVE_TOKEN),
    expired_family: refused(INACTIVE_TOKEN),
    idled_out_family: refused(INACTIVE_TOKEN),
    disabled_user: refused(INACTIVE_TOKEN),
}


@pytest.mark.parametrize("credentials", list(REFUSALS), ids=lambda make: make.__name__)
async def test_a_missing_bad_or_inactive_token_is_401_invalid_token(
    rotor: Rotor, credentials: Any
) -> None:
    arranged = await arrange(rotor)
    headers = await credentials(arranged)
    # The three operations answer alike; the delete targets the user's other session.
    answers = {
        operation: refusal(await call(rotor, operation, headers, arranged.other.family_id))
        for operation in OPERATIONS
    }
    assert answers == dict.fromkeys(OPERATIONS, REFUSALS[credentials])
    assert await revocations(rotor, arranged.other) == {arranged.other.family_id: None}


async def test_a_token_without_a_user_is_403_insufficient_scope(rotor: Rotor) -> None:
    service = await rotor.client(grants=["client_credentials"], name="service")
    arranged = await arrange(rotor)
    headers = bearer(await client_token(rotor, service))
    answers = {
        operation: refusal(await call(rotor, operation, headers, arranged.other.family_id))
        for operation in OPERATIONS
    }
    forbidden = (
        403,
        {"error": "insufficient_scope", "error_description": NO_USER},
        SCOPE_CHALLENGE,
        "no-store",
    )
    assert answers == dict.fromkeys(OPERATIONS, forbidden)
    assert await revocations(rotor, arranged.signed, arranged.other) == {
        arranged.signed.family_id: None,
        arranged.other.family_id: None,
    }


async def test_a_revoked_client_credentials_token_is_401_not_403(rotor: Rotor) -> None:
    """Whether the token is active is asked first: RFC 6750 3.1 invalid_token."""
    service = await rotor.client(grants=["client_credentials"], name="service")
    token = await client_token(rotor, service)
    response = await rotor.http.post("/revoke", data={"token": token}, headers=service.auth)
    assert response.status_code == 200, response.text
    answer = await rotor.http.get("/sessions", headers=bearer(token))
    assert_error(answer, 401, "invalid_token", INACTIVE_TOKEN, www_authenticate=TOKEN_CHALLENGE)


async def test_the_scheme_is_case_insensitive(rotor: Rotor) -> None:
    # RFC 7235 2.1: the auth-scheme is case-insensitive.
    arranged = await arrange(rotor)
    response = await rotor.http.get(
        "/sessions", headers={"Authorization": f"bEaReR {arranged.signed.access}"}
    )
    assert (response.status_code, len(response.json()["items"])) == (200, 2)
