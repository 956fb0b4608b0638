"""Refresh-token rotation over HTTP (CONTRACT 2 "Family", 3.2, 3.3).

Every branch of service/tokens/rotation.py is reached through HTTP, at
`/refresh` (JSON and form bodies) and at `/token` with
`grant_type=refresh_token`, which must answer alike. Outcomes are checked on
the wire (status, `error`, no-store headers) and in the database (families,
the token chain, security events), through a connection of the test's own.

Concurrency note: litestar's AsyncTestClient hands each request to a portal
thread and blocks the calling event loop until it is answered, so
`asyncio.gather` over it runs requests one after the other (measured: at most
one request in flight). The race tests therefore serve the app in the test's
own event loop through `httpx.ASGITransport` (`serve` below) and assert that
all requests were in flight at once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest

from tests.helpers import (
    PEER_IP,
    RegisteredClient,
    Rotor,
    assert_error,
    assert_no_store,
    basic,
    serve_in_loop,
)

USER_AGENT = "rotor-tests/1.0 (replay check)"
TOKEN_BODY_KEYS = {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
VIAS = ("refresh-json", "refresh-form", "token-form")


# --------------------------------------------------------------------------- helpers


def fingerprint(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass
class Session:
    client: RegisteredClient
    user_id: str
    token: str
    family_id: uuid.UUID


async def begin(
    rotor: Rotor,
    *,
    username: str | None = None,
    client: RegisteredClient | None = None,
    **login: str,
) -> Session:
    """A client (unless given), a user and a fresh family from a password login."""
    client = client or await rotor.client()
    username = username or f"user-{uuid.uuid4().hex[:12]}"
    user_id = await rotor.user(username)
    response = await rotor.login(client, username, **login)
    assert response.status_code == 200, response.text
    token = response.json()["refresh_token"]
    return Session(client, user_id, token, await family_of(rotor.db, token))


async def present(
    rotor: Rotor,
    via: str,
    token: str | None,
    client: RegisteredClient,
    *,
    scope: str | None = None,
    secret: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One refresh request, the way `via` names: /refresh (JSON or form) or /token."""
    fields: dict[str, str] = {}
    if token is not None:
        fields["refresh_token"] = token
    if scope is not None:
        fields["scope"] = scope
    sent = dict(headers or {})
    if client.client_secret is None:
        fields["client_id"] = client.client_id
    else:
        sent.update(basic(client.client_id, secret or client.client_secret))
    if via == "refresh-json":
        return await rotor.http.post("/refresh", json=fields, headers=sent)
    if via == "token-form":
        fields = {"grant_type": "refresh_token", **fields}
    assert via in ("refresh-form", "token-form")
    # Encoded here so that an empty form is still sent as a form.
    sent["Content-Type"] = "application/x-www-form-urlencoded"
    path = "/refresh" if via == "refresh-form" else "/token"
    return await rotor.http.post(path, content=urlencode(fields), headers=sent)


def assert_tokens(response: httpx.Response, scope: str = "read write") -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert_no_store(response)
    body: dict[str, Any] = response.json()
    assert set(body) == TOKEN_BODY_KEYS
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == scope
    return body


async def family_of(db: asyncpg.Connection, token: str) -> uuid.UUID:
    family_id = await db.fetchval(
        "SELECT family_id FROM refresh_tokens WHERE token_hash = $1", fingerprint(token)
    )
    assert family_id is not None
    return family_id  # type: ignore[no-any-return]


async def family(db: asyncpg.Connection, family_id: uuid.UUID) -> asyncpg.Record:
    return await db.fetchrow("SELECT * FROM token_families WHERE id = $1", family_id)


async def chain(db: asyncpg.Connection, family_id: uuid.UUID) -> list[asyncpg.Record]:
    return await db.fetch(  # type: ignore[no-any-return]
        "SELECT * FROM refresh_tokens WHERE family_id = $1 ORDER BY generation", family_id
    )


async def token_row(db: asyncpg.Connection, token: str) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT * FROM refresh_tokens WHERE token_hash = $1", fingerprint(token)
    )
    assert row is not None
    return row


async def live_count(db: asyncpg.Connection, family_id: uuid.UUID) -> int:
    return await db.fetchval(  # type: ignore[no-any-return]
        "SELECT count(*) FROM refresh_tokens WHERE family_id = $1 AND spent_at IS NULL",
        family_id,
    )


async def events(db: asyncpg.Connection, family_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT type, detail, ip, user_agent, user_id, client_id FROM security_events "
        "WHERE family_id = $1 ORDER BY seq",
        family_id,
    )
    return [
        {
            "type": row["type"],
            "detail": json.loads(row["detail"]),
            "ip": None if row["ip"] is None else str(row["ip"]),
            "user_agent": row["user_agent"],
            "user_id": str(row["user_id"]),
            "client_id": str(row["client_id"]),
        }
        for row in rows
    ]


async def reuse_event(db: asyncpg.Connection, family_id: uuid.UUID) -> dict[str, Any]:
    (event,) = [e for e in await events(db, family_id) if e["type"] == "reuse_detected"]
    return event


async def snapshot(db: asyncpg.Connection, family_id: uuid.UUID) -> tuple[Any, ...]:
    """Everything a refused request must leave as it was."""
    return (
        dict(await family(db, family_id)),
        [dict(row) for row in await chain(db, family_id)],
        await db.fetchval("SELECT count(*) FROM refresh_tokens"),
        await db.fetchval("SELECT count(*) FROM token_families"),
        await db.fetchval("SELECT count(*) FROM security_events"),
    )


