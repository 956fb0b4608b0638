"""Security events and callers: the types Rotor records (the store is
service/db/events.py) and where a request came from."""

from __future__ import annotations

from dataclasses import dataclass

EVENT_TYPES = (
    "reuse_detected",
    "family_revoked",
    "login_failed",
    "login_locked",
    "key_rotated",
    "key_revoked",
    "user_disabled",
    "dpop_mismatch",
)


@dataclass(frozen=True, slots=True)
class Caller:
    """Where a request came from, as far as this service can tell."""

    ip: str | None
    user_agent: str | None
