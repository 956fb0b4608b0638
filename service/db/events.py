"""The store of security events: one row per event, with who, what, when and
from where. Never a token value, a password or a secret in `detail`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from service.db.pool import Connection
from service.events import EVENT_TYPES, Caller

# The one INSERT of an event; statements that record events beside another
# write (service/db/families.py) put their VALUES or SELECT after it.
INSERT_EVENT = (
    "INSERT INTO security_events (id, type, user_id, client_id, family_id, ip, user_agent, detail)"
)


async def record(
    connection: Connection,
    event_type: str,
    caller: Caller | None = None,
    *,
    user_id: uuid.UUID | None = None,
    client_id: uuid.UUID | None = None,
    family_id: uuid.UUID | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    assert event_type in EVENT_TYPES
    await connection.execute(
        f"{INSERT_EVENT} VALUES ($1, $2, $3, $4, $5, $6::inet, $7, $8)",
        uuid.uuid4(),
        event_type,
        user_id,
        client_id,
        family_id,
        caller.ip if caller else None,
        caller.user_agent if caller else None,
        detail or {},
    )


async def page(
    connection: Connection,
    *,
    event_type: str | None,
    user_id: uuid.UUID | None,
    family_id: uuid.UUID | None,
    since: datetime | None,
    before_seq: int | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Events matching every filter given, newest first, before the `seq` position."""
    rows: list[asyncpg.Record] = await connection.fetch(
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
        event_type,
        user_id,
        family_id,
        since,
        before_seq,
        limit,
    )
    return rows