async def assert_untouched_and_usable(
    rotor: Rotor, via: str, session: Session, before: tuple[Any, ...]
) -> None:
    """A refused request changed nothing, spent nothing: the token still rotates."""
    assert await snapshot(rotor.db, session.family_id) == before
    assert (await token_row(rotor.db, session.token))["spent_at"] is None
    assert (await family(rotor.db, session.family_id))["revoked_at"] is None
    assert_tokens(await present(rotor, via, session.token, session.client))


async def assert_reuse_revoked(
    db: asyncpg.Connection, family_id: uuid.UUID, *, reuse_events: int = 1
) -> None:
    row = await family(db, family_id)
    assert row["revoked_reason"] == "reuse_detected"
    assert row["revoked_at"] is not None
    kinds = Counter(event["type"] for event in await events(db, family_id))
    assert kinds == Counter({"reuse_detected": reuse_events, "family_revoked": 1})


# --------------------------------------------------------------------------- success


@pytest.mark.parametrize("via", VIAS)
async def test_rotation_spends_the_token_and_issues_its_successor(rotor: Rotor, via: str):
    session = await begin(rotor)
    before = await family(rotor.db, session.family_id)
    assert before["last_rotated_at"] is None

    body = assert_tokens(await present(rotor, via, session.token, session.client))
    db_now = await rotor.db.fetchval("SELECT now()")

    new = body["refresh_token"]
    assert new != session.token
    assert len(base64.urlsafe_b64decode(new + "=" * (-len(new) % 4))) >= 32
    first, second = await chain(rotor.db, session.family_id)
    assert first["token_hash"] == fingerprint(session.token)
    assert first["generation"] == 1
    assert first["parent_hash"] is None
    assert first["spent_at"] is not None
    assert first["successor_box"] is None  # grace 0: no successor kept at all
    assert second["token_hash"] == fingerprint(new)
    assert second["generation"] == 2
    assert second["parent_hash"] == fingerprint(session.token)
    assert second["spent_at"] is None
    # One statement, one clock: spent, issued and rotated at the same instant.
    after = await family(rotor.db, session.family_id)
    assert after["last_rotated_at"] == first["spent_at"] == second["issued_at"]
    assert after["revoked_at"] is None
    assert after["expires_at"] == before["expires_at"]
    assert after["scope"] == "read write"
    # The idle window restarts now: now + refresh_idle_ttl (DB clock).
    idle = timedelta(seconds=rotor.settings.refresh_idle_ttl)
    assert second["expires_at"] == second["issued_at"] + idle
    assert timedelta(0) <= db_now + idle - second["expires_at"] < timedelta(seconds=1)
    assert second["expires_at"] < after["expires_at"]

    claims = (await rotor.verify(body["access_token"])).claims
    assert claims["sid"] == str(session.family_id)
    assert claims["sub"] == session.user_id
    assert claims["client_id"] == session.client.client_id
    assert claims["scope"] == "read write"


@pytest.mark.parametrize("via", VIAS)
async def test_a_chain_of_rotations_links_each_generation_to_its_parent(rotor: Rotor, via: str):
    session = await begin(rotor)
    issued = [session.token]
    for _ in range(4):
        response = await present(rotor, via, issued[-1], session.client)
        issued.append(assert_tokens(response)["refresh_token"])
        assert await live_count(rotor.db, session.family_id) == 1
    rows = await chain(rotor.db, session.family_id)
    assert [row["generation"] for row in rows] == [1, 2, 3, 4, 5]
    assert [row["token_hash"] for row in rows] == [fingerprint(t) for t in issued]
    assert [row["parent_hash"] for row in rows] == [None] + [fingerprint(t) for t in issued[:-1]]
    assert [row["spent_at"] is None for row in rows] == [False, False, False, False, True]
    assert len(set(issued)) == 5


@pytest.mark.parametrize("via", VIAS)
async def test_rotation_never_reaches_past_the_family_limit(settings, db, via: str):
    async with serve_in_loop(settings, db, family_max_ttl=120, refresh_idle_ttl=3600) as rotor:
        session = await begin(rotor)
        limit = (await family(db, session.family_id))["expires_at"]
        assert (await token_row(db, session.token))["expires_at"] == limit

        body = assert_tokens(await present(rotor, via, session.token, session.client))
        successor = await token_row(db, body["refresh_token"])
        assert successor["generation"] == 2
        assert successor["expires_at"] == limit
        assert successor["expires_at"] < successor["issued_at"] + timedelta(seconds=3600)
        assert (await family(db, session.family_id))["expires_at"] == limit

        again = assert_tokens(await present(rotor, via, body["refresh_token"], session.client))
        assert (await token_row(db, again["refresh_token"]))["expires_at"] == limit
        assert (await family(db, session.family_id))["expires_at"] == limit


async def test_refresh_and_token_endpoint_answer_alike(rotor: Rotor):
    client = await rotor.client()
    one = await begin(rotor, username="alice", client=client)
    two = await begin(rotor, username="bob", client=client)
    at_refresh = assert_tokens(await present(rotor, "refresh-json", one.token, client))
    at_token = assert_tokens(await present(rotor, "token-form", two.token, client))
    assert set(at_refresh) == set(at_token) == TOKEN_BODY_KEYS
    for key in ("token_type", "expires_in", "scope"):
        assert at_refresh[key] == at_token[key]
    # Reuse answers alike too (each way replays a spent token of its own family).
    replays = []
    for index, way in enumerate(VIAS):
        session = await begin(rotor, username=f"carol{index}", client=client)
        assert_tokens(await present(rotor, way, session.token, client))
        replays.append(await present(rotor, way, session.token, client))
    assert len({(a.status_code, a.text) for a in replays}) == 1
    assert_error(replays[0], 400, "invalid_grant")


