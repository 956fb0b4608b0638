"""Helpers for tests: arrange clients and users, call endpoints, verify tokens."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import httpx
from argon2 import PasswordHasher as Argon2
from joserfc import jwt
from joserfc.jwk import KeySet
from litestar.testing import AsyncTestClient

from service.accounts.clients import ClientStore
from service.accounts.users import UserStore
from service.config import Settings

PASSWORD = "correct horse battery staple"
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
    ) -> RegisteredClient:
        client, secret = await ClientStore().create(
            self.db,
            name=name,
            grant_types=ALL_GRANTS if grants is None else grants,
            scopes=["read", "write"] if scopes is None else scopes,
            public=public,
            can_introspect=introspect,
            is_admin=admin,
        )
        return RegisteredClient(client.client_id, secret)

    async def user(
        self, username: str = "alice", password: str = PASSWORD, *, password_hash: str | None = None
    ) -> str:
        user = await UserStore().create(
            self.db, username, password_hash or self._argon2.hash(password)
        )
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
