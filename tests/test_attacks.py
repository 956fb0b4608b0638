"""Forged and tampered access tokens at /introspect (RFC 8725, CONTRACT 2 and 3.4).

Each attack is presented by an authenticated gateway and must be answered
`200 {"active": false}` exactly, with the no-store headers. Tokens are built
by hand (base64url and `cryptography`), so the test controls every byte of
header, payload and signature. The claim attacks are signed with Rotor's
*real* active key: the signature is valid, so only the claim check can refuse
them; `test_control_reminted_token_is_active` shows that the same minting
with unchanged claims gives an active token.

Variants of one attack share a test (one database, one app) and are checked
together: the assertion compares the answers of all named variants with the
expected ones, so a failure names every variant that got through.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.oid import NameOID
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.config import Settings
from service.tokens.keys import KeyVault, SigningKey
from service.tokens.secretbox import SecretBox
from tests.helpers import RegisteredClient, Rotor, claims_of, client_token, unb64u

INACTIVE = {"active": False}
ISSUER = "http://localhost:8000"
# Order of the P-256 group: (r, n - s) is the other valid ECDSA signature of a message.
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

Signer = Callable[[bytes], bytes]
Answer = tuple[int, Any, str | None, str | None]


# --------------------------------------------------------------------------- token building


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict[str, Any] | bytes) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return b64u(raw)


def compact(header: dict[str, Any] | bytes, claims: dict[str, Any] | bytes, sign: Signer) -> str:
    signing_input = f"{segment(header)}.{segment(claims)}"
    return f"{signing_input}.{b64u(sign(signing_input.encode()))}"


def es256(private_key: ec.EllipticCurvePrivateKey) -> Signer:
    """JWS ES256 (RFC 7518 3.4): the raw 64-byte r || s, not DER."""

    def sign(message: bytes) -> bytes:
        r, s = decode_dss_signature(private_key.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    return sign


def hs(secret: bytes, digest: Any) -> Signer:
    return lambda message: hmac.new(secret, message, digest).digest()


def no_signature(_: bytes) -> bytes:
    return b""


def attacker_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64u(numbers.x.to_bytes(32, "big")),
        "y": b64u(numbers.y.to_bytes(32, "big")),
    }


def self_signed_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rotor.attacker.test")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def answer_of(response: httpx.Response) -> Answer:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return (
        response.status_code,
        body,
        response.headers.get("cache-control"),
        response.headers.get("pragma"),
    )


INACTIVE_ANSWER: Answer = (200, INACTIVE, "no-store", "no-cache")


# --------------------------------------------------------------------------- the setting


@dataclass
class Target:
    """A live password login, a gateway allowed to introspect, Rotor's real active key."""

    rotor: Rotor
    client: RegisteredClient
    gateway: RegisteredClient
    access_token: str
    claims: dict[str, Any]
    key: SigningKey

    @property
    def header(self) -> dict[str, Any]:
        return {"alg": self.key.alg, "typ": "at+jwt", "kid": self.key.kid}

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        private = self.key.key.private_key
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        return private

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    def mint(
        self,
        *,
        header: dict[str, Any] | bytes | None = None,
        claims: dict[str, Any] | bytes | None = None,
    ) -> str:
        """A token signed with the real active key: its signature is valid."""
        return compact(
            self.header if header is None else header,
            self.claims if claims is None else claims,
            es256(self.private_key),
        )

    def with_claims(self, **changes: Any) -> dict[str, Any]:
        return {**self.claims, **changes}

    def without_claim(self, name: str) -> dict[str, Any]:
        return {k: v for k, v in self.claims.items() if k != name}

    async def introspect(self, token: str) -> httpx.Response:
        return await self.rotor.http.post(
            "/introspect", data={"token": token}, headers=self.gateway.auth
        )

    async def assert_all_inactive(self, tokens: dict[str, str]) -> None:
        answers = {name: answer_of(await self.introspect(token)) for name, token in tokens.items()}
        assert answers == dict.fromkeys(tokens, INACTIVE_ANSWER)