LIVE = "<the session's live token>"


@pytest.mark.parametrize(
    ("token", "scope", "secret", "status", "error"),
    [
        pytest.param("no-such-token", None, None, 400, "invalid_grant", id="unknown"),
        pytest.param(None, None, None, 400, "invalid_request", id="missing"),
        pytest.param(LIVE, "read admin", None, 400, "invalid_scope", id="widening"),
        pytest.param(LIVE, None, "wrong", 401, "invalid_client", id="failed-client-auth"),
        pytest.param("x" * 10_000, None, None, 400, "invalid_grant", id="too-long"),
    ],
)
async def test_refresh_and_token_endpoint_refuse_alike(
    rotor: Rotor, token: str | None, scope: str | None, secret: str | None, status: int, error: str
):
    session = await begin(rotor)
    sent = session.token if token == LIVE else token
    answers = [
        await present(rotor, way, sent, session.client, scope=scope, secret=secret) for way in VIAS
    ]
    assert len({(a.status_code, a.text) for a in answers}) == 1, [a.text for a in answers]
    assert_error(answers[0], status, error)
    assert {a.headers.get("www-authenticate") for a in answers} == {
        answers[0].headers.get("www-authenticate")
    }


# --------------------------------------------------------------------------- reuse, grace 0


@pytest.mark.parametrize("scope", ["read admin", "", "read"])
async def test_a_spent_token_is_reuse_whatever_scope_it_asks_for(rotor: Rotor, scope: str):
    """Scope is checked for a live token only: a thief replaying a spent token
    must not learn, by asking for a wider scope, that it is spent without
    tripping the alarm (CONTRACT 3.3's "changes nothing" is for live tokens)."""
    session = await begin(rotor)
    assert_tokens(await present(rotor, "refresh-json", session.token, session.client))
    replay = await present(rotor, "refresh-json", session.token, session.client, scope=scope)
    assert_error(replay, 400, "invalid_grant")
    row = await family(rotor.db, session.family_id)
    assert row["revoked_reason"] == "reuse_detected"


@pytest.mark.parametrize("via", VIAS)
async def test_replaying_a_spent_token_revokes_the_family(settings, db, via: str):
    async with serve_in_loop(settings, db) as rotor:
        session = await begin(rotor)
        latest = assert_tokens(await present(rotor, via, session.token, session.client))
        replay = await present(
            rotor, via, session.token, session.client, headers={"User-Agent": USER_AGENT}
        )
        assert_error(replay, 400, "invalid_grant")

    # Checked through the test's own connection after the error was answered
    # and the app shut down: the revocation was committed, not rolled back.
    row = await family(db, session.family_id)
    assert row["revoked_reason"] == "reuse_detected"
    assert row["revoked_at"] is not None
    recorded = await events(db, session.family_id)
    # Both rows come from one statement: their order in `seq` is not a promise.
    assert sorted(event["type"] for event in recorded) == ["family_revoked", "reuse_detected"]
    by_type = {event["type"]: event for event in recorded}
    reuse, revoked = by_type["reuse_detected"], by_type["family_revoked"]
    assert set(reuse["detail"]) == {"generation", "seconds_since_spent"}
    assert reuse["detail"]["generation"] == 1
    assert isinstance(reuse["detail"]["seconds_since_spent"], float | int)
    assert 0 <= reuse["detail"]["seconds_since_spent"] < 60
    assert revoked["detail"] == {"reason": "reuse_detected"}
    for event in recorded:
        assert event["ip"] == PEER_IP
        assert event["user_agent"] == USER_AGENT
        assert event["user_id"] == session.user_id
        assert event["client_id"] == session.client.client_id

    async with serve_in_loop(settings, db) as rotor:
        # The family's latest token fails too, and nothing new is issued.
        answer = await present(rotor, via, latest["refresh_token"], session.client)
        assert_error(answer, 400, "invalid_grant")
        assert len(await chain(db, session.family_id)) == 2
        assert await live_count(db, session.family_id) == 1  # a live row, a dead family
        assert len(await events(db, session.family_id)) == 2


@pytest.mark.parametrize("via", VIAS)
async def test_replaying_an_older_ancestor_is_reuse(rotor: Rotor, via: str):
    session = await begin(rotor)
    second = assert_tokens(await present(rotor, via, session.token, session.client))
    third = assert_tokens(await present(rotor, via, second["refresh_token"], session.client))

    assert_error(await present(rotor, via, session.token, session.client), 400, "invalid_grant")
    await assert_reuse_revoked(rotor.db, session.family_id)
    assert (await reuse_event(rotor.db, session.family_id))["detail"]["generation"] == 1
    assert_error(
        await present(rotor, via, third["refresh_token"], session.client), 400, "invalid_grant"
    )
    assert len(await chain(rotor.db, session.family_id)) == 3


async def test_replaying_the_middle_generation_reports_it(rotor: Rotor):
    session = await begin(rotor)
    second = assert_tokens(await present(rotor, "refresh-json", session.token, session.client))
    assert_tokens(await present(rotor, "refresh-json", second["refresh_token"], session.client))
    assert_error(
        await present(rotor, "refresh-json", second["refresh_token"], session.client),
        400,
        "invalid_grant",
    )
    await assert_reuse_revoked(rotor.db, session.family_id)
    assert (await reuse_event(rotor.db, session.family_id))["detail"]["generation"] == 2


