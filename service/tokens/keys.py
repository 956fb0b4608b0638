"""Signing keys: generation, encryption at rest, the in-process key ring.

States (CONTRACT section 2): next (published, not signing) -> active (signs)
-> retired (published until every token it signed has expired) -> removed;
or revoked at once. Exactly one key is active; the partial unique indexes on
`signing_keys` make that a fact of the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec
from joserfc.jwk import ECKey, OKPKey, RSAKey

from service.db import keys, locks
from service.db.pool import Connection, Database, DatabaseUnavailable
from service.tokens.secretbox import SecretBox

log = logging.getLogger("rotor.keys")

AnyKey = ECKey | OKPKey | RSAKey


def generate_key(alg: str) -> AnyKey:
    if alg == "ES256":
        return ECKey.generate_key("P-256", private=True)
    if alg == "EdDSA":
        return OKPKey.generate_key("Ed25519", private=True)
    if alg == "RS256":
        return RSAKey.generate_key(2048, private=True)
    raise ValueError(f"unsupported signing algorithm {alg!r}")


def import_key(jwk: dict[str, Any]) -> AnyKey:
    kty = jwk.get("kty")
    if kty == "EC":
        return ECKey.import_key(jwk)
    if kty == "OKP":
        return OKPKey.import_key(jwk)
    if kty == "RSA":
        return RSAKey.import_key(jwk)
    raise ValueError(f"unsupported key type {kty!r}")


def public_jwk(key: AnyKey, kid: str, alg: str) -> dict[str, Any]:
    members = dict(key.as_dict(private=False))
    members.update({"kid": kid, "alg": alg, "use": "sig"})
    return members


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: str
    key: AnyKey


@dataclass(frozen=True, slots=True)
class KeyRingState:
    active: SigningKey
    # Keys whose signatures are checked: every published key; whether a key may
    # vouch for a token right now (active or retired) is read from the database.
    verifying: dict[str, SigningKey]
    # The JWKS document, encoded once per change.
    jwks: bytes
    fingerprint: tuple[tuple[str, str], ...]


class KeyVault:
    """Signing keys at rest: made and sealed with ROTOR_SECRET on their way into
    the store (service/db/keys.py), opened on their way out."""

    def __init__(self, box: SecretBox) -> None:
        self._box = box
        # A kid's key material never changes: opened and imported once, not at
        # every reload (an import validates the key, the costly part).
        self._opened: dict[str, SigningKey] = {}

    async def create(self, connection: Connection, alg: str, state: str) -> str:
        key = generate_key(alg)
        kid = str(uuid.uuid4())
        private = msgspec.json.encode(key.as_dict(private=True))
        await keys.insert(
            connection,
            kid=kid,
            alg=alg,
            state=state,
            public_jwk=public_jwk(key, kid, alg),
            private_box=self._box.seal(private, kid.encode()),
        )
        return kid

    async def ensure(self, connection: Connection, alg: str) -> None:
        """First start: one active and one next key (idempotent, any number of
        processes). In the caller's transaction."""
        await locks.lock_keys(connection)
        states = await keys.signing_states(connection)
        for state in ("active", "next"):
            if state not in states:
                await self.create(connection, alg, state)
                log.info("signing key created", extra={"state": state, "alg": alg})

    async def load(self, connection: Connection, access_ttl: int) -> KeyRingState:
        rows = await keys.published(connection, access_ttl)
        active: SigningKey | None = None
        verifying: dict[str, SigningKey] = {}
        for row in rows:
            # Next keys verify too: another process may have promoted one already;
            # whether a key may sign right now is read from the database per token.
            key = self._opened.get(row["kid"]) or self._open(row)
            verifying[key.kid] = key
            if row["state"] == "active":
                active = key
        if active is None:
            raise RuntimeError("no active signing key; run `rotor migrate` and start the service")
        jwks = msgspec.json.encode({"keys": [row["public_jwk"] for row in rows]})
        fingerprint = tuple((row["kid"], row["state"]) for row in rows)
        self._opened = dict(verifying)  # keys that left the ring are forgotten
        return KeyRingState(active, verifying, jwks, fingerprint)

    def _open(self, row: Any) -> SigningKey:
        private = self._box.open(row["private_box"], row["kid"].encode())
        return SigningKey(row["kid"], row["alg"], import_key(msgspec.json.decode(private)))


class KeyRing:
    """The keys of this process, reloaded from the database every few seconds,
    so a rotation made by any process or the CLI is seen within 5 seconds."""

    def __init__(
        self, store: KeyVault, database: Database, *, access_ttl: int, interval: float
    ) -> None:
        self._store = store
        self._database = database
        self._access_ttl = access_ttl
        self._interval = interval
        self._state: KeyRingState | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def state(self) -> KeyRingState:
        if self._state is None:
            raise DatabaseUnavailable("signing keys not loaded")
        return self._state

    async def reload(self) -> None:
        async with self._database.connection() as connection:
            state = await self._store.load(connection, self._access_ttl)
        if self._state is None or state.fingerprint != self._state.fingerprint:
            self._state = state

    async def start(self, alg: str) -> None:
        """Make the first keys if there are none, load them, keep them fresh."""
        async with self._database.transaction() as connection:
            await self._store.ensure(connection, alg)
        await self.reload()
        self._task = asyncio.create_task(self._refresh_forever(), name="rotor-key-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.reload()
            except Exception:  # the ring keeps its last keys; the next tick retries
                log.warning("signing keys could not be reloaded", exc_info=True)
