"""Users: the people behind the password grant."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.db import accounts
from service.db.accounts import UsernameTaken
from service.db.pool import Connection

__all__ = ["User", "UsernameTaken", "create_user", "get_user", "user_by_name"]


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    username: str
    disabled: bool
    created_at: datetime
    password_hash: str


def user_of(row: asyncpg.Record) -> User:
    return User(
        row["id"], row["username"], row["disabled"], row["created_at"], row["password_hash"]
    )


async def create_user(connection: Connection, username: str, password_hash: str) -> User:
    """Raises UsernameTaken."""
    return user_of(await accounts.insert_user(connection, username, password_hash))


async def user_by_name(connection: Connection, username: str) -> User | None:
    row = await accounts.user_by_name(connection, username)
    return None if row is None else user_of(row)


async def get_user(
    connection: Connection, user_id: uuid.UUID, *, for_update: bool = False
) -> User | None:
    row = await accounts.user(connection, user_id, for_update=for_update)
    return None if row is None else user_of(row)