@pytest.mark.parametrize("via", VIAS)
async def test_a_spent_token_from_another_client_revokes_nothing(rotor: Rotor, via: str):
    session = await begin(rotor)
    latest = assert_tokens(await present(rotor, via, session.token, session.client))
    other = await rotor.client(name="other")
    before = await snapshot(rotor.db, session.family_id)

    assert_error(await present(rotor, via, session.token, other), 400, "invalid_grant")
    assert await snapshot(rotor.db, session.family_id) == before
    assert_tokens(await present(rotor, via, latest["refresh_token"], session.client))


@pytest.mark.parametrize("via", VIAS)
async def test_a_spent_token_with_failed_client_auth_revokes_nothing(rotor: Rotor, via: str):
    session = await begin(rotor)
    latest = assert_tokens(await present(rotor, via, session.token, session.client))
    before = await snapshot(rotor.db, session.family_id)

    answer = await present(rotor, via, session.token, session.client, secret="not-the-secret")
    assert_error(answer, 401, "invalid_client")
    assert answer.headers["www-authenticate"].startswith("Basic")
    assert await snapshot(rotor.db, session.family_id) == before
    assert_tokens(await present(rotor, via, latest["refresh_token"], session.client))


async def test_replay_of_a_spent_token_in_a_revoked_family_keeps_the_first_reason(
    rotor: Rotor,
):
    session = await begin(rotor)
    assert_tokens(await present(rotor, "refresh-json", session.token, session.client))
    await rotor.db.execute(
        "UPDATE token_families SET revoked_at = now(), revoked_reason = 'admin' WHERE id = $1",
        session.family_id,
    )
    assert_error(
        await present(rotor, "refresh-json", session.token, session.client), 400, "invalid_grant"
    )
    assert (await family(rotor.db, session.family_id))["revoked_reason"] == "admin"
    assert [e["type"] for e in await events(rotor.db, session.family_id)] == ["reuse_detected"]


# --------------------------------------------------------------------------- grace window


@pytest.mark.parametrize("via", VIAS)
async def test_grace_retry_gets_the_same_successor(settings, db, via: str):
    async with serve_in_loop(settings, db, reuse_grace=30) as rotor:
        before = await db.fetchval("SELECT count(*) FROM refresh_tokens")
        session = await begin(rotor)
        first = assert_tokens(await present(rotor, via, session.token, session.client))
        for _ in range(2):
            retry = assert_tokens(await present(rotor, via, session.token, session.client))
            assert retry["refresh_token"] == first["refresh_token"]
            assert retry["access_token"] != first["access_token"]
            claims = (await rotor.verify(retry["access_token"])).claims
            assert claims["sid"] == str(session.family_id)
            assert claims["sub"] == session.user_id
        rows = await chain(db, session.family_id)
        assert [(r["generation"], r["spent_at"] is None) for r in rows] == [
            (1, False),
            (2, True),
        ]
        assert rows[1]["token_hash"] == fingerprint(first["refresh_token"])
        assert await db.fetchval("SELECT count(*) FROM refresh_tokens") == before + 2
        assert (await family(db, session.family_id))["revoked_at"] is None
        assert await events(db, session.family_id) == []
        # The successor both answers carried is the family's live token.
        assert_tokens(await present(rotor, via, first["refresh_token"], session.client))


async def test_grace_retry_may_narrow_but_not_widen(settings, db):
    async with serve_in_loop(settings, db, reuse_grace=30) as rotor:
        session = await begin(rotor)
        first = assert_tokens(await present(rotor, "refresh-json", session.token, session.client))
        narrow = await present(rotor, "refresh-json", session.token, session.client, scope="read")
        assert assert_tokens(narrow, scope="read")["refresh_token"] == first["refresh_token"]
        before = await snapshot(db, session.family_id)
        wide = await present(
            rotor, "refresh-json", session.token, session.client, scope="read admin"
        )
        assert_error(wide, 400, "invalid_scope")
        assert await snapshot(db, session.family_id) == before


async def test_grace_window_edge(settings, db):
    async with serve_in_loop(settings, db, reuse_grace=30) as rotor:
        session = await begin(rotor)
        first = assert_tokens(await present(rotor, "refresh-json", session.token, session.client))
        await db.execute(
            "UPDATE refresh_tokens SET spent_at = spent_at - interval '29 seconds' "
            "WHERE token_hash = $1",
            fingerprint(session.token),
        )
        retry = assert_tokens(await present(rotor, "refresh-json", session.token, session.client))
        assert retry["refresh_token"] == first["refresh_token"]
        await db.execute(
            "UPDATE refresh_tokens SET spent_at = spent_at - interval '1 second' "
            "WHERE token_hash = $1",
            fingerprint(session.token),
        )
        assert_error(
            await present(rotor, "refresh-json", session.token, session.client),
            400,
            "invalid_grant",
        )
        await assert_reuse_revoked(db, session.family_id)


@pytest.mark.parametrize("via", VIAS)
async def test_grace_retry_outside_the_window_is_reuse(settings, db, via: str):
    async with serve_in_loop(settings, db, reuse_grace=30) as rotor:
        session = await begin(rotor)
        first = assert_tokens(await present(rotor, via, session.token, session.client))
        await db.execute(
            "UPDATE refresh_tokens SET spent_at = spent_at - interval '31 seconds' "
            "WHERE token_hash = $1",
            fingerprint(session.token),
        )

        assert_error(await present(rotor, via, session.token, session.client), 400, "invalid_grant")
        await assert_reuse_revoked(db, session.family_id)
        reuse = await reuse_event(db, session.family_id)
        assert reuse["detail"]["generation"] == 1
        assert 31 <= reuse["detail"]["seconds_since_spent"] < 91
        assert_error(
            await present(rotor, via, first["refresh_token"], session.client),
            400,
            "invalid_grant",
        )
        assert len(await chain(db, session.family_id)) == 2


