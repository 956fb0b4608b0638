"""Token introspection (RFC 7662) and the live state of access tokens.

RFC 7662 2.2: for any token that is not active, "the authorization server
MUST return an introspection response with the active field set to false"
and SHOULD NOT say why: `{"active": false}`, whatever the reason. The answer
comes from the database on every call (one statement, shared with the
introspections of the same moment), so a revocation is visible at once; if
the database cannot be asked the caller gets a 503, never a guess.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from service.db import families
from service.db.batch import Batcher
from service.db.pool import Connection, Database
from service.tokens.families import token_fingerprint
from service.tokens.verify import AccessTokenVerifier, VerifiedAccessToken, looks_like_jwt

INACTIVE: dict[str, Any] = {"active": False}
MAX_REFRESH_TOKEN_CHARS = 512

AccessState = tuple[bool, str | None]  # (active, username)


async def access_token_states(
    connection: Connection, tokens: list[VerifiedAccessToken]
) -> list[AccessState]:
    """(active, username) of each verified access token, read from the database now."""
    rows = await families.access_token_states(
        connection,
        [token.kid for token in tokens],
        [token.jti for token in tokens],
        [token.family_id for token in tokens],
    )
    return [_access_state(token, row) for token, row in zip(tokens, rows, strict=True)]


def _access_state(token: VerifiedAccessToken, row: asyncpg.Record) -> AccessState:
    if row["key_state"] not in ("active", "retired") or row["jti_revoked"]:
        return False, None
    if token.family_id is not None and not (row["family_found"] and row["family_live"]):
        return False, None
    return True, row["username"]


async def access_token_state(connection: Connection, token: VerifiedAccessToken) -> AccessState:
    (state,) = await access_token_states(connection, [token])
    return state


# `cnf` for a DPoP-bound token (RFC 9449 §6.2).
ACCESS_TOKEN_FIELDS = (
    "scope",
    "client_id",
    "sub",
    "aud",
    "iss",
    "exp",
    "iat",
    "jti",
    "sid",
    "cnf",
)


class IntrospectionService:
    """Each introspection's database read joins the others of the same moment
    (service/db/batch.py): one statement for the access tokens, one for the
    refresh tokens."""

    def __init__(self, database: Database, verifier: AccessTokenVerifier) -> None:
        self._verifier = verifier
        self._access_states = Batcher(database, access_token_states)
        self._refresh_states = Batcher(database, families.live_refresh_tokens)

    async def introspect(self, token: str, hint: str | None) -> dict[str, Any]:
        # RFC 7662 2.1: the hint only orders the look-ups; a wrong one changes nothing.
        del hint
        if looks_like_jwt(token):
            verified = self._verifier.verify(token)
            return INACTIVE if verified is None else await self._access(verified)
        return await self._refresh(token)

    async def _access(self, verified: VerifiedAccessToken) -> dict[str, Any]:
        active, username = await self._access_states.get(verified)
        if not active:
            return INACTIVE
        claims = verified.claims
        answer: dict[str, Any] = {"active": True, "token_type": "access_token"}
        answer.update({name: claims[name] for name in ACCESS_TOKEN_FIELDS if name in claims})
        if username is not None:
            answer["username"] = username
        return answer

    async def _refresh(self, token: str) -> dict[str, Any]:
        if len(token) > MAX_REFRESH_TOKEN_CHARS:
            return INACTIVE
        row = await self._refresh_states.get(token_fingerprint(token))
        if row is None:
            return INACTIVE
        answer: dict[str, Any] = {
            "active": True,
            "token_type": "refresh_token",
            "scope": row["scope"],
            "client_id": str(row["client_id"]),
            "sub": str(row["user_id"]),
            "exp": row["exp"],
            "iat": row["iat"],
            "sid": str(row["family_id"]),
            "username": row["username"],
        }
        if row["dpop_jkt"] is not None:
            # RFC 9449 §6.2 (CONTRACT 3.9): the family's key, for its refresh tokens too.
            answer["cnf"] = {"jkt": row["dpop_jkt"]}
        return answer
