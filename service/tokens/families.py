"""Token families and their refresh tokens: the SQL of the store.

A refresh token is 256 random bits, URL-safe; the store keeps its SHA-256
fingerprint only, so a dump of the database yields no usable token.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from service.db.pool import Connection

REFRESH_TOKEN_BYTES = 32


def new_refresh_token() -> str:
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


def token_fingerprint(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class NewFamily:
    family_id: uuid.UUID
    refresh_token: str


class FamilyStore:
    def __init__(self, *, idle_ttl: int, max_ttl: int) -> None:
        self._idle_ttl = idle_ttl
        self._max_ttl = max_ttl

    async def start(
        self, connection: Connection, *, user_id: uuid.UUID, client_id: uuid.UUID, scope: str
    ) -> NewFamily:
        """A password login: a new family and its generation-1 refresh token, in one
        round trip. The token's idle window never reaches past the family's limit."""
        family_id = uuid.uuid4()
        token = new_refresh_token()
        await connection.execute(
            """
            WITH family AS (
                INSERT INTO token_families (id, user_id, client_id, scope, expires_at)
                VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
                RETURNING id, expires_at
            )
            INSERT INTO refresh_tokens (token_hash, family_id, generation, expires_at)
            SELECT $6, id, 1, least(now() + make_interval(secs => $7), expires_at) FROM family
            """,
            family_id,
            user_id,
            client_id,
            scope,
            self._max_ttl,
            token_fingerprint(token),
            self._idle_ttl,
        )
        return NewFamily(family_id, token)