@pytest.mark.parametrize("via", VIAS)
async def test_grace_does_not_cover_an_older_ancestor(settings, db, via: str):
    async with serve_in_loop(settings, db, reuse_grace=30) as rotor:
        session = await begin(rotor)
        issued = [session.token]
        for _ in range(3):
            body = assert_tokens(await present(rotor, via, issued[-1], session.client))
            issued.append(body["refresh_token"])
        # Generation 2 is within the window, but its successor was rotated.
        assert_error(await present(rotor, via, issued[1], session.client), 400, "invalid_grant")
        await assert_reuse_revoked(db, session.family_id)
        assert (await reuse_event(db, session.family_id))["detail"]["generation"] == 2
        assert_error(await present(rotor, via, issued[-1], session.client), 400, "invalid_grant")
        assert len(await chain(db, session.family_id)) == 4


@pytest.mark.parametrize("via", VIAS)
async def test_grace_retry_after_the_successor_was_rotated_is_reuse(settings, db, via: str):
    async with serve_in_loop(settings, db, reuse_grace=30) as rotor:
        session = await begin(rotor)
        second = assert_tokens(await present(rotor, via, session.token, session.client))
        third = assert_tokens(await present(rotor, via, second["refresh_token"], session.client))

        assert_error(await present(rotor, via, session.token, session.client), 400, "invalid_grant")
        await assert_reuse_revoked(db, session.family_id)
        assert (await reuse_event(db, session.family_id))["detail"]["generation"] == 1
        assert_error(
            await present(rotor, via, third["refresh_token"], session.client),
            400,
            "invalid_grant",
        )


async def test_grace_retry_by_another_client_changes_nothing(settings, db):
    async with serve_in_loop(settings, db, reuse_grace=30) as rotor:
        session = await begin(rotor)
        first = assert_tokens(await present(rotor, "refresh-json", session.token, session.client))
        other = await rotor.client(name="other")
        before = await snapshot(db, session.family_id)
        assert_error(
            await present(rotor, "refresh-json", session.token, other), 400, "invalid_grant"
        )
        assert await snapshot(db, session.family_id) == before
        retry = assert_tokens(await present(rotor, "refresh-json", session.token, session.client))
        assert retry["refresh_token"] == first["refresh_token"]


async def test_grace_store_holds_no_usable_successor(settings, db):
    async with serve_in_loop(settings, db, reuse_grace=30) as rotor:
        session = await begin(rotor)
        successor = assert_tokens(
            await present(rotor, "refresh-json", session.token, session.client)
        )["refresh_token"]
        parent = await token_row(db, session.token)
        box = bytes(parent["successor_box"])
        raw = base64.urlsafe_b64decode(successor + "=" * (-len(successor) % 4))
        assert len(box) > len(raw)
        assert successor.encode() not in box
        assert raw not in box
        assert fingerprint(successor) not in box
        # Nothing in the whole store holds the successor in plain text.
        dump = await db.fetch("SELECT token_hash, parent_hash, successor_box FROM refresh_tokens")
        for row in dump:
            for value in row.values():
                if value is not None:
                    assert successor.encode() not in bytes(value)
                    assert raw not in bytes(value)


# --------------------------------------------------------------------------- refused requests


@pytest.mark.parametrize("via", VIAS)
async def test_another_clients_live_token_is_refused_and_untouched(rotor: Rotor, via: str):
    session = await begin(rotor)
    other = await rotor.client(name="other")
    before = await snapshot(rotor.db, session.family_id)
    assert_error(await present(rotor, via, session.token, other), 400, "invalid_grant")
    await assert_untouched_and_usable(rotor, via, session, before)


@pytest.mark.parametrize(
    "scope",
    # Within the client's scopes, beyond the family's: still a widening.
    ["admin", "read write admin", "unheard-of", "read\twrite"],
    ids=["admin", "read-write-admin", "unheard-of", "read-tab-write"],
)
@pytest.mark.parametrize("via", VIAS)
async def test_widening_scope_is_refused_and_spends_nothing(rotor: Rotor, via: str, scope: str):
    client = await rotor.client(scopes=["read", "write", "admin"])
    session = await begin(rotor, client=client, scope="read write")
    before = await snapshot(rotor.db, session.family_id)
    answer = await present(rotor, via, session.token, client, scope=scope)
    assert_error(answer, 400, "invalid_scope")
    await assert_untouched_and_usable(rotor, via, session, before)


@pytest.mark.parametrize("via", VIAS)
async def test_failed_client_authentication_spends_nothing(rotor: Rotor, via: str):
    session = await begin(rotor)
    before = await snapshot(rotor.db, session.family_id)
    answer = await present(rotor, via, session.token, session.client, secret="wrong-secret")
    assert_error(answer, 401, "invalid_client")
    assert answer.headers["www-authenticate"].startswith("Basic")
    await assert_untouched_and_usable(rotor, via, session, before)


@pytest.mark.parametrize("via", VIAS)
async def test_no_client_authentication_at_all_spends_nothing(rotor: Rotor, via: str):
    session = await begin(rotor)
    before = await snapshot(rotor.db, session.family_id)
    if via == "refresh-json":
        answer = await rotor.http.post("/refresh", json={"refresh_token": session.token})
    elif via == "refresh-form":
        answer = await rotor.http.post("/refresh", data={"refresh_token": session.token})
    else:
        answer = await rotor.token({"grant_type": "refresh_token", "refresh_token": session.token})
    assert_error(answer, 401, "invalid_client")
    assert answer.headers["www-authenticate"].startswith("Basic")
    await assert_untouched_and_usable(rotor, via, session, before)


