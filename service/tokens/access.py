"""Access tokens: JWTs per RFC 9068, signed with the one active key.

The `kid` is always set and the key passed explicitly: joserfc picks a random
key of a KeySet when no `kid` is given (STYLE.md, joserfc traps).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from joserfc import jwt

from service.config import Settings
from service.tokens.keys import KeyRing


@dataclass(frozen=True, slots=True)
class IssuedAccessToken:
    token: str
    jti: uuid.UUID
    expires_in: int


class AccessTokenIssuer:
    def __init__(self, settings: Settings, ring: KeyRing) -> None:
        self._issuer = settings.issuer
        audience = settings.audience
        # RFC 7519 4.1.3: a single audience may be a string; several, a list in order.
        self._audience: str | list[str] = audience[0] if len(audience) == 1 else list(audience)
        self._ttl = settings.access_token_ttl
        self._ring = ring

    def issue(
        self,
        *,
        subject: str,
        client_id: str,
        scope: str,
        family_id: uuid.UUID | None,
        now: int | None = None,
    ) -> IssuedAccessToken:
        issued_at = int(time.time()) if now is None else now
        jti = uuid.uuid4()
        claims: dict[str, object] = {
            "iss": self._issuer,
            "sub": subject,
            "aud": self._audience,
            "exp": issued_at + self._ttl,
            "iat": issued_at,
            "nbf": issued_at,
            "jti": str(jti),
            "client_id": client_id,
            "scope": scope,
        }
        if family_id is not None:
            claims["sid"] = str(family_id)
        key = self._ring.state.active
        header = {"alg": key.alg, "typ": "at+jwt", "kid": key.kid}
        token = jwt.encode(header, claims, key.key, algorithms=[key.alg])
        return IssuedAccessToken(token, jti, self._ttl)
