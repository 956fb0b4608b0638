"""Token families (one per login session) and their refresh-token strings.

A refresh token is 256 random bits, URL-safe; the store keeps its SHA-256
fingerprint only, so a dump of the database yields no usable token.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from service.db import families
from service.db.pool import Connection

REFRESH_TOKEN_BYTES = 32


def new_refresh_token() -> str:
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


def token_fingerprint(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


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
) -> NewFamily:
    """A password login: a new family and its generation-1 refresh token."""
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
    )
    return NewFamily(family_id, token)
