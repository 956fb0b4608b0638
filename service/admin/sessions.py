"""Operators' view of families (login sessions) and their revocation."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from service.admin.paging import Page, check_limit, decode_cursor, encode_cursor, rfc3339
from service.db.pool import Database
from service.errors import NotFound
from service.events import Caller
from service.tokens.revocation import revoke_families

# CONTRACT 2: status reads revoked before expired before active; a family is
# expired when its absolute limit passed or its live refresh token idled out.
FAMILY_COLUMNS = """
f.id, f.user_id, f.client_id, f.scope, f.created_at, f.last_rotated_at, f.expires_at,
f.revoked_at, f.revoked_reason,
CASE
    WHEN f.revoked_at IS NOT NULL THEN 'revoked'
    WHEN f.expires_at <= now() THEN 'expired'
    WHEN NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.family_id = f.id
                     AND r.spent_at IS NULL AND r.expires_at > now()) THEN 'expired'
    ELSE 'active'
END AS status
"""

TABLE_OF = {"family": "token_families", "user": "users", "client": "clients"}
REASON_OF = {"family": "admin", "user": "admin", "client": "client_revoked"}


def family_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "user_id": str(row["user_id"]),
        "client_id": str(row["client_id"]),
        "scope": row["scope"],
        "created_at": rfc3339(row["created_at"]),
        "last_rotated_at": rfc3339(row["last_rotated_at"]),
        "expires_at": rfc3339(row["expires_at"]),
        "revoked_at": rfc3339(row["revoked_at"]),
        "status": row["status"],
        "revoked_reason": row["revoked_reason"],
    }


class SessionAdmin:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def user_families(
        self, user_id: uuid.UUID, limit: int | None, cursor: str | None
    ) -> Page:
        size = check_limit(limit)
        position = decode_cursor(cursor, (datetime, uuid.UUID))
        async with self._db.connection() as connection:
            if not await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)", user_id
            ):
                raise NotFound("no such user")
            rows = await connection.fetch(
                f"""
                SELECT {FAMILY_COLUMNS} FROM token_families f
                WHERE f.user_id = $1
                  AND ($2::timestamptz IS NULL OR (f.created_at, f.id) < ($2, $3::uuid))
                ORDER BY f.created_at DESC, f.id DESC
                LIMIT $4
                """,
                user_id,
                position[0] if position else None,
                position[1] if position else None,
                size + 1,
            )
        items = [family_view(row) for row in rows[:size]]
        last = rows[size - 1] if len(rows) > size else None
        return Page(
            items, encode_cursor(last["created_at"].isoformat(), str(last["id"])) if last else None
        )

    async def family(self, family_id: uuid.UUID) -> dict[str, Any]:
        async with self._db.connection() as connection:
            row = await connection.fetchrow(
                f"SELECT {FAMILY_COLUMNS} FROM token_families f WHERE f.id = $1", family_id
            )
            if row is None:
                raise NotFound("no such family")
            chain = await connection.fetch(
                "SELECT generation, issued_at, spent_at, expires_at FROM refresh_tokens "
                "WHERE family_id = $1 ORDER BY generation",
                family_id,
            )
        return {
            **family_view(row),
            "chain": [
                {
                    "generation": link["generation"],
                    "issued_at": rfc3339(link["issued_at"]),
                    "spent_at": rfc3339(link["spent_at"]),
                    "expires_at": rfc3339(link["expires_at"]),
                }
                for link in chain
            ],
        }

    async def revoke(self, scope: str, subject: uuid.UUID, caller: Caller) -> int:
        """Revoke one family, all of a user's, or all of a client's: one statement."""
        async with self._db.transaction() as connection:
            exists = await connection.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {TABLE_OF[scope]} WHERE id = $1)", subject
            )
            if not exists:
                raise NotFound(f"no such {scope}")
            return await revoke_families(connection, scope, subject, REASON_OF[scope], caller)
