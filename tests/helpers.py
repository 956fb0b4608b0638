"""Helpers for tests: arrange clients and users, call endpoints, verify tokens."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import httpx
from argon2 import PasswordHasher as Argon2
from joserfc import jwt
from joserfc.jwk import KeySet
from litestar.testing import AsyncTestClient

from service.accounts.clients import Client, create_client
from service.accounts.users import create_user
from service.app import create_app
from service.config import Settings

PASSWORD = "correct horse battery staple"
TEST_SECRET = b"rotor-test-secret-of-32-bytes-at-least!!"
ALL_GRANTS = ["password", "client_credentials", "refresh_token"]


def database_url_for(server_url: str, name: str) -> str:
    """The same server, another database (works for host:port and socket URLs)."""
    parts = urlsplit(server_url.replace("postgresql+asyncpg://", "postgresql://"))
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


@dataclass
class RegisteredClient:
    client_id: str
    client_secret: str | None

    @property
    def auth(self) -> dict[str, str]:
        assert self.client_secret is not None
        return basic(self.client_id, self.client_secret)


@dataclass
class Rotor:
    http: AsyncTestClient[Any]
    settings: Settings
    db: asyncpg.Connection
    _argon2: Argon2 = field(
        default_factory=lambda: Argon2(time_cost=1, memory_cost=8192, parallelism=1)
    )

    async def client(
        self,
        *,
        grants: list[str] | None = None,
        scopes: list[str] | None = None,
        public: bool = False,
        introspect: bool = False,
        admin: bool = False,
        name: str = "test-client",
        require_dpop: bool = False,
    ) -> RegisteredClient:
        client, secret = await create_client(
            self.db,
            name=name,
            grant_types=ALL_GRANTS if grants is None else grants,
            scopes=["read", "write"] if scopes is None else scopes,
            public=public,
            can_introspect=introspect,
            is_admin=admin,
            require_dpop=require_dpop,
        )
        return RegisteredClient(client.client_id, secret)

    async def user(
        self, username: str = "alice", password: str = PASSWORD, *, password_hash: str | None = None
    ) -> str:
        user = await create_user(self.db, username, password_hash or self._argon2.hash(password))
        return str(user.id)

    async def token(
        self,
        data: dict[str, str] | list[tuple[str, str]],
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        return await self.http.post("/token", data=data, headers=headers, **kwargs)

    async def login(
        self,
        client: RegisteredClient,
        username: str = "alice",
        password: str = PASSWORD,
        **extra: str,
    ) -> httpx.Response:
        data = {"grant_type": "password", "username": username, "password": password, **extra}
        if client.client_secret is None:
            return await self.token({**data, "client_id": client.client_id})
        return await self.token(data, client.auth)

    async def jwks(self) -> KeySet:
        response = await self.http.get("/.well-known/jwks.json")
        assert response.status_code == 200
        return KeySet.import_key_set(response.json())

    async def verify(self, token: str) -> jwt.Token:
        """Verify as any gateway would: JWKS only, explicit algorithms."""
        return jwt.decode(token, await self.jwks(), algorithms=["ES256", "EdDSA", "RS256"])


@dataclass
class Session:
    """A password login by a confidential client, with a gateway allowed to introspect."""

    client: RegisteredClient
    gateway: RegisteredClient
    user_id: str
    access_token: str
    refresh_token: str
    family_id: uuid.UUID


async def begin(
    rotor: Rotor, username: str = "alice", *, client: RegisteredClient | None = None
) -> Session:
    if client is None:
        client = await rotor.client(name="app")
    gateway = await rotor.client(grants=[], scopes=[], introspect=True, name="gateway")
    user_id = await rotor.user(username)
    response = await rotor.login(client, username)
    assert response.status_code == 200, response.text
    body = response.json()
    family_id = await rotor.db.fetchval(
        "SELECT id FROM token_families WHERE user_id = $1", uuid.UUID(user_id)
    )
    return Session(client, gateway, user_id, body["access_token"], body["refresh_token"], family_id)


ROTOR_SCRIPT = Path(sys.executable).with_name("rotor")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a `rotor serve` on the test's database, cheap argon2."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "ROTOR_SECRET": base64.urlsafe_b64encode(TEST_SECRET).decode(),
        # Required with DATABASE_URL; the issuer of the in-process `rotor` fixture.
        "ROTOR_ISSUER": "http://localhost:8000",
        "ROTOR_ARGON2_TIME_COST": "1",
        "ROTOR_ARGON2_MEMORY_KIB": "8192",
        "ROTOR_ARGON2_PARALLELISM": "1",
        **extra,
    }


async def start_rotor(
    database_url: str, *args: str, port: int | None = None, **env: str
) -> tuple[subprocess.Popen[bytes], str]:
    """A real `rotor serve` process on `port` (else a free one), once /health/ready
    answers 200."""
    port = free_port() if port is None else port
    process = subprocess.Popen(
        [str(ROTOR_SCRIPT), "serve", "--port", str(port), *args],
        env=server_env(database_url, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as http:
        while True:
            if process.poll() is not None:
                error = process.stderr.read().decode() if process.stderr else ""
                raise AssertionError(f"rotor serve exited: {error[-2000:]}")
            try:
                if (await http.get(f"{url}/health/ready")).status_code == 200:
                    return process, url
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"{url} did not become ready")
            await asyncio.sleep(0.1)


async def app_and_user(
    db: asyncpg.Connection,
    *,
    name: str = "app",
    username: str = "alice",
    public: bool = False,
    require_dpop: bool = False,
) -> tuple[Client, dict[str, str]]:
    """A password and refresh_token client (scope read) and a user with PASSWORD,
    written straight to the database, for tests that run real `rotor serve`
    processes; the client and its HTTP Basic header (empty for a public one)."""
    client, secret = await create_client(
        db,
        name=name,
        grant_types=["password", "refresh_token"],
        scopes=["read"],
        public=public,
        can_introspect=False,
        is_admin=False,
        require_dpop=require_dpop,
    )
    hashed = Argon2(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    await create_user(db, username, hashed)
    return client, ({} if secret is None else basic(client.client_id, secret))


def stop_rotor(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


async def client_token(rotor: Rotor, client: RegisteredClient) -> str:
    """An access token of `client` by the client_credentials grant."""
    response = await rotor.token({"grant_type": "client_credentials"}, client.auth)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


@dataclass
class Ops:
    """An admin client and a live Bearer token of it."""

    client: RegisteredClient
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def operator(rotor: Rotor) -> Ops:
    client = await rotor.client(grants=["client_credentials"], scopes=[], admin=True, name="ops")
    return Ops(client, await client_token(rotor, client))


PEER_IP = "203.0.113.9"


@asynccontextmanager
async def serve_in_loop(
    settings: Settings,
    db: asyncpg.Connection,
    *,
    stats: dict[str, int] | None = None,
    **changes: Any,
) -> AsyncIterator[Rotor]:
    """The app served in this event loop (truly concurrent requests) to a client
    at PEER_IP; with `stats`, the most requests in flight at once is measured."""
    configured = settings.with_overrides(**changes) if changes else settings
    app = create_app(configured)
    asgi = app if stats is None else in_flight_counter(app, stats)
    transport = httpx.ASGITransport(app=asgi, client=(PEER_IP, 50000))
    async with (
        app.lifespan(),
        httpx.AsyncClient(
            transport=transport, base_url="http://testserver.local", timeout=30
        ) as http,
    ):
        yield Rotor(http, configured, db)  # type: ignore[arg-type]


def in_flight_counter(app: Any, stats: dict[str, int]) -> Any:
    """Wraps the ASGI app to measure how many requests were in flight at once."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        stats["now"] += 1
        stats["max"] = max(stats["max"], stats["now"])
        try:
            await app(scope, receive, send)
        finally:
            stats["now"] -= 1

    return wrapped


