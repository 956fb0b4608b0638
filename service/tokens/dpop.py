"""DPoP proofs (RFC 9449): verifying one, and the thumbprint it binds to.

What is checked, in the order of RFC 9449 §4.3 (each refusal raises
InvalidDpopProof with a fixed description and a `reason` from REASONS):

1. exactly one `DPoP` header (§4.3 check 1), at most MAX_PROOF_BYTES, refused
   before anything is parsed;
2. a JWS compact serialization (check 2) whose header has `typ: dpop+jwt`
   (check 4), an `alg` among DPOP_ALGS, never `none` nor an HMAC (check 5),
   and a `jwk` that is a public key of that algorithm's type, no private
   member in it (check 7); the signature verifies with that `jwk` (check 6),
   joserfc doing all of the JOSE;
3. the claims, each checked here (joserfc checks signatures, never claims):
   `jti` (check 3), `htm` the request's method (check 8), `htu` the
   endpoint's URL under ROTOR_ISSUER, query and fragment ignored (check 9),
   `iat` within ROTOR_DPOP_WINDOW of now either way (check 11), and, at a
   protected resource, `ath` the access token's hash (check 12, §7).

The jti's single use (check 11's replay, §11.1) is the database's: the
caller records `Proof.jti` in service/db/dpop.py, in its own unit of work.
The key's JWK SHA-256 thumbprint (RFC 7638) is what a family is bound to (§6).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

import msgspec
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from service.db import dpop as store
from service.db.pool import Connection
from service.errors import InvalidDpopProof

MAX_PROOF_BYTES = 8 * 1024
MAX_JTI_CHARS = 256
MIN_RSA_BITS = 2048
# A seen jti is kept this much past its proof's window: the database's clock,
# which prunes, may run ahead of the process's, which checks `iat`.
CLOCK_SLACK = 60
DPOP_TYPE = "dpop+jwt"
# RFC 9449 §5.1 dpop_signing_alg_values_supported: asymmetric only (§4.2).
DPOP_ALGS = ("ES256", "EdDSA", "RS256")
_KEY_TYPES: dict[str, tuple[type[ECKey | OKPKey | RSAKey], tuple[str, ...] | None]] = {
    "ES256": (ECKey, ("P-256",)),
    "EdDSA": (OKPKey, ("Ed25519", "Ed448")),
    "RS256": (RSAKey, None),
}
# RFC 7517/7518 private members (and `k`, a symmetric key's): §4.2 "MUST NOT
# contain a private key".
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

# What failed, for the dpop_mismatch event's detail (CONTRACT 3.6).
REASONS = (
    "missing",
    "multiple",
    "too_large",
    "malformed",
    "typ",
    "alg",
    "jwk",
    "signature",
    "jti",
    "htm",
    "htu",
    "iat",
    "ath",
    "replayed",
    "other_key",
)

_DEFAULT_PORTS = {"http": 80, "https": 443}


class _ProofRegistry(JWSRegistry):
    """joserfc's registry with room for a proof's header: an RSA `jwk` alone
    passes joserfc's default 512 bytes. The whole proof is bounded before."""

    max_header_length = MAX_PROOF_BYTES
    max_payload_length = MAX_PROOF_BYTES


@dataclass(frozen=True, slots=True)
class PresentedProof:
    """What a request carries for DPoP, read at the HTTP edge: every `DPoP`
    header's value, the request's method and the endpoint's path."""

    headers: tuple[str, ...]
    method: str
    path: str


NO_PROOF = PresentedProof((), "POST", "")


@dataclass(frozen=True, slots=True)
class Proof:
    """A verified proof: the key's thumbprint, and the jti to record as seen
    at `endpoint` until `expires_at` (epoch seconds: the end of its window)."""

    jkt: str
    jti: str
    endpoint: str
    expires_at: float


