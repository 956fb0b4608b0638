"""Security events: one row per event, with who, what, when and from where.

Never a token value, a password or a secret in `detail`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from service.db.pool import Connection

EVENT_TYPES = (
    "reuse_detected",
    "family_revoked",
    "login_failed",
    "login_locked",
    "key_rotated",
    "key_revoked",
    "user_disabled",
)


@dataclass(frozen=True, slots=True)
class Caller:
    """Where a request came from, as far as this service can tell."""

    ip: str | None
    user_agent: str | None


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
        """
        INSERT INTO security_events (id, type, user_id, client_id, family_id, ip, user_agent,
                                     detail)
        VALUES ($1, $2, $3, $4, $5, $6::inet, $7, $8)
        """,
        uuid.uuid4(),
        event_type,
        user_id,
        client_id,
        family_id,
        caller.ip if caller else None,
        caller.user_agent if caller else None,
        detail or {},
    )
