"""Token families (one per login session) and their refresh-token strings.

A refresh token is 256 random bits, URL-safe; the store keeps its SHA-256
fingerprint only, so a dump of the database yields no usable token. A family
also records where it was opened and last used (CONTRACT 3.8): the caller's
IP and user agent at the login and at each rotation.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from service.db import families
from service.db.pool import Connection
from service.events import Caller

REFRESH_TOKEN_BYTES = 32
SESSION_USER_AGENT_CHARS = 256  # CONTRACT 3.8: user agents are cut to 256 characters


def new_refresh_token() -> str:
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


def token_fingerprint(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def session_user_agent(caller: Caller) -> str | None:
    """The caller's user agent as a family records it."""
    agent = caller.user_agent
    return agent[:SESSION_USER_AGENT_CHARS] if agent else None


@dataclass(frozen=True, slots=True)
class FamilyLimits:
    idle_ttl: int  # ROTOR_REFRESH_IDLE_TTL: each refresh token's sliding window
    max_ttl: int  # ROTOR_FAMILY_MAX_TTL: the family's absolute lifetime, from login


@dataclass(frozen=True, slots=True)
class NewFamily:
    family_id: uuid.UUID
    refresh_token: str


async def start_family(
    connection: Connection,
    limits: FamilyLimits,
    *,
    user_id: uuid.UUID,
    client_id: uuid.UUID,
    scope: str,
    caller: Caller,
    dpop_jkt: str | None = None,
) -> NewFamily:
    """A password login, by `caller`: a new family and its generation-1 refresh
    token; bound to the DPoP key of thumbprint `dpop_jkt` if given (RFC 9449 §5)."""
    family_id, token = uuid.uuid4(), new_refresh_token()
    await families.start(
        connection,
        family_id=family_id,
        user_id=user_id,
        client_id=client_id,
        scope=scope,
        max_ttl=limits.max_ttl,
        token_hash=token_fingerprint(token),
        idle_ttl=limits.idle_ttl,
        ip=caller.ip,
        user_agent=session_user_agent(caller),
        dpop_jkt=dpop_jkt,
    )
    return NewFamily(family_id, token)