def unb64u(segment: str) -> bytes:
    """base64url without padding, as JOSE writes it."""
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def claims_of(token: str) -> dict[str, Any]:
    """A JWT's payload as sent (unverified: for comparing with what Rotor says)."""
    claims: dict[str, Any] = json.loads(unb64u(token.split(".")[1]))
    return claims


# RFC 6749 5.2: error_description = 1*( %x20-21 / %x23-5B / %x5D-7E ), printable
# ASCII but '"' and '\'.
DESCRIPTION_CHARACTERS = frozenset(map(chr, range(0x20, 0x7F))) - {'"', "\\"}


def assert_no_store(response: httpx.Response) -> None:
    """RFC 6749 5.1: an answer carrying (or refusing) tokens is never cached."""
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


def assert_error(
    response: httpx.Response,
    status: int,
    error: str,
    description: str | None = None,
    *,
    www_authenticate: str | None = None,
    case: object = "",
) -> None:
    """An RFC 6749 5.2 error answer, never cached: `status`, a body of exactly
    `error` and a non-empty `error_description` of the characters 5.2 allows
    (exactly `description` if given) and, if given, exactly that
    WWW-Authenticate challenge. `case` names the variant in failure messages."""
    assert response.status_code == status, (case, response.text)
    assert_no_store(response)
    body = response.json()
    assert isinstance(body, dict), (case, body)
    assert set(body) == {"error", "error_description"}, (case, body)
    assert body["error"] == error, (case, body)
    text = body["error_description"]
    assert isinstance(text, str), (case, body)
    assert text, (case, body)
    assert set(text) <= DESCRIPTION_CHARACTERS, (case, text)
    if description is not None:
        assert text == description, (case, body)
    if www_authenticate is not None:
        assert response.headers.get("www-authenticate") == www_authenticate, (case, body)