async def load_key(rotor: Rotor, state: str) -> SigningKey:
    """The signing key in `state` ('active' or 'next'), private part included."""
    box = SecretBox.for_purpose(rotor.settings.secret, b"signing-keys")
    ring = await KeyVault(box).load(rotor.db, rotor.settings.access_token_ttl)
    kid = await rotor.db.fetchval("SELECT kid FROM signing_keys WHERE state = $1", state)
    assert isinstance(kid, str), state
    return ring.verifying[kid]


async def load_active_key(rotor: Rotor) -> SigningKey:
    return await load_key(rotor, "active")


async def arrange(rotor: Rotor) -> Target:
    client = await rotor.client(name="app")
    gateway = await rotor.client(grants=[], scopes=[], introspect=True, name="gateway")
    await rotor.user()
    response = await rotor.login(client)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    return Target(rotor, client, gateway, token, claims_of(token), await load_active_key(rotor))


@pytest.fixture
async def target(rotor: Rotor) -> Target:
    return await arrange(rotor)


class Recorder:
    """A local HTTP server that records every request (and would serve the attacker's keys)."""

    def __init__(self, body: bytes) -> None:
        self.hits: list[str] = []
        hits, served = self.hits, body

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(served)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def attacker() -> ec.EllipticCurvePrivateKey:
    return attacker_key()


@pytest.fixture
def recorder(attacker: ec.EllipticCurvePrivateKey) -> Iterator[Recorder]:
    jwks = {"keys": [{**public_jwk(attacker), "kid": "attacker", "alg": "ES256", "use": "sig"}]}
    with Recorder(json.dumps(jwks).encode()) as server:
        yield server


# --------------------------------------------------------------------------- controls


async def test_control_reminted_token_is_active(target: Target) -> None:
    """The minting used below is sound: unchanged claims, real key -> active."""
    response = await target.introspect(target.mint())

    assert response.status_code == 200
    assert response.json()["active"] is True
    assert response.json()["jti"] == target.claims["jti"]


async def test_control_recorder_sees_a_fetch(recorder: Recorder) -> None:
    """The recorder that proves nothing is fetched does see a fetch."""
    response = httpx.get(recorder.url + "/jwks.json")

    assert response.status_code == 200
    assert recorder.hits == ["/jwks.json"]


# --------------------------------------------------------------------------- algorithms


async def test_alg_none_in_any_casing(target: Target) -> None:
    tokens = {
        alg: compact({**target.header, "alg": alg}, target.claims, no_signature)
        for alg in ("none", "None", "NONE", "nOnE")
    }
    tokens["none-bare-header"] = compact({"alg": "none"}, target.claims, no_signature)
    tokens["none-real-signature"] = target.mint(header={**target.header, "alg": "none"})

    await target.assert_all_inactive(tokens)


async def test_hs256_keyed_with_the_public_key(target: Target) -> None:
    """Key confusion: a verifier that let the token choose HMAC would use the
    public key, which anyone has, as the shared secret."""
    jwks = (await target.rotor.http.get("/.well-known/jwks.json")).content
    published = next(key for key in json.loads(jwks)["keys"] if key["kid"] == target.key.kid)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    secrets = {
        "jwk-json": json.dumps(published).encode(),
        "jwk-json-compact": json.dumps(published, separators=(",", ":")).encode(),
        "jwks-document": jwks,
        "pem": target.public_key.public_bytes(serialization.Encoding.PEM, spki),
        "der": target.public_key.public_bytes(serialization.Encoding.DER, spki),
        "x-coordinate": unb64u(published["x"]),
    }
    header = {**target.header, "alg": "HS256"}

    await target.assert_all_inactive(
        {
            name: compact(header, target.claims, hs(secret, hashlib.sha256))
            for name, secret in secrets.items()
        }
    )


async def test_algorithm_outside_the_allow_list_or_not_the_keys(target: Target) -> None:
    pem = target.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tokens = {
        # Signed with the real ES256 key but labelled otherwise.
        alg: target.mint(header={**target.header, "alg": alg})
        for alg in ("ES384", "ES512", "RS256", "PS256", "EdDSA", "es256", "ES256 ", "")
    }
    tokens["HS512-with-pem"] = compact(
        {**target.header, "alg": "HS512"}, target.claims, hs(pem, hashlib.sha512)
    )
    tokens["alg-missing"] = target.mint(header={"typ": "at+jwt", "kid": target.key.kid})
    tokens["alg-list"] = target.mint(header={**target.header, "alg": ["ES256"]})

    await target.assert_all_inactive(tokens)