@pytest.mark.parametrize("via", VIAS)
async def test_unknown_token_is_invalid_grant(rotor: Rotor, via: str):
    session = await begin(rotor)
    before = await snapshot(rotor.db, session.family_id)
    unknown = secrets.token_urlsafe(32)
    assert_error(await present(rotor, via, unknown, session.client), 400, "invalid_grant")
    await assert_untouched_and_usable(rotor, via, session, before)


@pytest.mark.parametrize("via", VIAS)
async def test_missing_refresh_token_is_invalid_request(rotor: Rotor, via: str):
    session = await begin(rotor)
    before = await snapshot(rotor.db, session.family_id)
    assert_error(await present(rotor, via, None, session.client), 400, "invalid_request")
    assert_error(await present(rotor, via, "", session.client), 400, "invalid_request")
    await assert_untouched_and_usable(rotor, via, session, before)


@pytest.mark.parametrize("padded", [False, True], ids=["garbage", "live-token-padded"])
@pytest.mark.parametrize("via", VIAS)
async def test_very_long_token_is_invalid_grant(rotor: Rotor, via: str, padded: bool):
    session = await begin(rotor)
    before = await snapshot(rotor.db, session.family_id)
    token = session.token + "A" * (10_000 - len(session.token)) if padded else "A" * 10_000
    assert_error(await present(rotor, via, token, session.client), 400, "invalid_grant")
    await assert_untouched_and_usable(rotor, via, session, before)


EXPIRE = {
    "token": "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' "
    "WHERE family_id = $1",
    "family": "UPDATE token_families SET expires_at = now() - interval '1 second' WHERE id = $1",
}


@pytest.mark.parametrize("what", EXPIRE)
@pytest.mark.parametrize("via", VIAS)
async def test_expired_token_or_family_is_invalid_grant(rotor: Rotor, via: str, what: str):
    session = await begin(rotor)
    await rotor.db.execute(EXPIRE[what], session.family_id)
    before = await snapshot(rotor.db, session.family_id)
    assert_error(await present(rotor, via, session.token, session.client), 400, "invalid_grant")
    assert await snapshot(rotor.db, session.family_id) == before
    assert (await family(rotor.db, session.family_id))["revoked_at"] is None
    assert (await token_row(rotor.db, session.token))["spent_at"] is None


@pytest.mark.parametrize("via", VIAS)
async def test_revoked_family_is_invalid_grant(rotor: Rotor, via: str):
    session = await begin(rotor)
    await rotor.db.execute(
        "UPDATE token_families SET revoked_at = now(), revoked_reason = 'admin' WHERE id = $1",
        session.family_id,
    )
    before = await snapshot(rotor.db, session.family_id)
    assert_error(await present(rotor, via, session.token, session.client), 400, "invalid_grant")
    assert await snapshot(rotor.db, session.family_id) == before
    assert (await family(rotor.db, session.family_id))["revoked_reason"] == "admin"
    assert await events(rotor.db, session.family_id) == []


@pytest.mark.parametrize("via", VIAS)
async def test_disabled_user_is_invalid_grant(rotor: Rotor, via: str):
    session = await begin(rotor)
    await rotor.db.execute(
        "UPDATE users SET disabled = true WHERE id = $1", uuid.UUID(session.user_id)
    )
    before = await snapshot(rotor.db, session.family_id)
    assert_error(await present(rotor, via, session.token, session.client), 400, "invalid_grant")
    assert await snapshot(rotor.db, session.family_id) == before
    assert (await token_row(rotor.db, session.token))["spent_at"] is None


@pytest.mark.parametrize("via", VIAS)
async def test_client_without_the_refresh_grant_is_unauthorized(rotor: Rotor, via: str):
    client = await rotor.client(grants=["password"])
    session = await begin(rotor, client=client)
    before = await snapshot(rotor.db, session.family_id)
    assert_error(await present(rotor, via, session.token, client), 400, "unauthorized_client")
    assert await snapshot(rotor.db, session.family_id) == before
    assert (await token_row(rotor.db, session.token))["spent_at"] is None


@pytest.mark.parametrize("via", VIAS)
async def test_public_client_refreshes_with_its_client_id_only(rotor: Rotor, via: str):
    client = await rotor.client(public=True, grants=["password", "refresh_token"])
    assert client.client_secret is None
    session = await begin(rotor, client=client)
    body = assert_tokens(await present(rotor, via, session.token, client))
    rows = await chain(rotor.db, session.family_id)
    assert [(r["generation"], r["spent_at"] is None) for r in rows] == [(1, False), (2, True)]
    assert rows[1]["token_hash"] == fingerprint(body["refresh_token"])
    claims = (await rotor.verify(body["access_token"])).claims
    assert claims["client_id"] == client.client_id
    assert claims["sid"] == str(session.family_id)


# --------------------------------------------------------------------------- scope


@pytest.mark.parametrize("via", VIAS)
async def test_narrowing_returns_the_narrower_scope_and_keeps_the_familys(rotor: Rotor, via: str):
    session = await begin(rotor)
    narrow = assert_tokens(
        await present(rotor, via, session.token, session.client, scope="read"), scope="read"
    )
    assert (await rotor.verify(narrow["access_token"])).claims["scope"] == "read"
    assert (await family(rotor.db, session.family_id))["scope"] == "read write"

    full = assert_tokens(await present(rotor, via, narrow["refresh_token"], session.client))
    assert (await rotor.verify(full["access_token"])).claims["scope"] == "read write"
    # Narrowing to "write" after "read" is not a widening: the family's scope counts.
    write = assert_tokens(
        await present(rotor, via, full["refresh_token"], session.client, scope="write"),
        scope="write",
    )
    assert (await rotor.verify(write["access_token"])).claims["scope"] == "write"


