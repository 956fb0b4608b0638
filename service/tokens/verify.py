"""Verifying Rotor's own access tokens (RFC 9068 section 4, RFC 8725).

What is refused, in order: anything that is not three base64url segments of
a sane size; a header that is not a JSON object; `typ` other than at+jwt;
header keys (`jwk`, `jku`, `x5u`, `x5c`) and `crit`, which no Rotor token
carries and which are never trusted or fetched; an `alg` outside the
allow-list or other than the algorithm of the key named by `kid`; a `kid`
that is not a published, signing-capable key; a bad signature; then claims:
`iss` exactly this issuer, `aud` exactly this audience, `exp` in the future
(expired from its `exp` second on, no leeway), `nbf`/`iat` not in the future,
and the required claims present. Live state (revoked jti, family, key) is the
caller's to check in the database.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwt import ClaimsOption, JWTClaimsRegistry

from service.config import SIGNING_ALGS, Settings
from service.errors import InvalidDpopToken, InvalidToken
from service.tokens.keys import KeyRing

MAX_JWT_CHARS = 8192
MAX_REMEMBERED = 10_000
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
FORBIDDEN_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c", "crit"})
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")


@dataclass(frozen=True, slots=True)
class VerifiedAccessToken:
    kid: str
    jti: uuid.UUID
    family_id: uuid.UUID | None
    claims: dict[str, Any]


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def _header(token: str) -> dict[str, Any] | None:
    segment = token.split(".", 1)[0]
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        header = msgspec.json.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError, RecursionError):
        return None
    return header if isinstance(header, dict) else None


class AccessTokenVerifier:
    def __init__(self, settings: Settings, ring: KeyRing) -> None:
        self._ring = ring
        self._issuer = settings.issuer
        audience = settings.audience
        self._audience: str | list[str] = audience[0] if len(audience) == 1 else list(audience)
        self._verified: dict[str, VerifiedAccessToken] = {}

    def verify(self, token: str, *, now: int | None = None) -> VerifiedAccessToken | None:
        """The verified token, or None for anything that is not a valid Rotor access token.

        Gateways introspect the same token many times: a token that verified once
        is remembered until its `exp` (its signature and claims cannot change), as
        long as its key is still published. Live state (revocations, key state) is
        never cached: the caller reads it from the database every time."""
        moment = int(time.time()) if now is None else now
        known = self._verified.get(token)
        if known is not None:
            if known.claims["exp"] > moment and known.kid in self._ring.state.verifying:
                return known
            del self._verified[token]
        verified = self._verify(token, moment)
        if verified is not None:
            if len(self._verified) >= MAX_REMEMBERED:
                self._verified.clear()
            self._verified[token] = verified
        return verified

    def _verify(self, token: str, now: int) -> VerifiedAccessToken | None:
        if len(token) > MAX_JWT_CHARS or not looks_like_jwt(token):
            return None
        header = _header(token)
        if header is None or FORBIDDEN_HEADERS & header.keys():
            return None
        typ, alg, kid = header.get("typ"), header.get("alg"), header.get("kid")
        if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
            return None
        if not isinstance(alg, str) or alg not in SIGNING_ALGS or not isinstance(kid, str):
            return None
        key = self._ring.state.verifying.get(kid)
        if key is None or key.alg != alg:
            return None
        try:
            decoded = jwt.decode(token, key.key, algorithms=[key.alg])
        except (JoseError, ValueError, TypeError):
            return None
        return self._check_claims(kid, decoded.claims, now)

    def _check_claims(
        self, kid: str, claims: dict[str, Any], now: int
    ) -> VerifiedAccessToken | None:
        # joserfc's jwt.decode checks the signature only; the claims are ours to check.
        required: dict[str, ClaimsOption] = {
            name: {"essential": True} for name in REQUIRED_CLAIMS if name != "iss"
        }
        registry = JWTClaimsRegistry(
            now=now,
            leeway=0,
            iss={"essential": True, "value": self._issuer},
            **required,
        )
        try:
            registry.validate(claims)
        except JoseError:
            return None
        # RFC 9068 4: the audience must be exactly what this Rotor issues.
        if claims["aud"] != self._audience or claims["iss"] != self._issuer:
            return None
        try:
            jti = uuid.UUID(str(claims["jti"]))
            sid = claims.get("sid")
            family_id = None if sid is None else uuid.UUID(str(sid))
        except ValueError:
            return None
        if not isinstance(claims.get("scope", ""), str) or not isinstance(claims["client_id"], str):
            return None
        return VerifiedAccessToken(kid, jti, family_id, claims)


def presented_token(authorization: str | None) -> tuple[str, str] | None:
    """The scheme (`bearer` or `dpop`) and token of an `Authorization` header:
    RFC 6750 2.1 and RFC 9449 7.1. Any other scheme is no token at all."""
    scheme, _sep, token = (authorization or "").partition(" ")
    token, scheme = token.strip(), scheme.lower()
    if scheme not in ("bearer", "dpop") or not token:
        return None
    return scheme, token


def bound_key(verified: VerifiedAccessToken) -> str | None:
    """The thumbprint of the DPoP key a token is bound to (RFC 9449 6.1 `cnf.jkt`)."""
    cnf = verified.claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    return jkt if isinstance(jkt, str) else None


def verified_bearer(
    verifier: AccessTokenVerifier, authorization: str | None
) -> VerifiedAccessToken:
    """The verified access token of a Bearer header (signature, claims), else
    InvalidToken (401, RFC 6750 3.1). A DPoP-bound token is no bearer token
    (RFC 9449 7.2: it MUST be refused as one). Whether it is still live is the
    caller's next question, asked of the database."""
    presented = presented_token(authorization)
    if presented is None or presented[0] != "bearer":
        raise InvalidToken("a Bearer access token is required")
    verified = verifier.verify(presented[1])
    if verified is None:
        raise InvalidToken("the access token is invalid or expired", presented=True)
    if bound_key(verified) is not None:
        raise InvalidDpopToken(
            "a DPoP-bound access token needs the DPoP scheme and a proof", proof_at_fault=False
        )
    return verified
