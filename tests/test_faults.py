"""Faults (CONTRACT section 5): the database going away, pool exhaustion, SIGTERM, SIGKILL.

The database outage is made with a TCP proxy between Rotor and PostgreSQL that
the test can cut (refuse connections, drop the open ones) or turn into a black
hole (accept, never answer), and then restore: the shared test server itself
keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.config import Settings
from tests.helpers import PASSWORD, Rotor, start_rotor


class DatabaseProxy:
    """127.0.0.1:<port> -> the PostgreSQL behind `database_url` (TCP or unix socket)."""

    def __init__(self, database_url: str) -> None:
        parts = urlsplit(database_url)
        host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
        port = parts.port or 5432
        self._target = (
            ("unix", f"{host}/.s.PGSQL.{port}")
            if host.startswith("/")
            else ("tcp", f"{host}:{port}")
        )
        self._parts = parts
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.mode = "forward"  # or "blackhole"
        self.port = 0

    @property
    def url(self) -> str:
        user = self._parts.username or "postgres"
        return urlunsplit(("postgresql", f"{user}@127.0.0.1:{self.port}", self._parts.path, "", ""))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones: the database is gone."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _open_target(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        kind, where = self._target
        if kind == "unix":
            return await asyncio.open_unix_connection(where)
        host, port = where.rsplit(":", 1)
        return await asyncio.open_connection(host, int(port))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.mode == "blackhole":
            with contextlib.suppress(Exception):
                await reader.read()  # accept, never answer
            return
        upstream_reader, upstream_writer = await self._open_target()
        self._writers.add(upstream_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


class ThreadedProxy:
    """The proxy on its own event loop in a thread, so it keeps forwarding whatever
    the test's loop is doing (the test client may block it)."""

    def __init__(self, database_url: str) -> None:
        self.proxy = DatabaseProxy(database_url)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def _run(self, coro) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    @property
    def url(self) -> str:
        return self.proxy.url

    async def start(self) -> None:
        self._run(self.proxy.start())

    async def cut(self) -> None:
        self._run(self.proxy.cut())

    def blackhole(self) -> None:
        self.proxy.mode = "blackhole"

    def close(self) -> None:
        self._run(self.proxy.cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[ThreadedProxy]:
    proxy = ThreadedProxy(database_url)
    await proxy.start()
    yield proxy
    proxy.close()


@pytest.fixture
async def outage_rotor(settings: Settings, proxy: ThreadedProxy, db) -> AsyncIterator[Rotor]:
    """Rotor whose only way to the database is the proxy, with a 1-second bound."""
    new = settings.with_overrides(database_url=proxy.url, db_timeout=1.0)
    async with AsyncTestClient(create_app(new)) as http:
        yield Rotor(http, new, db)


async def _timed(coro) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await coro
    return response, time.monotonic() - started


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "temporarily_unavailable"
    assert response.headers["retry-after"].isdigit()


async def test_database_gone_answers_503_fast_and_recovers_without_restart(
    outage_rotor: Rotor, proxy: ThreadedProxy
) -> None:
    rotor = outage_rotor
    client = await rotor.client()
    gateway = await rotor.client(grants=[], introspect=True)
    await rotor.user()
    tokens = (await rotor.login(client)).json()

    await proxy.cut()
    refresh, refresh_took = await _timed(
        rotor.http.post(
            "/refresh", json={"refresh_token": tokens["refresh_token"]}, headers=client.auth
        )
    )
    introspect, introspect_took = await _timed(
        rotor.http.post("/introspect", data={"token": tokens["access_token"]}, headers=gateway.auth)
    )
    ready = await rotor.http.get("/health/ready")
    live = await rotor.http.get("/health/live")

    _assert_unavailable(refresh)
    _assert_unavailable(introspect)
    assert refresh_took < 2.5
    assert introspect_took < 2.5
    assert (ready.status_code, live.status_code) == (503, 200)

    await proxy.start()  # the database is back: no restart of Rotor
    deadline = time.monotonic() + 10
    while (await rotor.http.get("/health/ready")).status_code != 200:
        assert time.monotonic() < deadline, "Rotor did not recover by itself"
        await asyncio.sleep(0.1)
    again = await rotor.http.post(
        "/refresh", json={"refresh_token": tokens["refresh_token"]}, headers=client.auth
    )
    assert again.status_code == 200, again.text


async def test_database_that_never_answers_is_503_within_the_bound(
    outage_rotor: Rotor, proxy: ThreadedProxy
) -> None:
    rotor = outage_rotor
    client = await rotor.client()
    gateway = await rotor.client(grants=[], introspect=True)
    await rotor.user()
    tokens = (await rotor.login(client)).json()

    await proxy.cut()
    proxy.blackhole()
    await proxy.start()
    refresh, refresh_took = await _timed(
        rotor.http.post(
            "/refresh", json={"refresh_token": tokens["refresh_token"]}, headers=client.auth
        )
    )
    introspect, introspect_took = await _timed(
        rotor.http.post("/introspect", data={"token": tokens["access_token"]}, headers=gateway.auth)
    )

    _assert_unavailable(refresh)
    _assert_unavailable(introspect)
    assert 0.9 < refresh_took < 2.5
    assert 0.9 < introspect_took < 2.5


async def test_exhausted_pool_answers_a_fast_503(settings: Settings, db) -> None:
    new = settings.with_overrides(db_pool_size=1, db_timeout=1.0)
    async with AsyncTestClient(create_app(new)) as http:
        rotor = Rotor(http, new, db)
        client = await rotor.client()
        await rotor.user()
        tokens = (await rotor.login(client)).json()
        database = http.app.state.services.database
        held, release = threading.Event(), threading.Event()

        async def hold_the_only_connection() -> None:
            async with database.connection():
                held.set()
                await asyncio.to_thread(release.wait, 10)

        # The app runs on the test client's own loop: hold the connection there.
        holder = asyncio.run_coroutine_threadsafe(hold_the_only_connection(), database.pool._loop)
        await asyncio.to_thread(held.wait, 10)
        try:
            response, took = await _timed(
                rotor.http.post(
                    "/refresh", json={"refresh_token": tokens["refresh_token"]}, headers=client.auth
                )
            )
        finally:
            release.set()
            await asyncio.wrap_future(holder)
        _assert_unavailable(response)
        assert took < 2.5
        # Nothing was spent: the token still rotates once the pool is free.
        after = await rotor.http.post(
            "/refresh", json={"refresh_token": tokens["refresh_token"]}, headers=client.auth
        )
        assert after.status_code == 200, after.text


async def _login_many(rotor: Rotor, url: str, client, count: int) -> list[str]:
    # One after another: simultaneous logins to one account count as pending
    # failures until they succeed (the per-username limit is exact).
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        responses = [
            await http.post(
                "/token",
                headers=client.auth,
                data={"grant_type": "password", "username": "alice", "password": PASSWORD},
            )
            for _ in range(count)
        ]
    assert {r.status_code for r in responses} == {200}
    return [r.json()["refresh_token"] for r in responses]


@pytest.mark.slow
async def test_sigterm_turns_readiness_503_finishes_in_flight_and_exits(
    rotor: Rotor, database_url: str
) -> None:
    client = await rotor.client()
    await rotor.user()
    process, url = await start_rotor(database_url, ROTOR_SHUTDOWN_DELAY="1")
    try:
        tokens = await _login_many(rotor, url, client, 1)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            ready = await http.get("/health/ready")
            in_flight = await http.post(
                "/refresh", headers=client.auth, json={"refresh_token": tokens[0]}
            )
        assert ready.status_code == 503
        assert ready.json()["reason"] == "shutting down"
        assert in_flight.status_code == 200, in_flight.text
        started = time.monotonic()
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - started < 15
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.slow
async def test_sigkill_during_refresh_load_leaves_every_family_whole(
    rotor: Rotor, database_url: str
) -> None:
    """Nothing half-done: a crash at any instant leaves each family before or after
    a rotation, never with a spent token and no successor, never two live tokens."""
    client = await rotor.client()
    await rotor.user()
    process, url = await start_rotor(database_url)
    tokens = await _login_many(rotor, url, client, 40)

    async def keep_refreshing(http: httpx.AsyncClient, token: str) -> None:
        with contextlib.suppress(httpx.TransportError):
            for _ in range(200):
                response = await http.post(
                    "/refresh", headers=client.auth, json={"refresh_token": token}
                )
                if response.status_code != 200:
                    return
                token = response.json()["refresh_token"]

    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        load = asyncio.gather(*(keep_refreshing(http, token) for token in tokens))
        await asyncio.sleep(1.5)
        process.kill()  # SIGKILL, mid-load
        await load
    process.wait(timeout=10)

    rotations = await rotor.db.fetchval("SELECT count(*) FROM refresh_tokens WHERE generation > 1")
    orphans = await rotor.db.fetchval(
        "SELECT count(*) FROM refresh_tokens t WHERE t.spent_at IS NOT NULL AND NOT EXISTS ("
        " SELECT 1 FROM refresh_tokens c WHERE c.family_id = t.family_id"
        " AND c.generation = t.generation + 1)"
    )
    live = await rotor.db.fetch(
        "SELECT f.id, count(t.*) FILTER (WHERE t.spent_at IS NULL) AS live "
        "FROM token_families f JOIN refresh_tokens t ON t.family_id = f.id GROUP BY f.id"
    )
    assert rotations > 40  # the load really ran before the kill
    assert orphans == 0
    assert [row["live"] for row in live] == [1] * 40