# --------------------------------------------------------------------------- header keys


async def test_embedded_jwk_of_the_attacker(
    target: Target, attacker: ec.EllipticCurvePrivateKey
) -> None:
    jwk = public_jwk(attacker)
    headers = {
        "jwk-with-active-kid": {**target.header, "jwk": jwk},
        "jwk-without-kid": {"alg": "ES256", "typ": "at+jwt", "jwk": jwk},
        "jwk-own-kid": {**target.header, "kid": "attacker", "jwk": {**jwk, "kid": "attacker"}},
    }

    await target.assert_all_inactive(
        {name: compact(header, target.claims, es256(attacker)) for name, header in headers.items()}
    )


async def test_key_urls_are_never_fetched(
    target: Target, attacker: ec.EllipticCurvePrivateKey, recorder: Recorder
) -> None:
    url = recorder.url + "/jwks.json"
    headers: dict[str, dict[str, Any]] = {}
    for member in ("jku", "x5u"):
        headers[f"{member}-with-active-kid"] = {**target.header, member: url}
        headers[f"{member}-with-attackers-kid"] = {**target.header, "kid": "attacker", member: url}
        headers[f"{member}-without-kid"] = {"alg": "ES256", "typ": "at+jwt", member: url}

    await target.assert_all_inactive(
        {name: compact(header, target.claims, es256(attacker)) for name, header in headers.items()}
    )
    assert recorder.hits == []


async def test_embedded_x5c_of_the_attacker(
    target: Target, attacker: ec.EllipticCurvePrivateKey, recorder: Recorder
) -> None:
    der = self_signed_certificate(attacker).public_bytes(serialization.Encoding.DER)
    chain = [base64.b64encode(der).decode()]
    headers = {
        "x5c-with-active-kid": {**target.header, "x5c": chain},
        "x5c-without-kid": {"alg": "ES256", "typ": "at+jwt", "x5c": chain},
        "x5c-and-x5u": {**target.header, "x5c": chain, "x5u": recorder.url + "/cert.pem"},
    }

    await target.assert_all_inactive(
        {name: compact(header, target.claims, es256(attacker)) for name, header in headers.items()}
    )
    assert recorder.hits == []


async def test_unknown_crit_header(target: Target) -> None:
    headers = {
        "crit-extension": {
            **target.header,
            "crit": ["urn:attacker:ignore-exp"],
            "urn:attacker:ignore-exp": True,
        },
        "crit-b64-false": {**target.header, "crit": ["b64"], "b64": False},
        "crit-empty": {**target.header, "crit": []},
    }

    await target.assert_all_inactive(
        {name: target.mint(header=header) for name, header in headers.items()}
    )


# --------------------------------------------------------------------------- kid


async def test_hostile_kid(target: Target) -> None:
    """Signed with the real key; only the kid is wrong."""
    next_kid = await target.rotor.db.fetchval("SELECT kid FROM signing_keys WHERE state = 'next'")
    assert isinstance(next_kid, str)
    kids: dict[str, Any] = {
        "path": "../../etc/passwd",
        "sql": "' OR 1=1 --",
        "empty": "",
        "star": "*",
        "ten-thousand-chars": "k" * 10_000,
        # A published kid on a signature its key did not make (the active key's):
        # the signature check refuses it. The next key's own signature is
        # test_signed_by_the_next_key's.
        "next-kid-on-the-active-keys-signature": next_kid,
        "active-kid-upper": target.key.kid.upper(),
        "active-kid-padded": target.key.kid + " ",
        "int-0": 0,
        "int-1": 1,
        "null": None,
        "list": [target.key.kid],
    }
    tokens = {name: target.mint(header={**target.header, "kid": kid}) for name, kid in kids.items()}
    tokens["missing"] = target.mint(header={"alg": "ES256", "typ": "at+jwt"})

    await target.assert_all_inactive(tokens)


