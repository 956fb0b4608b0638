"""Login throttling at /token (CONTRACT section 1 and 3.2).

The apps here allow 3 failures in a 60-second window. Time passes by moving
the `at` of login_failures rows back with SQL; nothing sleeps.

The in-process test client's peer is "testclient", not an IP address, so the
per-IP limit cannot apply to it; the IP tests serve the app behind a tiny ASGI
wrapper that sets the peer address from an `x-test-peer` header, as a real
server would from the socket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from litestar.testing import AsyncTestClient
from litestar.types import ASGIApp, Receive, Scope, Send

from service.app import create_app
from service.config import Settings
from service.http.caller import client_ip
from tests.helpers import PASSWORD, RegisteredClient, Rotor

MAX_FAILURES = 3
WINDOW = 60
PEER = "198.51.100.7"
PROXY = "10.0.0.1"


def with_peer_header(app: ASGIApp) -> ASGIApp:
    """The peer address a server would take from the socket, here from a header."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-test-peer":
                    scope["client"] = (value.decode(), 50000)
        await app(scope, receive, send)

    return wrapped


@asynccontextmanager
async def serve(
    settings: Settings, db: asyncpg.Connection, *, peers: bool = False, **overrides: Any
) -> AsyncIterator[Rotor]:
    limits: dict[str, Any] = {"login_max_failures": MAX_FAILURES, "login_window": WINDOW}
    changed = settings.with_overrides(**{**limits, **overrides})
    app: Any = create_app(changed)
    async with AsyncTestClient(with_peer_header(app) if peers else app) as http:
        yield Rotor(http, changed, db)


@pytest.fixture
async def rotor(settings: Settings, db: asyncpg.Connection) -> AsyncIterator[Rotor]:
    """This file's Rotor: 3 failures per 60 seconds, peer "testclient"."""
    async with serve(settings, db) as served:
        yield served


async def login(
    rotor: Rotor,
    client: RegisteredClient,
    username: str = "alice",
    password: str = PASSWORD,
    **headers: str,
) -> httpx.Response:
    data = {"grant_type": "password", "username": username, "password": password}
    extra = {name.replace("_", "-"): value for name, value in headers.items()}
    return await rotor.token(data, {**client.auth, **extra})


