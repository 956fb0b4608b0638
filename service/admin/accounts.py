"""Operators' use cases on users and clients."""

from __future__ import annotations

import uuid

import msgspec

from service.accounts.clients import GRANT_TYPES, PUBLIC_GRANTS, create_client, get_client
from service.accounts.passwords import PasswordHasher, password_problem
from service.accounts.users import User, UsernameTaken, create_user, get_user
from service.admin.paging import BadRequest
from service.admin.views import ClientView, NewClientView, NewUserView, UserView
from service.db import accounts, events
from service.db.pool import Connection, Database
from service.errors import Conflict, NotFound, Unprocessable
from service.events import Caller
from service.tokens.revocation import revoke_families
from service.tokens.scopes import is_scope_token

MAX_USERNAME_CHARS = 255
MAX_NAME_CHARS = 200


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
    def __init__(self, database: Database, hasher: PasswordHasher) -> None:
        self._db = database
        self._hasher = hasher

    async def create_user(self, username: str, password: str) -> NewUserView:
        check_username(username)
        check_password(password)
        password_hash = await self._hasher.hash(password)
        try:
            async with self._db.transaction() as connection:
                user = await create_user(connection, username, password_hash)
        except UsernameTaken:
            raise Conflict("username is taken") from None
        return NewUserView(str(user.id), user.username)

    async def get_user(self, user_id: uuid.UUID) -> UserView:
        async with self._db.connection() as connection:
            return UserView.of(await _user(connection, user_id))

    async def set_disabled(self, user_id: uuid.UUID, disabled: bool, caller: Caller) -> UserView:
        async with self._db.transaction() as connection:
            user = await _user(connection, user_id, lock=True)
            await accounts.set_disabled(connection, user_id, disabled)
            if disabled and not user.disabled:
                revoked = await revoke_families(
                    connection, "user", user_id, "user_disabled", caller
                )
                await events.record(
                    connection,
                    "user_disabled",
                    caller,
                    user_id=user_id,
                    detail={"families_revoked": revoked},
                )
            updated = await _user(connection, user_id)
        return UserView.of(updated)

    async def set_password(self, user_id: uuid.UUID, password: str, caller: Caller) -> None:
        check_password(password)
        async with self._db.connection() as connection:
            await _user(connection, user_id)
        password_hash = await self._hasher.hash(password)
        async with self._db.transaction() as connection:
            await _user(connection, user_id, lock=True)
            await accounts.set_password_hash(connection, user_id, password_hash, changed=True)
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
        require_dpop: bool = False,
    ) -> NewClientView:
        grants, scope_list = list(dict.fromkeys(grant_types)), list(dict.fromkeys(scopes))
        check_client(
            name, grants, scope_list, public, can_introspect=can_introspect, is_admin=is_admin
        )
        async with self._db.transaction() as connection:
            client, secret = await create_client(
                connection,
                name=name,
                grant_types=grants,
                scopes=scope_list,
                public=public,
                can_introspect=can_introspect,
                is_admin=is_admin,
                require_dpop=require_dpop,
            )
        return NewClientView(**msgspec.structs.asdict(ClientView.of(client)), client_secret=secret)

    async def get_client(self, client_id: uuid.UUID) -> ClientView:
        async with self._db.connection() as connection:
            client = await get_client(connection, client_id)
        if client is None:
            raise NotFound("no such client")
        return ClientView.of(client)


async def _user(connection: Connection, user_id: uuid.UUID, *, lock: bool = False) -> User:
    user = await get_user(connection, user_id, for_update=lock)
    if user is None:
        raise NotFound("no such user")
    return user
