"""Token introspection (RFC 7662) and the live state of access tokens.

RFC 7662 2.2: for any token that is not active, "the authorization server
MUST return an introspection response with the active field set to false"
and SHOULD NOT say why: `{"active": false}`, whatever the reason. The answer
comes from the database on every call (one statement), so a revocation is
visible at once; if the database cannot be asked the caller gets a 503,
never a guess.
"""

from __future__ import annotations

from typing import Any

from service.db.pool import Connection, Database
from service.tokens.families import token_fingerprint
from service.tokens.verify import AccessTokenVerifier, VerifiedAccessToken, looks_like_jwt

INACTIVE: dict[str, Any] = {"active": False}
MAX_REFRESH_TOKEN_CHARS = 512

# Live state of a verified access token: key not revoked, jti not revoked,
# family (if any) neither revoked nor expired nor idled out, user enabled.
ACCESS_STATE_SQL = """
SELECT
    (SELECT state FROM signing_keys WHERE kid = $1) AS key_state,
    EXISTS (SELECT 1 FROM revoked_access_tokens WHERE jti = $2) AS jti_revoked,
    f.id IS NOT NULL AS family_found,
    (f.revoked_at IS NULL AND f.expires_at > now() AND NOT u.disabled
     AND EXISTS (SELECT 1 FROM refresh_tokens r
                 WHERE r.family_id = f.id AND r.spent_at IS NULL AND r.expires_at > now())
    ) AS family_live,
    u.username
FROM (SELECT 1) AS one
LEFT JOIN token_families f ON f.id = $3
LEFT JOIN users u ON u.id = f.user_id
"""

REFRESH_STATE_SQL = """
SELECT t.family_id, f.client_id, f.user_id, f.scope, u.username,
       floor(extract(epoch FROM t.issued_at))::bigint AS iat,
       floor(extract(epoch FROM least(t.expires_at, f.expires_at)))::bigint AS exp
FROM refresh_tokens t
JOIN token_families f ON f.id = t.family_id
JOIN users u ON u.id = f.user_id
WHERE t.token_hash = $1
  AND t.spent_at IS NULL AND t.expires_at > now()
  AND f.revoked_at IS NULL AND f.expires_at > now()
  AND NOT u.disabled
"""

ACCESS_TOKEN_FIELDS = ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti", "sid")


async def access_token_state(
    connection: Connection, token: VerifiedAccessToken
) -> tuple[bool, str | None]:
    """(active, username) of a verified access token, read from the database now."""
    row = await connection.fetchrow(ACCESS_STATE_SQL, token.kid, token.jti, token.family_id)
    if row["key_state"] not in ("active", "retired") or row["jti_revoked"]:
        return False, None
    if token.family_id is not None and not (row["family_found"] and row["family_live"]):
        return False, None
    return True, row["username"]


class IntrospectionService:
    def __init__(self, database: Database, verifier: AccessTokenVerifier) -> None:
        self._db = database
        self._verifier = verifier

    async def introspect(self, token: str, hint: str | None) -> dict[str, Any]:
        # RFC 7662 2.1: the hint only orders the look-ups; a wrong one changes nothing.
        del hint
        async with self._db.connection() as connection:
            if looks_like_jwt(token):
                verified = self._verifier.verify(token)
                return INACTIVE if verified is None else await self._access(connection, verified)
            return await self._refresh(connection, token)

    async def _access(
        self, connection: Connection, verified: VerifiedAccessToken
    ) -> dict[str, Any]:
        active, username = await access_token_state(connection, verified)
        if not active:
            return INACTIVE
        claims = verified.claims
        answer: dict[str, Any] = {"active": True, "token_type": "access_token"}
        answer.update({name: claims[name] for name in ACCESS_TOKEN_FIELDS if name in claims})
        if username is not None:
            answer["username"] = username
        return answer

    async def _refresh(self, connection: Connection, token: str) -> dict[str, Any]:
        if len(token) > MAX_REFRESH_TOKEN_CHARS:
            return INACTIVE
        row = await connection.fetchrow(REFRESH_STATE_SQL, token_fingerprint(token))
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
