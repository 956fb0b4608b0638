"""Operators' use cases on users and clients."""

from __future__ import annotations

import uuid
from typing import Any

from service.accounts.clients import GRANT_TYPES, PUBLIC_GRANTS, Client, ClientStore
from service.accounts.passwords import PasswordHasher, password_problem
from service.accounts.users import User, UsernameTaken, UserStore
from service.admin.paging import BadRequest, rfc3339
from service.db.pool import Database
from service.errors import Conflict, NotFound, Unprocessable
from service.events import Caller, record
from service.tokens.revocation import revoke_families
from service.tokens.scopes import is_scope_token

MAX_USERNAME_CHARS = 255
MAX_NAME_CHARS = 200


def user_view(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "username": user.username,
        "disabled": user.disabled,
        "created_at": rfc3339(user.created_at),
    }


def client_view(client: Client) -> dict[str, Any]:
    return {
        "client_id": client.client_id,
        "name": client.name,
        "grant_types": list(client.grant_types),
        "scopes": list(client.scopes),
        "public": client.public,
        "can_introspect": client.can_introspect,
        "is_admin": client.is_admin,
        "created_at": rfc3339(client.created_at),
    }


def check_username(username: str) -> None:
    if not 1 <= len(username) <= MAX_USERNAME_CHARS or not username.isprintable():
        raise Unprocessable(f"username must be 1 to {MAX_USERNAME_CHARS} printable characters")


def check_password(password: str) -> None:
    problem = password_problem(password)
    if problem:
        raise Unprocessable(problem)


def check_client(
    name: str,
    grants: list[str],
    scopes: list[str],
    public: bool,
    *,
    can_introspect: bool = False,
    is_admin: bool = False,
) -> None:
    if not 1 <= len(name) <= MAX_NAME_CHARS or not name.isprintable():
        raise BadRequest(f"name must be 1 to {MAX_NAME_CHARS} printable characters")
    unknown = [grant for grant in grants if grant not in GRANT_TYPES]
    if unknown:
        raise BadRequest(f"unknown grant type(s); known: {', '.join(GRANT_TYPES)}")
    if public and set(grants) - PUBLIC_GRANTS:
        raise BadRequest("a public client may use only the password and refresh_token grants")
    if public and (can_introspect or is_admin):
        # RFC 7662 2.1: introspection needs an authenticated caller; so does admin.
        raise BadRequest("a public client cannot introspect or be an admin")
    if any(not is_scope_token(scope) for scope in scopes):
        raise BadRequest("scopes must be scope tokens (RFC 6749 section 3.3)")


class AccountAdmin:
    def __init__(
        self, database: Database, hasher: PasswordHasher, users: UserStore, clients: ClientStore
    ) -> None:
        self._db = database
        self._hasher = hasher
        self._users = users
        self._clients = clients

    async def create_user(self, username: str, password: str) -> dict[str, Any]:
        check_username(username)
        check_password(password)
        password_hash = await self._hasher.hash(password)
        try:
            async with self._db.transaction() as connection:
                user = await self._users.create(connection, username, password_hash)
        except UsernameTaken:
            raise Conflict("username is taken") from None
        return {"id": str(user.id), "username": user.username}

    async def get_user(self, user_id: uuid.UUID) -> dict[str, Any]:
        async with self._db.connection() as connection:
            return user_view(await self._user(connection, user_id))

    async def set_disabled(
        self, user_id: uuid.UUID, disabled: bool, caller: Caller
    ) -> dict[str, Any]:
        async with self._db.transaction() as connection:
            user = await self._user(connection, user_id, lock=True)
            await connection.execute(
                "UPDATE users SET disabled = $2 WHERE id = $1", user_id, disabled
            )
            if disabled and not user.disabled:
                revoked = await revoke_families(
                    connection, "user", user_id, "user_disabled", caller
                )
                await record(
                    connection,
                    "user_disabled",
                    caller,
                    user_id=user_id,
                    detail={"families_revoked": revoked},
                )
            updated = await self._user(connection, user_id)
        return user_view(updated)

    async def set_password(self, user_id: uuid.UUID, password: str, caller: Caller) -> None:
        check_password(password)
        async with self._db.connection() as connection:
            await self._user(connection, user_id)
        password_hash = await self._hasher.hash(password)
        async with self._db.transaction() as connection:
            await self._user(connection, user_id, lock=True)
            await self._users.set_password_hash(connection, user_id, password_hash, changed=True)
            await revoke_families(connection, "user", user_id, "password_changed", caller)

    async def create_client(
        self,
        *,
        name: str,
        grant_types: list[str],
        scopes: list[str],
        public: bool,
        can_introspect: bool,
        is_admin: bool,
    ) -> dict[str, Any]:
        grants, scope_list = list(dict.fromkeys(grant_types)), list(dict.fromkeys(scopes))
        check_client(
            name, grants, scope_list, public, can_introspect=can_introspect, is_admin=is_admin
        )
        async with self._db.transaction() as connection:
            client, secret = await self._clients.create(
                connection,
                name=name,
                grant_types=grants,
                scopes=scope_list,
                public=public,
                can_introspect=can_introspect,
                is_admin=is_admin,
            )
        return {**client_view(client), "client_secret": secret}

    async def get_client(self, client_id: uuid.UUID) -> dict[str, Any]:
        async with self._db.connection() as connection:
            client = await self._clients.get(connection, client_id)
        if client is None:
            raise NotFound("no such client")
        return client_view(client)

    async def _user(self, connection: Any, user_id: uuid.UUID, *, lock: bool = False) -> User:
        if lock:
            await connection.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)
        user = await self._users.get(connection, user_id)
        if user is None:
            raise NotFound("no such user")
        return user