def token_hash(access_token: str) -> str:
    """RFC 9449 §4.2 `ath`: base64url of the SHA-256 of the token's ASCII."""
    digest = hashlib.sha256(access_token.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _origin_and_path(url: SplitResult) -> tuple[str, str, int | None, str]:
    # RFC 9449 §4.3 check 9 and RFC 3986 §6.2.2-6.2.3: scheme and host compare
    # without case, a default port is no port, an empty path is "/".
    scheme = url.scheme.lower()
    try:
        port = url.port
    except ValueError:
        port = -1
    if port == _DEFAULT_PORTS.get(scheme):
        port = None
    return scheme, (url.hostname or ""), port, url.path or "/"


class DpopVerifier:
    def __init__(self, *, issuer: str, window: int, clock: Callable[[], float] = time.time) -> None:
        self._base = issuer.rstrip("/")
        self._window = window
        self._clock = clock

    def verify(self, presented: PresentedProof, access_token: str | None = None) -> Proof | None:
        """The verified proof of a request's `DPoP` headers; None when there is none."""
        headers, method, path = presented.headers, presented.method, presented.path
        if not headers:
            return None
        # Two header fields may also reach us joined by a comma (RFC 9110 5.3),
        # which no JWS compact serialization holds.
        if len(headers) > 1 or "," in headers[0]:
            raise InvalidDpopProof("exactly one DPoP header is allowed", reason="multiple")
        value = headers[0]
        if len(value.encode("utf-8", "replace")) > MAX_PROOF_BYTES:
            raise InvalidDpopProof("the DPoP proof is larger than 8 KiB", reason="too_large")
        jkt, claims = self._verify_jws(value)
        now = self._clock()
        jti = self._check_claims(claims, method, path, now)
        if access_token is not None and claims.get("ath") != token_hash(access_token):
            raise InvalidDpopProof(
                "the DPoP proof's ath is not the hash of the access token", reason="ath"
            )
        return Proof(jkt, jti, path, float(claims["iat"]) + self._window + CLOCK_SLACK)

    def _verify_jws(self, value: str) -> tuple[str, dict[str, Any]]:
        """RFC 9449 §4.3 checks 2, 4-7: the JOSE, by joserfc. The key's thumbprint
        and the claims."""
        try:
            compact = jws.extract_compact(value.encode("ascii"), registry=_ProofRegistry())
            header = compact.headers()
        except (JoseError, ValueError, TypeError, UnicodeError):
            raise InvalidDpopProof(
                "the DPoP proof is not a JWS compact serialization", reason="malformed"
            ) from None
        if header.get("typ") != DPOP_TYPE:
            raise InvalidDpopProof("the DPoP proof's typ must be dpop+jwt", reason="typ")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in DPOP_ALGS:
            raise InvalidDpopProof(
                "the DPoP proof's alg must be one of ES256, EdDSA, RS256", reason="alg"
            )
        key = _public_key(alg, header.get("jwk"))
        registry = _ProofRegistry(algorithms=[alg], strict_check_header=False)
        try:
            valid = jws.validate_compact(compact, key, registry=registry)
        except (JoseError, ValueError, TypeError):
            valid = False
        if not valid:
            raise InvalidDpopProof(
                "the DPoP proof's signature does not verify with its jwk", reason="signature"
            )
        try:
            claims = msgspec.json.decode(compact.payload)
        except (msgspec.DecodeError, RecursionError):
            claims = None
        if not isinstance(claims, dict):
            raise InvalidDpopProof(
                "the DPoP proof's payload is not a JSON object", reason="malformed"
            )
        return key.thumbprint(), claims

    def _check_claims(self, claims: dict[str, Any], method: str, path: str, now: float) -> str:
        jti = claims.get("jti")
        # §4.2: a unique identifier; bounded and printable, since it is stored.
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS or not jti.isprintable():
            raise InvalidDpopProof(
                "the DPoP proof needs a jti of 1 to 256 characters", reason="jti"
            )
        if claims.get("htm") != method:
            raise InvalidDpopProof(
                "the DPoP proof's htm is not the method of this request", reason="htm"
            )
        htu = claims.get("htu")
        if not isinstance(htu, str) or not self._same_endpoint(htu, path):
            raise InvalidDpopProof("the DPoP proof's htu is not this endpoint's URL", reason="htu")
        iat = claims.get("iat")
        if (
            isinstance(iat, bool)
            or not isinstance(iat, int | float)
            or abs(now - iat) > self._window
        ):
            raise InvalidDpopProof(
                "the DPoP proof's iat is outside the accepted window", reason="iat"
            )
        return jti

    def _same_endpoint(self, htu: str, path: str) -> bool:
        try:
            presented = urlsplit(htu)
        except ValueError:
            return False
        expected = urlsplit(self._base + path)
        return _origin_and_path(presented) == _origin_and_path(expected)


async def spend(connection: Connection, proof: Proof) -> None:
    """RFC 9449 §11.1: record the proof's jti as seen at its endpoint; a jti
    seen there before (by any process) is a replay."""
    unseen(await store.record_jti(connection, proof.endpoint, proof.jti, proof.expires_at))


def unseen(recorded: bool) -> None:
    """The answer to a proof whose jti the store did not take: a replay."""
    if not recorded:
        raise InvalidDpopProof("the DPoP proof was already used", reason="replayed")


def _public_key(alg: str, jwk: object) -> ECKey | OKPKey | RSAKey:
    """RFC 9449 §4.3 check 7: the `jwk` header, a public key of the alg's type."""
    kind, curves = _KEY_TYPES[alg]
    if not isinstance(jwk, dict) or PRIVATE_MEMBERS & jwk.keys():
        raise InvalidDpopProof("the DPoP proof's jwk must be a public key", reason="jwk")
    try:
        key = kind.import_key(jwk)
    except (JoseError, ValueError, TypeError, KeyError):
        key = None
    if (
        key is None
        or key.is_private
        or (curves is not None and jwk.get("crv") not in curves)
        or (isinstance(key, RSAKey) and key.public_key.key_size < MIN_RSA_BITS)
    ):
        raise InvalidDpopProof(
            "the DPoP proof's jwk must be a public key for its alg", reason="jwk"
        )
    return key
