"""DPoP proofs as a client makes them (RFC 9449 §4.2), with joserfc, and the
broken ones a test sends: a key per algorithm, a proof for a URL and method,
and any header or claim changed, dropped or added."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from joserfc import jws
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

ISSUER = "http://localhost:8000"  # the tests' ROTOR_ISSUER (Settings' default)
DROP = object()


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _generate(alg: str) -> ECKey | OKPKey | RSAKey:
    if alg == "ES256":
        return ECKey.generate_key("P-256", private=True)
    if alg == "EdDSA":
        return OKPKey.generate_key("Ed25519", private=True)
    return RSAKey.generate_key(2048, private=True)


@dataclass
class DpopKey:
    alg: str = "ES256"
    key: ECKey | OKPKey | RSAKey = field(init=False)

    def __post_init__(self) -> None:
        self.key = _generate(self.alg)

    @property
    def public_jwk(self) -> dict[str, Any]:
        return dict(self.key.as_dict(private=False))

    @property
    def jkt(self) -> str:
        """RFC 7638 SHA-256 thumbprint."""
        return self.key.thumbprint()

    def proof(
        self,
        path: str = "/refresh",
        method: str = "POST",
        *,
        htu: str | None = None,
        iat: float | None = None,
        access_token: str | None = None,
        header: dict[str, Any] | None = None,
        claims: dict[str, Any] | None = None,
    ) -> str:
        """A proof for `method` at ISSUER + `path`; `header` and `claims` change
        or (with DROP) remove members."""
        protected: dict[str, Any] = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.public_jwk}
        payload: dict[str, Any] = {
            "jti": str(uuid.uuid4()),
            "htm": method,
            "htu": ISSUER + path if htu is None else htu,
            "iat": int(time.time()) if iat is None else iat,
        }
        if access_token is not None:
            payload["ath"] = b64u(hashlib.sha256(access_token.encode()).digest())
        _apply(protected, header or {})
        _apply(payload, claims or {})
        registry = JWSRegistry(algorithms=[self.alg], strict_check_header=False)
        return jws.serialize_compact(
            protected, json.dumps(payload), self.key, algorithms=[self.alg], registry=registry
        )


def _apply(target: dict[str, Any], changes: dict[str, Any]) -> None:
    for name, value in changes.items():
        if value is DROP:
            target.pop(name, None)
        else:
            target[name] = value


def unsigned_proof(key: DpopKey, path: str = "/refresh") -> str:
    """`alg: none`: no signature at all."""
    header = {"typ": "dpop+jwt", "alg": "none", "jwk": key.public_jwk}
    payload = {
        "jti": str(uuid.uuid4()),
        "htm": "POST",
        "htu": ISSUER + path,
        "iat": int(time.time()),
    }
    return f"{b64u(json.dumps(header).encode())}.{b64u(json.dumps(payload).encode())}."


def hmac_proof(path: str = "/refresh") -> str:
    """HS256 under a symmetric key, the key itself in the `jwk` header."""
    secret = OctKey.generate_key(256)
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": secret.as_dict(private=False)}
    payload = {
        "jti": str(uuid.uuid4()),
        "htm": "POST",
        "htu": ISSUER + path,
        "iat": int(time.time()),
    }
    return jws.serialize_compact(
        header,
        json.dumps(payload),
        secret,
        algorithms=["HS256"],
        registry=JWSRegistry(algorithms=["HS256"], strict_check_header=False),
    )
