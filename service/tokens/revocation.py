"""Revocation: RFC 7009 for clients, and the set-based family revocations of operators.

RFC 7009 2.2: "The authorization server responds with HTTP status code 200 if
the token has been revoked successfully or if the client submitted an invalid
token." Tokens are marked revoked, never deleted (pruning deletes later).
A set of families is revoked by one statement, never row by row.
"""

from __future__ import annotations

import uuid
from typing import Any

from service.accounts.clients import Client
from service.db.pool import Connection, Database
from service.errors import UnauthorizedClient
from service.events import Caller
from service.observability import metrics
from service.tokens.families import token_fingerprint
from service.tokens.introspection import MAX_REFRESH_TOKEN_CHARS
from service.tokens.verify import AccessTokenVerifier, looks_like_jwt

REVOCATION_REASONS = (
    "reuse_detected",
    "logout",
    "admin",
    "user_disabled",
    "client_revoked",
    "password_changed",
)

# Revoke every still-live family matched by the WHERE clause and record one
# family_revoked event per family, in one statement. $1 reason, $2 ip,
# $3 user agent; the filter's own parameters follow.
_REVOKE_TEMPLATE = """
WITH revoked AS (
    UPDATE token_families SET revoked_at = now(), revoked_reason = $1
    WHERE revoked_at IS NULL AND ({where})
    RETURNING id, user_id, client_id
), events AS (
    INSERT INTO security_events (id, type, user_id, client_id, family_id, ip, user_agent, detail)
    SELECT gen_random_uuid(), 'family_revoked', user_id, client_id, id, $2::inet, $3,
           jsonb_build_object('reason', $1::text)
    FROM revoked
)
SELECT count(*) FROM revoked
"""

FAMILY_FILTERS = {
    "family": "id = $4",
    "user": "user_id = $4",
    "client": "client_id = $4",
}


async def revoke_families(
    connection: Connection,
    scope: str,
    subject: uuid.UUID,
    reason: str,
    caller: Caller | None = None,
) -> int:
    """Revoke the live families of one family, user or client; the number newly revoked."""
    assert reason in REVOCATION_REASONS
    sql = _REVOKE_TEMPLATE.format(where=FAMILY_FILTERS[scope])
    count: int = await connection.fetchval(
        sql,
        reason,
        caller.ip if caller else None,
        caller.user_agent if caller else None,
        subject,
    )
    metrics.child(metrics.FAMILIES_REVOKED, reason).inc(count)
    return count


class RevocationService:
    def __init__(self, database: Database, verifier: AccessTokenVerifier) -> None:
        self._db = database
        self._verifier = verifier

    async def revoke(self, client: Client, token: str, hint: str | None, caller: Caller) -> None:
        del hint  # RFC 7009 2.1: the server searches all token types anyway
        async with self._db.transaction() as connection:
            if looks_like_jwt(token):
                await self._revoke_access(connection, client, token)
            elif len(token) <= MAX_REFRESH_TOKEN_CHARS:
                await self._revoke_refresh(connection, client, token, caller)

    async def _revoke_refresh(
        self, connection: Connection, client: Client, token: str, caller: Caller
    ) -> None:
        row = await connection.fetchrow(
            "SELECT t.family_id, f.client_id FROM refresh_tokens t "
            "JOIN token_families f ON f.id = t.family_id WHERE t.token_hash = $1",
            token_fingerprint(token),
        )
        if row is None:
            return
        _check_owner(row["client_id"], client)
        # A live or an already spent token: the whole family ends (CONTRACT 3.5).
        await revoke_families(connection, "family", row["family_id"], "logout", caller)

    async def _revoke_access(self, connection: Connection, client: Client, token: str) -> None:
        verified = self._verifier.verify(token)
        if verified is None:
            return  # invalid or expired: nothing left to revoke
        _check_owner(verified.claims["client_id"], client)
        await connection.execute(
            "INSERT INTO revoked_access_tokens (jti, expires_at) "
            "VALUES ($1, to_timestamp($2)) ON CONFLICT (jti) DO NOTHING",
            verified.jti,
            float(verified.claims["exp"]),
        )
        metrics.ACCESS_TOKENS_REVOKED.inc()


def _check_owner(owner: Any, client: Client) -> None:
    # RFC 7009 2.1: the server verifies that the token was issued to the
    # client making the request; CONTRACT 3.5 answers unauthorized_client.
    if str(owner) != client.client_id:
        raise UnauthorizedClient("the token was not issued to this client")