@pytest.mark.parametrize("via", VIAS)
async def test_widening_past_the_family_scope_is_refused(rotor: Rotor, via: str):
    session = await begin(rotor, scope="read")
    before = await snapshot(rotor.db, session.family_id)
    answer = await present(rotor, via, session.token, session.client, scope="read write")
    assert_error(answer, 400, "invalid_scope")
    assert await snapshot(rotor.db, session.family_id) == before
    body = assert_tokens(await present(rotor, via, session.token, session.client), scope="read")
    assert (await rotor.verify(body["access_token"])).claims["scope"] == "read"


# --------------------------------------------------------------------------- /refresh bodies


async def test_refresh_json_ignores_unknown_members(rotor: Rotor):
    session = await begin(rotor)
    answer = await rotor.http.post(
        "/refresh",
        json={
            "refresh_token": session.token,
            "grant_type": "password",
            "username": "mallory",
            "extra": {"nested": [1, 2]},
            "scope": None,
        },
        headers=session.client.auth,
    )
    assert_tokens(answer)


async def test_refresh_json_accepts_client_secret_post(rotor: Rotor):
    session = await begin(rotor)
    answer = await rotor.http.post(
        "/refresh",
        json={
            "refresh_token": session.token,
            "client_id": session.client.client_id,
            "client_secret": session.client.client_secret,
        },
    )
    assert_tokens(answer)


JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MALFORMED_BODIES = {
    "json-array": (b'["refresh_token"]', JSON),
    "json-string": (b'"just a string"', JSON),
    "json-null": (b"null", JSON),
    "invalid-json": (b'{"refresh_token": ', JSON),
    "not-utf8": (b"\xff\xfe{}", JSON),
    "token-number": (b'{"refresh_token": 12345}', JSON),
    "token-array": (b'{"refresh_token": ["TOKEN"]}', JSON),
    "token-object": (b'{"refresh_token": {"value": "TOKEN"}}', JSON),
    "scope-number": (b'{"refresh_token": "TOKEN", "scope": 7}', JSON),
    "text-plain": (b'{"refresh_token": "TOKEN"}', "text/plain"),
    "no-content-type": (b'{"refresh_token": "TOKEN"}', None),
    "repeated-form-parameter": (b"refresh_token=TOKEN&refresh_token=TOKEN", FORM),
    "repeated-scope": (b"refresh_token=TOKEN&scope=read&scope=read", FORM),
    "repeated-one-empty": (b"refresh_token=TOKEN&refresh_token=", FORM),
}


@pytest.mark.parametrize("case", MALFORMED_BODIES)
async def test_malformed_refresh_body_is_invalid_request(rotor: Rotor, case: str):
    content, content_type = MALFORMED_BODIES[case]
    session = await begin(rotor)
    before = await snapshot(rotor.db, session.family_id)
    headers = dict(session.client.auth)
    if content_type is not None:
        headers["Content-Type"] = content_type
    answer = await rotor.http.post(
        "/refresh", content=content.replace(b"TOKEN", session.token.encode()), headers=headers
    )
    assert_error(answer, 400, "invalid_request")
    await assert_untouched_and_usable(rotor, "refresh-json", session, before)


