"""The store of clients and users: the rows behind client authentication and
the password grant. Secrets arrive here as fingerprints and passwords as
argon2id hashes; nothing in clear text is written."""

from __future__ import annotations

import uuid

import asyncpg

from service.db.pool import Connection

CLIENT_COLUMNS = (
    "id, name, public, grant_types, scopes, can_introspect, is_admin, created_at, secret_hash, "
    "require_dpop"
)
USER_COLUMNS = "id, username, disabled, created_at, password_hash"


class UsernameTaken(Exception):
    pass


# --- clients -----------------------------------------------------------------


async def insert_client(
    connection: Connection,
    *,
    name: str,
    secret_hash: bytes | None,
    public: bool,
    grant_types: list[str],
    scopes: list[str],
    can_introspect: bool,
    is_admin: bool,
    require_dpop: bool = False,
) -> asyncpg.Record:
    row: asyncpg.Record = await connection.fetchrow(
        f"""
        INSERT INTO clients (id, name, secret_hash, public, grant_types, scopes,
                             can_introspect, is_admin, require_dpop)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        RETURNING {CLIENT_COLUMNS}
        """,
        uuid.uuid4(),
        name,
        secret_hash,
        public,
        grant_types,
        scopes,
        can_introspect,
        is_admin,
        require_dpop,
    )
    return row


async def client(connection: Connection, client_id: uuid.UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await connection.fetchrow(
        f"SELECT {CLIENT_COLUMNS} FROM clients WHERE id = $1", client_id
    )
    return row


# --- users -------------------------------------------------------------------


async def insert_user(connection: Connection, username: str, password_hash: str) -> asyncpg.Record:
    try:
        row: asyncpg.Record = await connection.fetchrow(
            f"INSERT INTO users (id, username, password_hash) VALUES ($1, $2, $3) "
            f"RETURNING {USER_COLUMNS}",
            uuid.uuid4(),
            username,
            password_hash,
        )
    except asyncpg.UniqueViolationError:
        raise UsernameTaken from None
    return row


async def user_by_name(connection: Connection, username: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await connection.fetchrow(
        f"SELECT {USER_COLUMNS} FROM users WHERE username = $1", username
    )
    return row


async def user(
    connection: Connection, user_id: uuid.UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    """The user's row; `for_update` locks it until the transaction ends."""
    lock = " FOR UPDATE" if for_update else ""
    row: asyncpg.Record | None = await connection.fetchrow(
        f"SELECT {USER_COLUMNS} FROM users WHERE id = $1{lock}", user_id
    )
    return row


async def set_disabled(connection: Connection, user_id: uuid.UUID, disabled: bool) -> None:
    await connection.execute("UPDATE users SET disabled = $2 WHERE id = $1", user_id, disabled)


async def set_password_hash(
    connection: Connection, user_id: uuid.UUID, password_hash: str, *, changed: bool
) -> None:
    """`changed` False for a transparent rehash: that is not a password change."""
    await connection.execute(
        "UPDATE users SET password_hash = $2, "
        "password_changed_at = CASE WHEN $3 THEN now() ELSE password_changed_at END "
        "WHERE id = $1",
        user_id,
        password_hash,
        changed,
    )
