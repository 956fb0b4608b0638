"""Operators' view of families (login sessions) and their revocation."""

from __future__ import annotations

import uuid
from datetime import datetime

from service.admin.paging import check_limit, decode_cursor, split_page
from service.admin.views import FamilyDetail, FamilyPage, FamilyView
from service.db import families
from service.db.families import RevokeBy
from service.db.pool import Database
from service.errors import NotFound
from service.events import Caller
from service.tokens.revocation import revoke_families

REASON_OF: dict[RevokeBy, str] = {"family": "admin", "user": "admin", "client": "client_revoked"}


class SessionAdmin:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def user_families(
        self, user_id: uuid.UUID, limit: int | None, cursor: str | None
    ) -> FamilyPage:
        size = check_limit(limit)
        position = decode_cursor(cursor, (datetime, uuid.UUID))
        async with self._db.connection() as connection:
            if not await families.owner_exists(connection, "user", user_id):
                raise NotFound("no such user")
            rows = await families.families_of_user(
                connection,
                user_id,
                after=(position[0], position[1]) if position else None,
                limit=size + 1,
            )
        items, next_cursor = split_page(
            rows, size, lambda row: (row["created_at"].isoformat(), str(row["id"]))
        )
        return FamilyPage([FamilyView.of(row) for row in items], next_cursor)

    async def family(self, family_id: uuid.UUID) -> FamilyDetail:
        async with self._db.connection() as connection:
            row = await families.family(connection, family_id)
            if row is None:
                raise NotFound("no such family")
            links = await families.chain(connection, family_id)
        return FamilyDetail.with_chain(row, links)

    async def revoke(self, by: RevokeBy, owner: uuid.UUID, caller: Caller) -> int:
        """Revoke one family, all of a user's, or all of a client's: one statement."""
        async with self._db.transaction() as connection:
            if not await families.owner_exists(connection, by, owner):
                raise NotFound(f"no such {by}")
            return await revoke_families(connection, by, owner, REASON_OF[by], caller)
