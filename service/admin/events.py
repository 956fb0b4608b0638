"""Security events for operators: filters, newest first, paged."""

from __future__ import annotations

from service.admin.paging import (
    BadRequest,
    check_limit,
    decode_cursor,
    parse_id,
    parse_time,
    split_page,
)
from service.admin.views import EventPage, EventView
from service.db import events
from service.db.pool import Database
from service.events import EVENT_TYPES


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
    ) -> EventPage:
        if type is not None and type not in EVENT_TYPES:
            raise BadRequest(f"type must be one of {', '.join(EVENT_TYPES)}")
        size = check_limit(limit)
        position = decode_cursor(cursor, (int,))
        user = parse_id(user_id, "user_id") if user_id else None
        family = parse_id(family_id, "family_id") if family_id else None
        moment = parse_time(since, "since") if since else None
        async with self._db.connection() as connection:
            rows = await events.page(
                connection,
                event_type=type,
                user_id=user,
                family_id=family,
                since=moment,
                before_seq=position[0] if position else None,
                limit=size + 1,
            )
        items, next_cursor = split_page(rows, size, lambda row: (row["seq"],))
        return EventPage([EventView.of(row) for row in items], next_cursor)
