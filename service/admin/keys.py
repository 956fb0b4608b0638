"""Key lifecycle for operators: list, rotate, revoke (CONTRACT 2 and 3.6).

next -> active -> retired -> removed, or revoked at once. Every change runs
under the keys advisory lock, in the caller's transaction (the use case owns
it), in the order the partial unique indexes allow: retire the active key,
promote the next, then make a new next.
"""

from __future__ import annotations

from datetime import datetime

from service.admin.paging import check_limit, decode_cursor, split_page
from service.admin.views import KeyPage, KeyView
from service.db import events, keys, locks
from service.db.pool import Connection, Database
from service.errors import Conflict, NotFound
from service.events import Caller
from service.tokens.keys import KeyVault

NO_NEXT_KEY = "there was no next key; one was made: rotate again later"


async def rotate_keys(
    connection: Connection,
    vault: KeyVault,
    *,
    alg: str,
    min_age: int,
    force: bool,
    caller: Caller | None = None,
) -> KeyView | None:
    """The next key becomes active, the active one retired, a new next key is
    made: the new active key. A next key published for less than `min_age`
    seconds (ROTOR_JWKS_MAX_AGE) is not promoted unless forced: caches must
    have seen it (Conflict). With no next key at all, one is made and None is
    answered: the caller commits it, then says to wait (NO_NEXT_KEY)."""
    await locks.lock_keys(connection)
    upcoming = await keys.upcoming(connection, min_age)
    if upcoming is None:
        await vault.create(connection, alg, "next")
        return None
    if not upcoming["seasoned"] and not force:
        raise Conflict(
            f"the next key has been published for less than {min_age} s "
            "(ROTOR_JWKS_MAX_AGE); caches may not know it yet: retry later "
            "or force"
        )
    retired = await keys.retire_active(connection)
    row = await keys.promote(connection, upcoming["kid"])
    await vault.create(connection, alg, "next")
    await events.record(
        connection, "key_rotated", caller, detail={"kid": row["kid"], "retired_kid": retired}
    )
    return KeyView.of(row)


async def revoke_key(
    connection: Connection, vault: KeyVault, *, kid: str, alg: str, caller: Caller | None = None
) -> KeyView:
    """A compromised key leaves the JWKS at once; revoking the active key first
    promotes the next one and makes a new next key. In the caller's transaction."""
    if "\x00" in kid:  # PostgreSQL text cannot hold it, so no kid does
        raise NotFound("no such key")
    await locks.lock_keys(connection)
    state = await keys.state_of(connection, kid)
    if state is None:
        raise NotFound("no such key")
    if state != "revoked":
        await keys.mark_revoked(connection, kid)
        if state == "active":
            upcoming = await keys.upcoming(connection, 0)
            successor = upcoming["kid"] if upcoming else await vault.create(connection, alg, "next")
            await keys.promote(connection, successor)
        if state in ("active", "next"):
            await vault.create(connection, alg, "next")
        await events.record(
            connection, "key_revoked", caller, detail={"kid": kid, "previous_state": state}
        )
    row = await keys.get(connection, kid)
    assert row is not None
    return KeyView.of(row)


class KeyAdmin:
    def __init__(self, database: Database, vault: KeyVault, *, alg: str, min_age: int) -> None:
        self._db = database
        self._vault = vault
        self._alg = alg
        self._min_age = min_age

    async def list(self, limit: int | None, cursor: str | None) -> KeyPage:
        size = check_limit(limit)
        position = decode_cursor(cursor, (datetime, str))
        async with self._db.connection() as connection:
            rows = await keys.page(
                connection,
                after=(position[0], position[1]) if position else None,
                limit=size + 1,
            )
        items, next_cursor = split_page(
            rows, size, lambda row: (row["created_at"].isoformat(), row["kid"])
        )
        return KeyPage([KeyView.of(row) for row in items], next_cursor)

    async def rotate(self, force: bool, caller: Caller) -> KeyView:
        async with self._db.transaction() as connection:
            key = await rotate_keys(
                connection,
                self._vault,
                alg=self._alg,
                min_age=self._min_age,
                force=force,
                caller=caller,
            )
        if key is None:  # the new next key is committed; the answer says to wait
            raise Conflict(NO_NEXT_KEY)
        return key

    async def revoke(self, kid: str, caller: Caller) -> KeyView:
        async with self._db.transaction() as connection:
            return await revoke_key(connection, self._vault, kid=kid, alg=self._alg, caller=caller)
