"""Security events for operators: filters, newest first, paged."""

from __future__ import annotations

from typing import Any

import asyncpg

from service.admin.paging import (
    BadRequest,
    Page,
    check_limit,
    decode_cursor,
    encode_cursor,
    parse_id,
    parse_time,
    rfc3339,
)
from service.db.pool import Database
from service.events import EVENT_TYPES


def event_view(row: asyncpg.Record) -> dict[str, Any]:
    def text(value: Any) -> str | None:
        return None if value is None else str(value)

    return {
        "id": str(row["id"]),
        "type": row["type"],
        "at": rfc3339(row["at"]),
        "user_id": text(row["user_id"]),
        "client_id": text(row["client_id"]),
        "family_id": text(row["family_id"]),
        "ip": text(row["ip"]),
        "user_agent": row["user_agent"],
        "detail": row["detail"],
    }


class EventAdmin:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def list(
        self,
        *,
        type: str | None,
        user_id: str | None,
        family_id: str | None,
        since: str | None,
        limit: int | None,
        cursor: str | None,
    ) -> Page:
        if type is not None and type not in EVENT_TYPES:
            raise BadRequest(f"type must be one of {', '.join(EVENT_TYPES)}")
        size = check_limit(limit)
        position = decode_cursor(cursor, (int,))
        args = (
            type,
            parse_id(user_id, "user_id") if user_id else None,
            parse_id(family_id, "family_id") if family_id else None,
            parse_time(since, "since") if since else None,
            position[0] if position else None,
            size + 1,
        )
        async with self._db.connection() as connection:
            rows = await connection.fetch(
                """
                SELECT seq, id, type, at, user_id, client_id, family_id, ip, user_agent, detail
                FROM security_events
                WHERE ($1::text IS NULL OR type = $1)
                  AND ($2::uuid IS NULL OR user_id = $2)
                  AND ($3::uuid IS NULL OR family_id = $3)
                  AND ($4::timestamptz IS NULL OR at >= $4)
                  AND ($5::bigint IS NULL OR seq < $5)
                ORDER BY seq DESC
                LIMIT $6
                """,
                *args,
            )
        items = [event_view(row) for row in rows[:size]]
        return Page(items, encode_cursor(rows[size - 1]["seq"]) if len(rows) > size else None)