async def test_signed_by_the_next_key(target: Target) -> None:
    """CONTRACT 2: the next key is published but signs nothing yet. A token it
    did sign (a leaked next key) carries a valid signature under a published
    kid, so only the key's state refuses it: at /introspect and at the admin
    guard, until a rotation makes that key the active one."""
    rotor = target.rotor
    upcoming = await load_key(rotor, "next")
    assert upcoming.kid != target.key.kid
    private = upcoming.key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    header = {"alg": upcoming.alg, "typ": "at+jwt", "kid": upcoming.kid}
    ops = await rotor.client(grants=["client_credentials"], scopes=[], admin=True, name="ops")
    ops_token = await client_token(rotor, ops)
    user_token = compact(header, target.claims, es256(private))
    admin_token = compact(header, claims_of(ops_token), es256(private))
    # A gateway that checks only the JWKS would accept both.
    for token in (user_token, admin_token):
        assert (await rotor.verify(token)).header["kid"] == upcoming.kid

    await target.assert_all_inactive({"user-token": user_token, "admin-token": admin_token})
    refused = await rotor.http.get(
        "/admin/keys", headers={"Authorization": f"Bearer {admin_token}"}
    )
    assert (refused.status_code, refused.json(), refused.headers["www-authenticate"]) == (
        401,
        {"error": "invalid_token", "error_description": "the access token is revoked"},
        'Bearer realm="rotor", error="invalid_token"',
    )

    # The control: once a rotation makes that key active, the same tokens are good.
    rotated = await rotor.http.post(
        "/admin/keys/rotate",
        json={"force": True},
        headers={"Authorization": f"Bearer {ops_token}"},
    )
    assert (rotated.status_code, rotated.json()["kid"]) == (200, upcoming.kid)
    answer = await target.introspect(user_token)
    assert (answer.status_code, answer.json()["active"], answer.json()["jti"]) == (
        200,
        True,
        target.claims["jti"],
    )
    listed = await rotor.http.get("/admin/keys", headers={"Authorization": f"Bearer {admin_token}"})
    assert listed.status_code == 200, listed.text


async def test_kid_of_a_revoked_key(target: Target) -> None:
    token = target.mint()
    assert (await target.introspect(token)).json()["active"] is True
    await target.rotor.db.execute(
        "UPDATE signing_keys SET state = 'revoked', revoked_at = now() WHERE kid = $1",
        target.key.kid,
    )

    await target.assert_all_inactive({"revoked-key": token})


# --------------------------------------------------------------------------- typ


async def test_typ_other_than_at_jwt(target: Target) -> None:
    typs: dict[str, Any] = {
        "JWT": "JWT",
        "jwt": "jwt",
        "application/jwt": "application/jwt",
        "at+jwt-trailing-space": "at+jwt ",
        "at+jws": "at+jws",
        "dpop+jwt": "dpop+jwt",
        "null": None,
        "int": 1,
        "list": ["at+jwt"],
    }
    tokens = {name: target.mint(header={**target.header, "typ": typ}) for name, typ in typs.items()}
    tokens["missing"] = target.mint(header={"alg": "ES256", "kid": target.key.kid})

    await target.assert_all_inactive(tokens)


# --------------------------------------------------------------------------- iss and aud


async def test_iss_not_exactly_this_issuer(target: Target) -> None:
    assert target.rotor.settings.issuer == ISSUER
    issuers: dict[str, Any] = {
        "prefix": "http://localhost:800",
        "host-only": "http://localhost",
        "substring": "localhost:8000",
        "trailing-slash": ISSUER + "/",
        "longer-port": ISSUER + "0",
        "upper-case": ISSUER.upper(),
        "host-case": "http://Localhost:8000",
        "https": "https://localhost:8000",
        "leading-space": " " + ISSUER,
        "suffix-domain": ISSUER + ".attacker.test",
        "list": [ISSUER],
        "null": None,
        "empty": "",
    }
    tokens = {
        name: target.mint(claims=target.with_claims(iss=iss)) for name, iss in issuers.items()
    }
    tokens["missing"] = target.mint(claims=target.without_claim("iss"))

    await target.assert_all_inactive(tokens)


async def test_aud_not_exactly_this_audience(target: Target) -> None:
    assert target.rotor.settings.audience == (ISSUER,)
    audiences: dict[str, Any] = {
        "prefix": "http://localhost:800",
        "trailing-slash": ISSUER + "/",
        "upper-case": ISSUER.upper(),
        "other": "https://api.attacker.test",
        "list-for-a-string": [ISSUER],
        "list-with-another-after": [ISSUER, "https://api.attacker.test"],
        "list-with-another-before": ["https://api.attacker.test", ISSUER],
        "empty-list": [],
        "null": None,
        "empty": "",
    }
    tokens = {
        name: target.mint(claims=target.with_claims(aud=aud)) for name, aud in audiences.items()
    }
    tokens["missing"] = target.mint(claims=target.without_claim("aud"))

    await target.assert_all_inactive(tokens)


