"""The store of signing keys (CONTRACT section 2).

next -> active -> retired -> removed, or revoked at once. The partial unique
indexes on `signing_keys` make "exactly one active, at most one next" a fact
of the database; callers change states under `locks.lock_keys`, in the order
those indexes allow: retire the active key, promote the next, make a new next.
Private keys arrive here sealed (service/tokens/keys.py); this module never
sees them in the clear.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from service.db.pool import Connection

KEY_COLUMNS = "kid, alg, state, created_at, activated_at, retired_at"


async def insert(
    connection: Connection,
    *,
    kid: str,
    alg: str,
    state: str,
    public_jwk: dict[str, Any],
    private_box: bytes,
) -> None:
    await connection.execute(
        """
        INSERT INTO signing_keys (kid, alg, state, public_jwk, private_box, activated_at)
        VALUES ($1, $2, $3, $4, $5, CASE WHEN $3 = 'active' THEN now() END)
        """,
        kid,
        alg,
        state,
        public_jwk,
        private_box,
    )


async def signing_states(connection: Connection) -> set[str]:
    """Which of 'active' and 'next' exist."""
    rows = await connection.fetch(
        "SELECT state FROM signing_keys WHERE state IN ('active', 'next')"
    )
    return {row["state"] for row in rows}


async def published(connection: Connection, access_ttl: int) -> list[asyncpg.Record]:
    """The keys of the JWKS: next, active, and retired ones that may still have
    signed an unexpired token; newest first."""
    rows: list[asyncpg.Record] = await connection.fetch(
        """
        SELECT kid, alg, state, public_jwk, private_box
        FROM signing_keys
        WHERE state IN ('next', 'active')
           OR (state = 'retired' AND retired_at > now() - make_interval(secs => $1))
        ORDER BY created_at DESC, kid
        """,
        access_ttl,
    )
    return rows


async def upcoming(connection: Connection, min_age: int) -> asyncpg.Record | None:
    """The next key, and whether it has been published for `min_age` seconds."""
    row: asyncpg.Record | None = await connection.fetchrow(
        "SELECT kid, created_at <= now() - make_interval(secs => $1) AS seasoned "
        "FROM signing_keys WHERE state = 'next'",
        min_age,
    )
    return row


async def retire_active(connection: Connection) -> str | None:
    kid: str | None = await connection.fetchval(
        "UPDATE signing_keys SET state = 'retired', retired_at = now() "
        "WHERE state = 'active' RETURNING kid"
    )
    return kid


async def promote(connection: Connection, kid: str) -> asyncpg.Record:
    row: asyncpg.Record = await connection.fetchrow(
        f"UPDATE signing_keys SET state = 'active', activated_at = now() WHERE kid = $1 "
        f"RETURNING {KEY_COLUMNS}",
        kid,
    )
    return row


async def state_of(connection: Connection, kid: str) -> str | None:
    state: str | None = await connection.fetchval(
        "SELECT state FROM signing_keys WHERE kid = $1", kid
    )
    return state


async def mark_revoked(connection: Connection, kid: str) -> None:
    await connection.execute(
        "UPDATE signing_keys SET state = 'revoked', revoked_at = now() WHERE kid = $1", kid
    )


async def get(connection: Connection, kid: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await connection.fetchrow(
        f"SELECT {KEY_COLUMNS} FROM signing_keys WHERE kid = $1", kid
    )
    return row


async def page(
    connection: Connection, *, after: tuple[datetime, str] | None, limit: int
) -> list[asyncpg.Record]:
    """Keys newest first, after the (created_at, kid) position."""
    rows: list[asyncpg.Record] = await connection.fetch(
        f"""
        SELECT {KEY_COLUMNS} FROM signing_keys
        WHERE ($1::timestamptz IS NULL OR (created_at, kid) < ($1, $2::text))
        ORDER BY created_at DESC, kid DESC
        LIMIT $3
        """,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return rows


async def remove_retired(connection: Connection, access_ttl: int) -> int:
    """Retired keys whose every token has expired leave the JWKS for good."""
    status = await connection.execute(
        "UPDATE signing_keys SET state = 'removed', removed_at = now() "
        "WHERE state = 'retired' AND retired_at < now() - make_interval(secs => $1)",
        access_ttl,
    )
    return int(status.rsplit(" ", 1)[-1])
