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

from service.db.batch import Batcher
from service.db.pool import Connection, Database
from service.tokens.families import token_fingerprint
from service.tokens.verify import AccessTokenVerifier, VerifiedAccessToken, looks_like_jwt

INACTIVE: dict[str, Any] = {"active": False}
MAX_REFRESH_TOKEN_CHARS = 512

# Live state of verified access tokens (one row per token, `i` its position):
# key not revoked, jti not revoked, family (if any) neither revoked nor expired
# nor idled out, user enabled.
ACCESS_STATE_SQL = """
SELECT
    q.i,
    (SELECT state FROM signing_keys WHERE kid = q.kid) AS key_state,
    EXISTS (SELECT 1 FROM revoked_access_tokens WHERE jti = q.jti) AS jti_revoked,
    f.id IS NOT NULL AS family_found,
    (f.revoked_at IS NULL AND f.expires_at > now() AND NOT u.disabled
     AND EXISTS (SELECT 1 FROM refresh_tokens r
                 WHERE r.family_id = f.id AND r.spent_at IS NULL AND r.expires_at > now())
    ) AS family_live,
    u.username
FROM unnest($1::text[], $2::uuid[], $3::uuid[]) WITH ORDINALITY AS q(kid, jti, family_id, i)
LEFT JOIN token_families f ON f.id = q.family_id
LEFT JOIN users u ON u.id = f.user_id
"""

# Live refresh tokens among these hashes (`i` their position; absent: inactive).
REFRESH_STATE_SQL = """
SELECT q.i, t.family_id, f.client_id, f.user_id, f.scope, u.username,
       floor(extract(epoch FROM t.issued_at))::bigint AS iat,
       floor(extract(epoch FROM least(t.expires_at, f.expires_at)))::bigint AS exp
FROM unnest($1::bytea[]) WITH ORDINALITY AS q(token_hash, i)
JOIN refresh_tokens t ON t.token_hash = q.token_hash
JOIN token_families f ON f.id = t.family_id
JOIN users u ON u.id = f.user_id
WHERE t.spent_at IS NULL AND t.expires_at > now()
  AND f.revoked_at IS NULL AND f.expires_at > now()
  AND NOT u.disabled
"""

AccessState = tuple[bool, str | None]  # (active, username)


async def access_token_states(
    connection: Connection, tokens: list[VerifiedAccessToken]
) -> list[AccessState]:
    """(active, username) of each verified access token, read from the database now."""
    rows = await connection.fetch(
        ACCESS_STATE_SQL,
        [token.kid for token in tokens],
        [token.jti for token in tokens],
        [token.family_id for token in tokens],
    )
    by_position = {row["i"]: row for row in rows}
    return [_access_state(token, by_position[i]) for i, token in enumerate(tokens, start=1)]


def _access_state(token: VerifiedAccessToken, row: asyncpg.Record) -> AccessState:
    if row["key_state"] not in ("active", "retired") or row["jti_revoked"]:
        return False, None
    if token.family_id is not None and not (row["family_found"] and row["family_live"]):
        return False, None
    return True, row["username"]


async def access_token_state(connection: Connection, token: VerifiedAccessToken) -> AccessState:
    (state,) = await access_token_states(connection, [token])
    return state


async def live_refresh_tokens(
    connection: Connection, token_hashes: list[bytes]
) -> list[asyncpg.Record | None]:
    """The state of each refresh token that is live, else None."""
    rows = await connection.fetch(REFRESH_STATE_SQL, token_hashes)
    by_position = {row["i"]: row for row in rows}
    return [by_position.get(i) for i in range(1, len(token_hashes) + 1)]


ACCESS_TOKEN_FIELDS = ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti", "sid")


class IntrospectionService:
    """Each introspection's database read joins the others of the same moment
    (service/db/batch.py): one statement for the access tokens, one for the
    refresh tokens."""

    def __init__(self, database: Database, verifier: AccessTokenVerifier) -> None:
        self._verifier = verifier
        self._access_states = Batcher(database, access_token_states)
        self._refresh_states = Batcher(database, live_refresh_tokens)

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
        return {
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