async def fail(
    rotor: Rotor, client: RegisteredClient, username: str = "alice", **headers: str
) -> None:
    response = await login(rotor, client, username, "wrong password", **headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"


def assert_locked(response: httpx.Response, case: object = "") -> int:
    assert response.status_code == 429, (case, response.text)
    assert response.json() == {
        "error": "slow_down",
        "error_description": "too many failed login attempts; retry later",
    }
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    return int(retry_after)


async def failures(db: asyncpg.Connection, kind: str, subject: str) -> int:
    value: int = await db.fetchval(
        "SELECT count(*) FROM login_failures WHERE subject_kind = $1 AND subject = $2",
        kind,
        subject,
    )
    return value


async def events(db: asyncpg.Connection, event_type: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT user_id::text, client_id::text, host(ip) AS ip, detail::text AS detail "
        "FROM security_events WHERE type = $1 ORDER BY seq",
        event_type,
    )


async def age_failures(db: asyncpg.Connection, seconds: int, where: str = "true") -> None:
    await db.execute(
        f"UPDATE login_failures SET at = at - make_interval(secs => $1) WHERE {where}", seconds
    )


def counting(target: Any, name: str) -> list[object]:
    """Replace an async method of `target` with one that records its calls."""
    calls: list[object] = []
    original: Callable[..., Awaitable[Any]] = getattr(target, name)

    async def wrapper(*args: Any) -> Any:
        calls.append(args)
        return await original(*args)

    setattr(target, name, wrapper)
    return calls


# --- the username limit --------------------------------------------------------------------


async def test_right_password_after_max_failures_is_429_without_hashing(rotor: Rotor) -> None:
    client = await rotor.client()
    await rotor.user()
    for _ in range(MAX_FAILURES):
        await fail(rotor, client)
    hasher = rotor.http.app.state.services.hasher
    verified, hashed = counting(hasher, "verify"), counting(hasher, "hash")

    response = await login(rotor, client)

    retry_after = assert_locked(response)
    assert 1 <= retry_after <= WINDOW
    assert verified == []
    assert hashed == []
    assert await failures(rotor.db, "username", "alice") == MAX_FAILURES
    locked = await events(rotor.db, "login_locked")
    assert len(locked) == 1
    assert locked[0]["client_id"] == client.client_id
    assert json.loads(locked[0]["detail"]) == {"retry_after": retry_after}
    assert await rotor.db.fetchval("SELECT count(*) FROM token_families") == 0


async def test_attempt_below_the_limit_still_checks_the_password(rotor: Rotor) -> None:
    client = await rotor.client()
    await rotor.user()
    for _ in range(MAX_FAILURES - 1):
        await fail(rotor, client)

    response = await login(rotor, client)

    assert response.status_code == 200, response.text
    assert await failures(rotor.db, "username", "alice") == 0


async def test_refused_attempts_do_not_count_and_aged_failures_release(rotor: Rotor) -> None:
    client = await rotor.client()
    await rotor.user()
    for _ in range(MAX_FAILURES):
        await fail(rotor, client)

    for attempt in range(4):
        assert_locked(await login(rotor, client, password="wrong again"), attempt)

    assert await failures(rotor.db, "username", "alice") == MAX_FAILURES
    assert len(await events(rotor.db, "login_failed")) == MAX_FAILURES
    assert len(await events(rotor.db, "login_locked")) == 4
    # Once the counted failures age out, nothing is left to hold the lock.
    await age_failures(rotor.db, WINDOW + 1)
    response = await login(rotor, client)
    assert response.status_code == 200, response.text
    assert await failures(rotor.db, "username", "alice") == 0


async def test_lock_lasts_until_enough_failures_age_out(rotor: Rotor) -> None:
    client = await rotor.client()
    await rotor.user()
    for _ in range(MAX_FAILURES):
        await fail(rotor, client)
    ids = [row["id"] for row in await rotor.db.fetch("SELECT id FROM login_failures ORDER BY id")]
    # Failures 50, 30 and 10 seconds ago: the oldest leaves the window in ~10 s.
    for row_id, age in zip(ids, [50, 30, 10], strict=True):
        await age_failures(rotor.db, age, f"id = {row_id}")

    retry_after = assert_locked(await login(rotor, client))
    assert 7 <= retry_after <= 10  # a few seconds of slack for a loaded machine

    await age_failures(rotor.db, 11, f"id = {ids[0]}")  # now 61 s old: out of the window
    response = await login(rotor, client)
    assert response.status_code == 200, response.text


async def test_retry_after_follows_the_configured_window(
    settings: Settings, db: asyncpg.Connection
) -> None:
    async with serve(settings, db, login_window=900) as rotor:
        client = await rotor.client()
        await rotor.user()
        for _ in range(MAX_FAILURES):
            await fail(rotor, client)
        retry_after = assert_locked(await login(rotor, client))
        await age_failures(db, 600)
        retry_after_later = assert_locked(await login(rotor, client))

    assert 895 <= retry_after <= 900
    assert 295 <= retry_after_later <= 300


async def test_limit_is_per_username_known_or_not(rotor: Rotor) -> None:
    client = await rotor.client()
    await rotor.user()
    await rotor.user("bob")
    for _ in range(MAX_FAILURES):
        await fail(rotor, client)
        await fail(rotor, client, "ghost")

    alice = await login(rotor, client)
    ghost = await login(rotor, client, "ghost")
    bob = await login(rotor, client, username="bob")

    assert_locked(alice, "alice")
    assert_locked(ghost, "unknown username")
    assert bob.status_code == 200, bob.text
    assert await failures(rotor.db, "username", "ghost") == MAX_FAILURES


async def test_successful_login_clears_that_usernames_failures(rotor: Rotor) -> None:
    client = await rotor.client()
    await rotor.user()
    await rotor.user("bob")
    for _ in range(MAX_FAILURES - 1):
        await fail(rotor, client)
    await fail(rotor, client, "bob")

    assert (await login(rotor, client)).status_code == 200

    assert await failures(rotor.db, "username", "alice") == 0
    assert await failures(rotor.db, "username", "bob") == 1
    # A fresh allowance: two more failures and the right password still get in.
    for _ in range(MAX_FAILURES - 1):
        await fail(rotor, client)
    assert (await login(rotor, client)).status_code == 200


async def test_peer_without_an_ip_address_is_limited_by_username_only(rotor: Rotor) -> None:
    # The test client's peer is "testclient": no IP subject, no IP in events.
    client = await rotor.client()
    for name in ["u1", "u2", "u3", "u4"]:
        await fail(rotor, client, name)

    kinds = await rotor.db.fetch("SELECT DISTINCT subject_kind FROM login_failures")
    assert [row["subject_kind"] for row in kinds] == ["username"]
    assert [row["ip"] for row in await events(rotor.db, "login_failed")] == [None] * 4


@asynccontextmanager
async def serve_in_loop(
    settings: Settings, db: asyncpg.Connection, peer: str
) -> AsyncIterator[Rotor]:
    """Served on this test's own loop, so gathered requests really run at once
    (the portal-based test client answers one request at a time)."""
    changed = settings.with_overrides(login_max_failures=MAX_FAILURES, login_window=WINDOW)
    app = create_app(changed)
    transport = httpx.ASGITransport(app=app, client=(peer, 50000))
    async with (
        app.lifespan(),
        httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as http,
    ):
        yield Rotor(http, changed, db)  # type: ignore[arg-type]


async def test_concurrent_attempts_never_exceed_the_limit(
    settings: Settings, db: asyncpg.Connection
) -> None:
    async with serve_in_loop(settings, db, PEER) as rotor:
        client = await rotor.client()
        await rotor.user()
        responses = await asyncio.gather(
            *(login(rotor, client, password=f"wrong {n}") for n in range(8))
        )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [400] * MAX_FAILURES + [429] * (8 - MAX_FAILURES)
    assert await failures(db, "username", "alice") == MAX_FAILURES


async def test_more_simultaneous_right_passwords_than_the_limit_all_log_in(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """Only failures lock (CONTRACT section 1): attempts beyond the limit wait
    for those in flight instead of being refused."""
    async with serve_in_loop(settings, db, PEER) as rotor:
        client = await rotor.client()
        await rotor.user()
        responses = await asyncio.gather(*(login(rotor, client) for _ in range(3 * MAX_FAILURES)))

    assert [response.status_code for response in responses] == [200] * (3 * MAX_FAILURES)
    assert await failures(db, "username", "alice") == 0


async def test_guesses_beside_right_passwords_never_exceed_the_limit(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """Wrong and right passwords at once: which answer each gets depends on the
    order of the checks (a success clears the failures before it); every 400
    is a recorded failure, the count never passes the limit, and no attempt
    is left in flight."""
    async with serve_in_loop(settings, db, PEER) as rotor:
        client = await rotor.client()
        await rotor.user()
        attempts = [login(rotor, client, password=f"wrong {n}") for n in range(2 * MAX_FAILURES)]
        attempts += [login(rotor, client) for _ in range(MAX_FAILURES)]
        responses = await asyncio.gather(*attempts)

    wrong = [response.status_code for response in responses[: 2 * MAX_FAILURES]]
    right = [response.status_code for response in responses[2 * MAX_FAILURES :]]
    assert set(wrong) <= {400, 429}
    assert set(right) <= {200, 429}  # 429 once the wrong ones lock the account first
    assert len(await events(db, "login_failed")) == wrong.count(400)
    assert await failures(db, "username", "alice") <= MAX_FAILURES
    assert await db.fetchval("SELECT count(*) FROM login_failures WHERE pending") == 0


async def test_simultaneous_honest_logins_from_one_ip_are_not_locked_out(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """A BFF logs in many users at once from one IP: pending attempts are not failures."""
    async with serve_in_loop(settings, db, PEER) as rotor:
        client = await rotor.client()
        names = [f"user{n}" for n in range(3 * MAX_FAILURES)]
        for name in names:
            await rotor.user(name)
        responses = await asyncio.gather(*(login(rotor, client, name) for name in names))

    assert [response.status_code for response in responses] == [200] * len(names)
    assert await failures(db, "ip", PEER) == 0


# --- the client IP limit -------------------------------------------------------------------


async def test_limit_per_client_ip_across_usernames(
    settings: Settings, db: asyncpg.Connection
) -> None:
    async with serve(settings, db, peers=True) as rotor:
        client = await rotor.client()
        await rotor.user()
        for name in ["u1", "u2", "u3"]:
            await fail(rotor, client, name, x_test_peer=PEER)

        same_ip = await login(rotor, client, x_test_peer=PEER)
        other_ip = await login(rotor, client, x_test_peer="198.51.100.8")
        for name in ["u4", "u5", "u6"]:
            await fail(rotor, client, name, x_test_peer="2001:db8::7")
        ipv6 = await login(rotor, client, x_test_peer="2001:db8::7")

    assert_locked(same_ip)
    assert other_ip.status_code == 200, other_ip.text
    assert await failures(db, "ip", PEER) == MAX_FAILURES
    locked = await events(db, "login_locked")
    assert_locked(ipv6, "ipv6")
    assert await failures(db, "ip", "2001:db8::7") == MAX_FAILURES
    assert [row["ip"] for row in locked] == [PEER, "2001:db8::7"]
    assert [row["ip"] for row in await events(db, "login_failed")] == [PEER] * 3 + [
        "2001:db8::7"
    ] * 3


async def test_success_does_not_clear_the_ips_other_failures(
    settings: Settings, db: asyncpg.Connection
) -> None:
    # An attacker's own good login must not reset the count of its IP.
    async with serve(settings, db, peers=True) as rotor:
        client = await rotor.client()
        await rotor.user("mallory")
        await fail(rotor, client, "victim1", x_test_peer=PEER)
        await fail(rotor, client, "victim2", x_test_peer=PEER)
        own = await login(rotor, client, "mallory", x_test_peer=PEER)
        await fail(rotor, client, "victim3", x_test_peer=PEER)

        locked = await login(rotor, client, "mallory", x_test_peer=PEER)

    assert own.status_code == 200, own.text
    assert_locked(locked)
    assert await failures(db, "ip", PEER) == MAX_FAILURES


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    settings: Settings, db: asyncpg.Connection
) -> None:
    trusted = (ipaddress.ip_network("10.0.0.0/8"),)
    async with serve(settings, db, peers=True, trusted_proxies=trusted) as rotor:
        client = await rotor.client()
        await rotor.user()
        for n, name in enumerate(["u1", "u2", "u3"]):
            await fail(rotor, client, name, x_test_peer=PEER, x_forwarded_for=f"203.0.113.{n}")

        response = await login(rotor, client, x_test_peer=PEER, x_forwarded_for="203.0.113.9")

    assert_locked(response)
    ip_subjects = await db.fetch(
        "SELECT DISTINCT subject FROM login_failures WHERE subject_kind = 'ip'"
    )
    assert [row["subject"] for row in ip_subjects] == [PEER]


async def test_forwarded_for_from_a_trusted_proxy_is_believed(
    settings: Settings, db: asyncpg.Connection
) -> None:
    trusted = (ipaddress.ip_network("10.0.0.0/8"),)
    async with serve(settings, db, peers=True, trusted_proxies=trusted) as rotor:
        client = await rotor.client()
        await rotor.user()
        for name in ["u1", "u2", "u3"]:
            await fail(rotor, client, name, x_test_peer=PROXY, x_forwarded_for="203.0.113.5")

        same_client = await login(rotor, client, x_test_peer=PROXY, x_forwarded_for="203.0.113.5")
        # A spoofed left-most hop does not hide the address the proxy saw.
        spoofed = await login(
            rotor, client, x_test_peer=PROXY, x_forwarded_for="192.0.2.1, 203.0.113.5"
        )
        other_client = await login(rotor, client, x_test_peer=PROXY, x_forwarded_for="203.0.113.6")

    assert_locked(same_client, "same client")
    assert_locked(spoofed, "spoofed")
    assert other_client.status_code == 200, other_client.text
    assert await failures(db, "ip", "203.0.113.5") == MAX_FAILURES
    assert await failures(db, "ip", PROXY) == 0
    assert [row["ip"] for row in await events(db, "login_failed")] == ["203.0.113.5"] * 3


# --- client_ip, the function ---------------------------------------------------------------

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "trusted", "expected"),
    [
        (None, "203.0.113.5", TRUSTED, None),
        ("testclient", "203.0.113.5", TRUSTED, None),
        ("198.51.100.7", None, TRUSTED, "198.51.100.7"),
        ("198.51.100.7", "203.0.113.5", (), "198.51.100.7"),
        ("198.51.100.7", "203.0.113.5", TRUSTED, "198.51.100.7"),
        ("10.0.0.1", "203.0.113.5", (), "10.0.0.1"),
        ("10.0.0.1", "203.0.113.5", TRUSTED, "203.0.113.5"),
        ("10.0.0.1", " 203.0.113.5 ", TRUSTED, "203.0.113.5"),
        ("10.0.0.1", "192.0.2.1, 203.0.113.5", TRUSTED, "203.0.113.5"),
        ("10.0.0.1", "192.0.2.1, 203.0.113.5, 10.0.0.2", TRUSTED, "203.0.113.5"),
        ("10.0.0.1", "203.0.113.5,10.9.9.9", TRUSTED, "203.0.113.5"),
        ("10.0.0.1", "garbage", TRUSTED, "10.0.0.1"),
        ("10.0.0.1", "203.0.113.5, garbage", TRUSTED, "10.0.0.1"),
        ("10.0.0.1", "", TRUSTED, "10.0.0.1"),
        ("fd00::1", "2001:db8::5", TRUSTED, "2001:db8::5"),
        ("2001:db8::9", "203.0.113.5", TRUSTED, "2001:db8::9"),
    ],
)
def test_client_ip(
    peer: str | None,
    forwarded_for: str | None,
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
    expected: str | None,
) -> None:
    assert client_ip(peer, forwarded_for, trusted) == expected


# --- attempts that end neither in success nor in failure ----------------------------------


async def test_logins_that_hashing_cannot_serve_count_as_no_failure(
    rotor: Rotor, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """503 is the service's failure, not the caller's: the reserved row goes,
    and the right password afterwards still logs in."""
    from service.accounts.passwords import HashingUnavailable, PasswordHasher

    client = await rotor.client()
    await rotor.user()
    real_verify = PasswordHasher.verify

    async def unavailable(*_: object) -> bool:
        raise HashingUnavailable

    monkeypatch.setattr(PasswordHasher, "verify", unavailable)
    statuses = [(await login(rotor, client)).status_code for _ in range(MAX_FAILURES + 1)]
    assert statuses == [503] * (MAX_FAILURES + 1)
    assert await failures(db, "username", "alice") == 0
    monkeypatch.setattr(PasswordHasher, "verify", real_verify)
    assert (await login(rotor, client)).status_code == 200


async def test_a_login_cancelled_while_hashing_releases_its_reservation(
    settings: Settings, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller went away (or the deadline struck) mid-hash: no failure is left."""
    from service.accounts.passwords import PasswordHasher

    hashing = asyncio.Event()

    async def forever(*_: object) -> bool:
        hashing.set()
        await asyncio.Event().wait()
        raise AssertionError("not reached")

    async with serve_in_loop(settings, db, PEER) as rotor:
        client = await rotor.client()
        await rotor.user()
        monkeypatch.setattr(PasswordHasher, "verify", forever)
        pending = asyncio.ensure_future(login(rotor, client))
        await asyncio.wait_for(hashing.wait(), 10)
        assert await failures(db, "username", "alice") == 1  # reserved while it hashes
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        assert await failures(db, "username", "alice") == 0


async def test_a_wrong_password_keeps_its_reserved_row_as_the_failure(
    rotor: Rotor, db: asyncpg.Connection
) -> None:
    client = await rotor.client()
    await rotor.user()
    await fail(rotor, client)
    assert await failures(db, "username", "alice") == 1


async def pending_rows(db: asyncpg.Connection, count: int, age: int = 0) -> None:
    """Attempts in flight in some other process (or left by a dead one)."""
    await db.executemany(
        "INSERT INTO login_failures (subject_kind, subject, pending, at) "
        "VALUES ('username', 'alice', true, now() - make_interval(secs => $1))",
        [(age,)] * count,
    )


async def test_an_attempt_waits_for_those_in_flight_then_logs_in(
    settings: Settings, db: asyncpg.Connection
) -> None:
    async with serve_in_loop(settings, db, PEER) as rotor:
        client = await rotor.client()
        await rotor.user()
        await pending_rows(db, MAX_FAILURES)
        waiting = asyncio.ensure_future(login(rotor, client))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        await db.execute("DELETE FROM login_failures WHERE pending")  # they ended well
        response = await asyncio.wait_for(waiting, 10)
    assert response.status_code == 200, response.text


async def test_attempts_in_flight_for_too_long_make_a_login_503(
    settings: Settings, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.accounts import throttle

    monkeypatch.setattr(throttle, "IN_FLIGHT_MAX_WAIT", 0.3)
    async with serve_in_loop(settings, db, PEER) as rotor:
        client = await rotor.client()
        await rotor.user()
        await pending_rows(db, MAX_FAILURES)
        response = await login(rotor, client)
    assert (response.status_code, response.json(), response.headers["retry-after"]) == (
        503,
        {
            "error": "temporarily_unavailable",
            "error_description": "too many logins in progress; retry shortly",
        },
        "1",
    )


async def test_pending_rows_of_a_dead_process_count_as_failures(
    settings: Settings, db: asyncpg.Connection
) -> None:
    from service.accounts.throttle import STALE_PENDING

    async with serve(settings, db, login_window=10 * STALE_PENDING) as rotor:
        client = await rotor.client()
        await rotor.user()
        await pending_rows(db, MAX_FAILURES - 1, age=STALE_PENDING + 1)
        assert (await login(rotor, client, password="wrong")).status_code == 400
        assert_locked(await login(rotor, client))


async def test_a_waiting_login_holds_a_place_in_the_hash_queue(
    settings: Settings, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guesses piling up on one account are bounded like any other logins: with
    room for one, a login that waits leaves none for another, which gets a fast 503."""
    from service.accounts import passwords

    monkeypatch.setattr(passwords, "MAX_WAITING_PER_SLOT", 1)
    async with serve_in_loop(settings.with_overrides(hash_concurrency=1), db, PEER) as rotor:
        client = await rotor.client()
        await rotor.user()
        await rotor.user("bob")
        await pending_rows(db, MAX_FAILURES)
        waiting = asyncio.ensure_future(login(rotor, client))
        await asyncio.sleep(0.3)
        other = await login(rotor, client, "bob")
        await db.execute("DELETE FROM login_failures WHERE pending")
        waited = await asyncio.wait_for(waiting, 10)
        after = await login(rotor, client, "bob")
    assert (other.status_code, other.json()["error_description"]) == (
        503,
        "too many logins in progress; retry shortly",
    )
    assert (waited.status_code, after.status_code) == (200, 200)