# I-JSON (RFC 7493): what a lenient decoder would read one way and a proxy or
# a log another. Each answer is exact; none spends the live token.
NOT_JSON = "the body is not valid JSON"
STRICT_JSON_BODIES = {
    "bad-utf8-in-a-string": (b'{"refresh_token": "TOKEN", "scope": "\xff"}', NOT_JSON),
    "lone-surrogate": (b'{"refresh_token": "TOKEN", "scope": "\\ud800"}', NOT_JSON),
    "nan": (b'{"refresh_token": "TOKEN", "ttl": NaN}', NOT_JSON),
    "too-deep": (b'{"refresh_token": "TOKEN", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", NOT_JSON),
    "nul-in-a-member": (
        b'{"refresh_token": "TOKEN", "scope": "read\\u0000"}',
        "scope must not contain NUL characters",
    ),
    "repeated-token, the live one last": (
        b'{"refresh_token": "bogus", "refresh_token": "TOKEN"}',
        "refresh_token is repeated in the JSON body",
    ),
    "repeated-token, the live one first": (
        b'{"refresh_token": "TOKEN", "refresh_token": "bogus"}',
        "refresh_token is repeated in the JSON body",
    ),
    "repeated-unknown-member": (
        b'{"refresh_token": "TOKEN", "x": 1, "x": 2}',
        "a member is repeated in the JSON body",
    ),
    "repeated-in-a-nested-object": (
        b'{"refresh_token": "TOKEN", "x": {"a": 1, "a": 2}}',
        "a member is repeated in the JSON body",
    ),
}


@pytest.mark.parametrize("case", STRICT_JSON_BODIES)
async def test_refresh_json_is_read_strictly(rotor: Rotor, case: str):
    content, description = STRICT_JSON_BODIES[case]
    session = await begin(rotor)
    before = await snapshot(rotor.db, session.family_id)
    answer = await rotor.http.post(
        "/refresh",
        content=content.replace(b"TOKEN", session.token.encode()),
        headers={**session.client.auth, "Content-Type": JSON},
    )
    assert_error(answer, 400, "invalid_request", description)
    await assert_untouched_and_usable(rotor, "refresh-json", session, before)


async def test_repeated_parameter_at_token_is_invalid_request(rotor: Rotor):
    session = await begin(rotor)
    before = await snapshot(rotor.db, session.family_id)
    body = urlencode(
        [
            ("grant_type", "refresh_token"),
            ("refresh_token", session.token),
            ("refresh_token", session.token),
        ]
    )
    headers = {**session.client.auth, "Content-Type": "application/x-www-form-urlencoded"}
    answer = await rotor.http.post("/token", content=body, headers=headers)
    assert_error(answer, 400, "invalid_request")
    await assert_untouched_and_usable(rotor, "token-form", session, before)


async def test_refresh_token_in_the_query_string_is_invalid_request(rotor: Rotor):
    session = await begin(rotor)
    before = await snapshot(rotor.db, session.family_id)
    answer = await rotor.http.post(
        f"/refresh?refresh_token={session.token}",
        json={"refresh_token": session.token},
        headers=session.client.auth,
    )
    assert_error(answer, 400, "invalid_request")
    await assert_untouched_and_usable(rotor, "refresh-json", session, before)


# --------------------------------------------------------------------------- concurrency

ROUNDS = 10
CONCURRENT = 20


async def race(
    rotor: Rotor, session: Session, stats: dict[str, int]
) -> tuple[list[httpx.Response], int]:
    """CONCURRENT simultaneous /refresh with one token, while the test's own
    connection watches the most live tokens any family has at any moment."""
    stats["max"] = 0
    done = asyncio.Event()
    most_live = 0

    async def watch() -> None:
        nonlocal most_live
        while not done.is_set():
            most_live = max(
                most_live,
                await rotor.db.fetchval(
                    "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM refresh_tokens "
                    "WHERE spent_at IS NULL GROUP BY family_id) AS live"
                ),
            )
            await asyncio.sleep(0)

    async def go() -> list[httpx.Response]:
        try:
            return list(
                await asyncio.gather(
                    *[
                        rotor.http.post(
                            "/refresh",
                            json={"refresh_token": session.token},
                            headers=session.client.auth,
                        )
                        for _ in range(CONCURRENT)
                    ]
                )
            )
        finally:
            done.set()

    answers, _ = await asyncio.gather(go(), watch())
    assert stats["max"] == CONCURRENT  # every request was in flight at once
    return answers, most_live


async def test_concurrent_refreshes_rotate_exactly_once_grace_0(settings, db):
    tallies = []
    stats = {"now": 0, "max": 0}
    async with serve_in_loop(settings, db, stats=stats, reuse_grace=0, db_pool_size=10) as rotor:
        client = await rotor.client()
        for index in range(ROUNDS):
            session = await begin(rotor, username=f"racer{index}", client=client)
            answers, most_live = await race(rotor, session, stats)
            tally = Counter(a.status_code for a in answers)
            tallies.append(dict(tally))
            assert tally == Counter({200: 1, 400: CONCURRENT - 1}), [a.text for a in answers]
            for answer in answers:
                assert_no_store(answer)
                if answer.status_code == 400:
                    assert answer.json()["error"] == "invalid_grant"
            winner = next(a for a in answers if a.status_code == 200).json()["refresh_token"]
            assert most_live == 1
            rows = await chain(db, session.family_id)
            assert [(r["generation"], r["spent_at"] is None) for r in rows] == [
                (1, False),
                (2, True),
            ]
            assert rows[1]["token_hash"] == fingerprint(winner)
            await assert_reuse_revoked(db, session.family_id, reuse_events=CONCURRENT - 1)
            assert_error(await present(rotor, "refresh-json", winner, client), 400, "invalid_grant")
    print("grace 0 rounds:", tallies)


async def test_concurrent_refreshes_share_one_successor_with_grace(settings, db):
    tallies = []
    stats = {"now": 0, "max": 0}
    async with serve_in_loop(settings, db, stats=stats, reuse_grace=30, db_pool_size=10) as rotor:
        client = await rotor.client()
        for index in range(ROUNDS):
            session = await begin(rotor, username=f"racer{index}", client=client)
            answers, most_live = await race(rotor, session, stats)
            tally = Counter(a.status_code for a in answers)
            tallies.append(dict(tally))
            assert tally == Counter({200: CONCURRENT}), [a.text for a in answers]
            successors = {a.json()["refresh_token"] for a in answers}
            assert len(successors) == 1
            assert len({a.json()["access_token"] for a in answers}) == CONCURRENT
            assert most_live == 1
            rows = await chain(db, session.family_id)
            assert [(r["generation"], r["spent_at"] is None) for r in rows] == [
                (1, False),
                (2, True),
            ]
            assert rows[1]["token_hash"] == fingerprint(successors.pop())
            assert (await family(db, session.family_id))["revoked_at"] is None
            assert await events(db, session.family_id) == []
    print("grace 30 rounds:", tallies)


async def test_rotation_that_keeps_conflicting_gives_up_with_invalid_grant(
    rotor: Rotor, monkeypatch: pytest.MonkeyPatch
):
    """Serialization failures are retried a bounded number of times, then
    answered as a refusal, never a 500; the token stays unspent."""
    from service.tokens.rotation import MAX_ATTEMPTS, RotationService

    session = await begin(rotor)
    before = await snapshot(rotor.db, session.family_id)
    tries: list[object] = []

    async def conflicting(*args: object) -> None:
        tries.append(args)
        raise asyncpg.SerializationError("could not serialize access")

    monkeypatch.setattr(RotationService, "_rotate", conflicting)
    answer = await present(rotor, "refresh-json", session.token, session.client)
    assert (answer.status_code, answer.json(), len(tries)) == (
        400,
        {
            "error": "invalid_grant",
            "error_description": "concurrent requests with the same refresh token",
        },
        MAX_ATTEMPTS,
    )
    monkeypatch.undo()
    await assert_untouched_and_usable(rotor, "refresh-json", session, before)