async def test_several_audiences_must_match_as_issued(
    settings: Settings, db: asyncpg.Connection
) -> None:
    audiences = ["https://api.one.test", "https://api.two.test"]
    changed = settings.with_overrides(audience=tuple(audiences))
    async with AsyncTestClient(create_app(changed)) as http:
        target = await arrange(Rotor(http, changed, db))
        assert target.claims["aud"] == audiences
        control = await target.introspect(target.mint())
        assert (control.json()["active"], control.json()["aud"]) == (True, audiences)

        variants: dict[str, Any] = {
            "reversed": list(reversed(audiences)),
            "first-only": audiences[:1],
            "first-as-string": audiences[0],
            "with-another": [*audiences, "https://api.attacker.test"],
        }
        await target.assert_all_inactive(
            {
                name: target.mint(claims=target.with_claims(aud=aud))
                for name, aud in variants.items()
            }
        )


# --------------------------------------------------------------------------- times and claims


async def test_expiry(target: Target) -> None:
    now = int(time.time())
    tokens = {
        # CONTRACT 2: no leeway; expired from its exp second on.
        "exp-equals-now": target.mint(
            claims=target.with_claims(exp=now, iat=now - 300, nbf=now - 300)
        ),
        "exp-1s-ago": target.mint(claims=target.with_claims(exp=now - 1)),
        "exp-missing": target.mint(claims=target.without_claim("exp")),
    }
    not_numbers: dict[str, Any] = {
        "exp-string": "9999999999",
        "exp-infinity": 1e400,  # serialised as Infinity
        "exp-negative": -1,
        "exp-true": True,
        "exp-null": None,
    }
    for name, exp in not_numbers.items():
        tokens[name] = target.mint(claims=json.dumps(target.with_claims(exp=exp)).encode())
    nan = json.dumps(target.with_claims(exp=0)).replace('"exp": 0', '"exp": NaN')
    assert "NaN" in nan
    tokens["exp-nan"] = target.mint(claims=nan.encode())

    await target.assert_all_inactive(tokens)


async def test_not_yet_valid(target: Target) -> None:
    later = int(time.time()) + 60
    await target.assert_all_inactive(
        {
            "nbf-in-the-future": target.mint(claims=target.with_claims(nbf=later)),
            "iat-in-the-future": target.mint(claims=target.with_claims(iat=later)),
        }
    )


async def test_missing_or_malformed_claims(target: Target) -> None:
    tokens = {
        f"{name}-missing": target.mint(claims=target.without_claim(name))
        for name in ("sub", "iat", "jti", "client_id")
    }
    malformed: dict[str, tuple[str, Any]] = {
        "jti-not-uuid": ("jti", "not-a-uuid"),
        "jti-int": ("jti", 1),
        "sid-not-uuid": ("sid", "not-a-uuid"),
        "sid-unknown-family": ("sid", str(uuid.UUID(int=1))),
        "scope-list": ("scope", ["read", "write"]),
        "client_id-int": ("client_id", 1),
        "sub-int": ("sub", 1),
    }
    for name, (claim, value) in malformed.items():
        tokens[name] = target.mint(claims=target.with_claims(**{claim: value}))

    await target.assert_all_inactive(tokens)


async def test_header_or_payload_that_is_not_a_json_object(target: Target) -> None:
    tokens: dict[str, str] = {}
    for raw in (b"[]", b'"text"', b"null", b"{", b"\xff\xfe", b""):
        tokens[f"header={raw!r}"] = target.mint(header=raw)
        tokens[f"payload={raw!r}"] = target.mint(claims=raw)

    await target.assert_all_inactive(tokens)


def nested_header(kid: str, depth: int) -> bytes:
    opening = json.dumps({"alg": "ES256", "typ": "at+jwt", "kid": kid})[:-1]
    return f'{opening}, "x": {"[" * depth}{"]" * depth}}}'.encode()


