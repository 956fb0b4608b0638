"""Revocation: RFC 7009 for clients, the set-based family revocations of
operators, and the user's own (CONTRACT 3.8).

RFC 7009 2.2: "The authorization server responds with HTTP status code 200 if
the token has been revoked successfully or if the client submitted an invalid
token." Tokens are marked revoked, never deleted (pruning deletes later).
A set of families is revoked by one statement, never row by row.
"""

from __future__ import annotations

import uuid
from typing import Any

from service.accounts.clients import Client
from service.db import families
from service.db.families import OwnRevoke, RevokeBy
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


async def revoke_families(
    connection: Connection,
    by: RevokeBy,
    owner: uuid.UUID,
    reason: str,
    caller: Caller | None = None,
) -> int:
    """Revoke the live families of one family (`by="family"`), or of a user or a
    client: one statement; the number newly revoked."""
    assert reason in REVOCATION_REASONS
    count = await families.revoke(connection, by, owner, reason, caller)
    metrics.child(metrics.FAMILIES_REVOKED, reason).inc(count)
    return count


async def revoke_own_families(
    connection: Connection,
    which: OwnRevoke,
    user_id: uuid.UUID,
    family_id: uuid.UUID,
    caller: Caller,
) -> int:
    """A user signs out one of their sessions (`which="one"`: family `family_id`)
    or every other one (`"others"`: all live families but `family_id`): reason
    `logout`, one statement; the number revoked."""
    count = await families.revoke_own(connection, which, user_id, family_id, "logout", caller)
    metrics.child(metrics.FAMILIES_REVOKED, "logout").inc(count)
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
        row = await families.family_of_token(connection, token_fingerprint(token))
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
        await families.revoke_jti(connection, verified.jti, float(verified.claims["exp"]))
        metrics.ACCESS_TOKENS_REVOKED.inc()


def _check_owner(owner: Any, client: Client) -> None:
    # RFC 7009 2.1: the server verifies that the token was issued to the
    # client making the request; CONTRACT 3.5 answers unauthorized_client.
    if str(owner) != client.client_id:
        raise UnauthorizedClient("the token was not issued to this client")
