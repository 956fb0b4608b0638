"""Users: the rows behind the password grant."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.db.pool import Connection


class UsernameTaken(Exception):
    pass


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    username: str
    disabled: bool
    created_at: datetime
    password_hash: str


_COLUMNS = "id, username, disabled, created_at, password_hash"


def _user(row: asyncpg.Record) -> User:
    return User(
        row["id"], row["username"], row["disabled"], row["created_at"], row["password_hash"]
    )


class UserStore:
    async def create(self, connection: Connection, username: str, password_hash: str) -> User:
        try:
            row = await connection.fetchrow(
                f"INSERT INTO users (id, username, password_hash) VALUES ($1, $2, $3) "
                f"RETURNING {_COLUMNS}",
                uuid.uuid4(),
                username,
                password_hash,
            )
        except asyncpg.UniqueViolationError:
            raise UsernameTaken(username) from None
        return _user(row)

    async def by_username(self, connection: Connection, username: str) -> User | None:
        row = await connection.fetchrow(
            f"SELECT {_COLUMNS} FROM users WHERE username = $1", username
        )
        return None if row is None else _user(row)

    async def get(self, connection: Connection, user_id: uuid.UUID) -> User | None:
        row = await connection.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE id = $1", user_id)
        return None if row is None else _user(row)

    async def set_password_hash(
        self, connection: Connection, user_id: uuid.UUID, password_hash: str, *, changed: bool
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
