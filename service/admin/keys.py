"""Key lifecycle for operators: list, rotate, revoke (CONTRACT 2 and 3.6).

next -> active -> retired -> removed, or revoked at once. Every change runs
under the keys advisory lock, in the order the partial unique indexes allow:
retire the active key, promote the next, then make a new next.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from service.admin.paging import Page, check_limit, decode_cursor, encode_cursor, rfc3339
from service.db.pool import Connection, Database
from service.errors import Conflict, NotFound
from service.events import Caller, record
from service.tokens.keys import KEYS_LOCK_ID, KeyStore

KEY_COLUMNS = "kid, alg, state, created_at, activated_at, retired_at"


def key_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "kid": row["kid"],
        "alg": row["alg"],
        "state": row["state"],
        "created_at": rfc3339(row["created_at"]),
        "activated_at": rfc3339(row["activated_at"]),
        "retired_at": rfc3339(row["retired_at"]),
    }


async def rotate_keys(
    connection: Connection,
    store: KeyStore,
    *,
    alg: str,
    min_age: int,
    force: bool,
    caller: Caller | None = None,
) -> dict[str, Any]:
    """The next key becomes active, the active one retired, a new next key is made.
    A next key published for less than `min_age` seconds (ROTOR_JWKS_MAX_AGE) is
    not promoted unless forced: caches must have seen it."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", KEYS_LOCK_ID)
        upcoming = await connection.fetchrow(
            "SELECT kid, created_at <= now() - make_interval(secs => $1) AS seasoned "
            "FROM signing_keys WHERE state = 'next'",
            min_age,
        )
        if upcoming is None:
            # Made and committed; the answer says to wait, as for a young key.
            await store.create(connection, alg, "next")
        elif not upcoming["seasoned"] and not force:
            raise Conflict(
                f"the next key has been published for less than {min_age} s "
                "(ROTOR_JWKS_MAX_AGE); caches may not know it yet: retry later "
                "or force"
            )
        else:
            retired = await connection.fetchval(
                "UPDATE signing_keys SET state = 'retired', retired_at = now() "
                "WHERE state = 'active' RETURNING kid"
            )
            row = await _promote(connection, upcoming["kid"])
            await store.create(connection, alg, "next")
            await record(
                connection,
                "key_rotated",
                caller,
                detail={"kid": row["kid"], "retired_kid": retired},
            )
    if upcoming is None:
        raise Conflict("there was no next key; one was made: rotate again later")
    return key_view(row)


async def _promote(connection: Connection, kid: str) -> asyncpg.Record:
    return await connection.fetchrow(
        f"UPDATE signing_keys SET state = 'active', activated_at = now() WHERE kid = $1 "
        f"RETURNING {KEY_COLUMNS}",
        kid,
    )


async def revoke_key(
    connection: Connection, store: KeyStore, *, kid: str, alg: str, caller: Caller | None = None
) -> dict[str, Any]:
    """A compromised key leaves the JWKS at once; revoking the active key first
    promotes the next one and makes a new next key."""
    if "\x00" in kid:  # PostgreSQL text cannot hold it, so no kid does
        raise NotFound("no such key")
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", KEYS_LOCK_ID)
        state = await connection.fetchval("SELECT state FROM signing_keys WHERE kid = $1", kid)
        if state is None:
            raise NotFound("no such key")
        if state != "revoked":
            await connection.execute(
                "UPDATE signing_keys SET state = 'revoked', revoked_at = now() WHERE kid = $1", kid
            )
            if state == "active":
                upcoming = await connection.fetchval(
                    "SELECT kid FROM signing_keys WHERE state = 'next'"
                )
                if upcoming is None:
                    upcoming = await store.create(connection, alg, "next")
                await _promote(connection, upcoming)
            if state in ("active", "next"):
                await store.create(connection, alg, "next")
            await record(
                connection, "key_revoked", caller, detail={"kid": kid, "previous_state": state}
            )
        row = await connection.fetchrow(
            f"SELECT {KEY_COLUMNS} FROM signing_keys WHERE kid = $1", kid
        )
    return key_view(row)


class KeyAdmin:
    def __init__(self, database: Database, store: KeyStore, *, alg: str, min_age: int) -> None:
        self._db = database
        self._store = store
        self._alg = alg
        self._min_age = min_age

    async def list(self, limit: int | None, cursor: str | None) -> Page:
        size = check_limit(limit)
        position = decode_cursor(cursor, (datetime, str))
        async with self._db.connection() as connection:
            rows = await connection.fetch(
                f"""
                SELECT {KEY_COLUMNS} FROM signing_keys
                WHERE ($1::timestamptz IS NULL OR (created_at, kid) < ($1, $2::text))
                ORDER BY created_at DESC, kid DESC
                LIMIT $3
                """,
                position[0] if position else None,
                position[1] if position else None,
                size + 1,
            )
        items = [key_view(row) for row in rows[:size]]
        last = rows[size - 1] if len(rows) > size else None
        return Page(
            items, encode_cursor(last["created_at"].isoformat(), last["kid"]) if last else None
        )

    async def rotate(self, force: bool, caller: Caller) -> dict[str, Any]:
        async with self._db.connection() as connection:
            return await rotate_keys(
                connection,
                self._store,
                alg=self._alg,
                min_age=self._min_age,
                force=force,
                caller=caller,
            )

    async def revoke(self, kid: str, caller: Caller) -> dict[str, Any]:
        async with self._db.connection() as connection:
            return await revoke_key(connection, self._store, kid=kid, alg=self._alg, caller=caller)