async def test_moderately_nested_header(target: Target) -> None:
    await target.assert_all_inactive(
        {"depth-500": compact(nested_header(target.key.kid, 500), target.claims, no_signature)}
    )


async def test_deeply_nested_header(target: Target) -> None:
    await target.assert_all_inactive(
        {
            f"depth-{depth}": compact(
                nested_header(target.key.kid, depth), target.claims, no_signature
            )
            for depth in (1000, 2000)
        }
    )


# --------------------------------------------------------------------------- signatures


async def test_tampered_signature_or_payload(target: Target) -> None:
    head, body, signature = target.access_token.split(".")
    tokens: dict[str, str] = {}
    for byte in (0, 31, 32, 63):
        raw = bytearray(unb64u(signature))
        raw[byte] ^= 0x01
        tokens[f"bit-flipped-in-byte-{byte}"] = f"{head}.{body}.{b64u(bytes(raw))}"
    tokens["signature-empty"] = f"{head}.{body}."
    tokens["signature-truncated"] = f"{head}.{body}.{signature[:-4]}"
    tokens["signature-doubled"] = f"{head}.{body}.{signature}{signature}"
    tokens["signature-der"] = f"{head}.{body}." + b64u(
        target.private_key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    )
    widened = segment(target.with_claims(scope="read write admin"))
    tokens["payload-widened"] = f"{head}.{widened}.{signature}"
    tokens["other-issuers-key-same-kid"] = compact(
        target.header, target.claims, es256(attacker_key())
    )

    await target.assert_all_inactive(tokens)


async def test_malleated_signature_does_not_escape_a_revocation(target: Target) -> None:
    """ECDSA's (r, n - s) verifies too: revocation must hold by jti, not by token string."""
    head, body, signature = target.access_token.split(".")
    raw = unb64u(signature)
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    twin_signature = r.to_bytes(32, "big") + (P256_ORDER - s).to_bytes(32, "big")
    twin = f"{head}.{body}.{b64u(twin_signature)}"
    # The twin is a valid signature of the same token (raises if not).
    target.public_key.verify(
        encode_dss_signature(r, P256_ORDER - s),
        f"{head}.{body}".encode(),
        ec.ECDSA(hashes.SHA256()),
    )

    revoked = await target.rotor.http.post(
        "/revoke", data={"token": target.access_token}, headers=target.client.auth
    )
    assert revoked.status_code == 200, revoked.text

    await target.assert_all_inactive({"original": target.access_token, "twin": twin})


# --------------------------------------------------------------------------- size and shape


async def test_oversized_token_within_the_body_limit(target: Target) -> None:
    """About 60 KB: fits the 64 KiB body limit, far larger than any Rotor token."""
    token = target.mint(claims=target.with_claims(pad="p" * 45_000))
    assert 50_000 < len(token) < 64 * 1024 - 100

    await target.assert_all_inactive({"60-kb": token})


async def test_200_kb_token_is_refused_as_an_oversized_body(target: Target) -> None:
    token = target.mint(claims=target.with_claims(pad="p" * 150_000))
    assert len(token) > 200_000

    response = await target.introspect(token)

    assert response.status_code == 413, response.text
    assert set(response.json()) == {"error", "error_description"}
    assert response.json()["error"] == "invalid_request"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


async def test_other_token_shapes(target: Target) -> None:
    head, body, signature = target.access_token.split(".")
    jwe_header = segment({"alg": "dir", "enc": "A256GCM", "typ": "at+jwt", "kid": target.key.kid})
    iv, ciphertext, tag = b64u(b"i" * 12), b64u(b"c" * 32), b64u(b"t" * 16)
    digest = await target.rotor.db.fetchval("SELECT token_hash FROM refresh_tokens")
    await target.assert_all_inactive(
        {
            "jwe-five-segments": f"{jwe_header}..{iv}.{ciphertext}.{tag}",
            "json-serialization": json.dumps(
                {"protected": head, "payload": body, "signature": signature}
            ),
            "bearer-prefix": "Bearer " + target.access_token,
            "four-segments": f"{head}.{body}.{signature}.{signature}",
            # What a database dump holds (a refresh token's SHA-256) is not a token.
            "refresh-hash-b64url": b64u(digest),
            "refresh-hash-hex": digest.hex(),
        }
    )
