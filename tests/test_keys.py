"""Signing keys (CONTRACT section 2): first start makes one active and one next key,
private keys are encrypted at rest under ROTOR_SECRET, the database enforces one
active key, concurrent first starts agree, and the active key is what signs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from typing import Any

import asyncpg
import pytest
from litestar import Litestar

from service.app import create_app
from service.config import Settings
from service.tokens.secretbox import BoxOpenError, SecretBox
from tests.helpers import Rotor

PURPOSE = b"signing-keys"


async def key_rows(db: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "SELECT kid, alg, state, public_jwk::text AS public_jwk, private_box FROM signing_keys "
        "ORDER BY created_at, kid"
    )
    return [{**dict(row), "public_jwk": json.loads(row["public_jwk"])} for row in rows]


async def states(db: asyncpg.Connection) -> dict[str, int]:
    rows = await db.fetch("SELECT state, count(*) AS n FROM signing_keys GROUP BY state")
    return {row["state"]: row["n"] for row in rows}


def token_header(token: str) -> dict[str, Any]:
    segment = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


class Lifespan:
    """Drives an ASGI app's lifespan in the current event loop, so that several apps can
    start truly concurrently (the test client starts one at a time)."""

    def __init__(self, app: Litestar) -> None:
        self._app = app
        self._receive: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.started = False

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        await self._receive.put({"type": "lifespan.startup"})
        self._task = asyncio.create_task(self._app(scope, self._receive.get, self._sent.put))
        message = await self._next_message()
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(message.get("message", message["type"]))
        self.started = True

    async def _next_message(self) -> dict[str, Any]:
        """The app's next lifespan message, or its exit if it ends without one."""
        assert self._task is not None
        getter = asyncio.create_task(self._sent.get())
        await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED, timeout=60)
        if getter.done():
            return getter.result()
        getter.cancel()
        return {"type": "exited"}

    async def stop(self) -> None:
        if self._task is None:
            return
        if self.started:
            await self._receive.put({"type": "lifespan.shutdown"})
            await self._next_message()
        with contextlib.suppress(Exception):
            await self._task


# --- first start ---------------------------------------------------------------------------


async def test_first_start_makes_one_active_and_one_next_key(
    rotor: Rotor, db: asyncpg.Connection
) -> None:
    rows = await key_rows(db)
    assert sorted((r["state"], r["alg"], r["public_jwk"]["kty"]) for r in rows) == [
        ("active", "ES256", "EC"),
        ("next", "ES256", "EC"),
    ]


async def test_restart_keeps_the_same_keys(settings: Settings, db: asyncpg.Connection) -> None:
    first = Lifespan(create_app(settings))
    await first.start()
    await first.stop()
    before = [(r["kid"], r["state"]) for r in await key_rows(db)]
    second = Lifespan(create_app(settings))
    await second.start()
    await second.stop()
    after = [(r["kid"], r["state"]) for r in await key_rows(db)]
    assert (len(before), after) == (2, before)


async def test_concurrent_first_starts_make_exactly_one_active_and_one_next_key(
    settings: Settings, db: asyncpg.Connection
) -> None:
    apps = [Lifespan(create_app(settings)) for _ in range(4)]
    try:
        results = await asyncio.gather(*(app.start() for app in apps), return_exceptions=True)
    finally:
        for app in apps:
            await app.stop()
    assert ([repr(r) for r in results if r is not None], await states(db)) == (
        [],
        {"active": 1, "next": 1},
    )


# --- encryption at rest --------------------------------------------------------------------


async def test_public_jwk_has_no_private_member(rotor: Rotor, db: asyncpg.Connection) -> None:
    rows = await key_rows(db)
    assert [sorted(r["public_jwk"]) for r in rows] == [
        ["alg", "crv", "kid", "kty", "use", "x", "y"],
        ["alg", "crv", "kid", "kty", "use", "x", "y"],
    ]


async def test_private_box_holds_no_plain_jwk(rotor: Rotor, db: asyncpg.Connection) -> None:
    rows = await key_rows(db)
    leaks = [
        needle
        for row in rows
        for needle in (
            b'"d"',
            b'"kty"',
            row["public_jwk"]["x"].encode(),
            row["public_jwk"]["y"].encode(),
        )
        if needle in row["private_box"]
    ]
    assert (len(rows), leaks) == (2, [])


async def test_private_box_opens_with_rotor_secret(rotor: Rotor, db: asyncpg.Connection) -> None:
    """Control for the tests around it: the right secret gives the private JWK whose
    public half is the published one."""
    box = SecretBox.for_purpose(rotor.settings.secret, PURPOSE)
    opened = []
    for row in await key_rows(db):
        private = json.loads(box.open(row["private_box"], row["kid"].encode()))
        opened.append(("d" in private, private["x"] == row["public_jwk"]["x"]))
    assert opened == [(True, True), (True, True)]


async def test_private_box_does_not_open_with_another_secret(
    rotor: Rotor, db: asyncpg.Connection
) -> None:
    other = SecretBox.for_purpose(b"another-secret-of-at-least-32-bytes!!!!!", PURPOSE)
    row = (await key_rows(db))[0]
    with pytest.raises(BoxOpenError):
        other.open(row["private_box"], row["kid"].encode())


async def test_private_box_is_bound_to_its_kid(rotor: Rotor, db: asyncpg.Connection) -> None:
    """Swapping boxes between rows does not work: the kid is the associated data."""
    box = SecretBox.for_purpose(rotor.settings.secret, PURPOSE)
    first, second = await key_rows(db)
    with pytest.raises(BoxOpenError):
        box.open(first["private_box"], second["kid"].encode())


async def test_start_with_another_secret_refuses_the_stored_keys(
    settings: Settings, db: asyncpg.Connection
) -> None:
    first = Lifespan(create_app(settings))
    await first.start()
    await first.stop()
    other = Lifespan(
        create_app(settings.with_overrides(secret=b"another-secret-of-at-least-32-bytes!!!!!"))
    )
    try:
        with pytest.raises(RuntimeError):
            await other.start()
    finally:
        await other.stop()


# --- one active key, enforced by the database ----------------------------------------------


async def _insert_key(db: asyncpg.Connection, state: str) -> None:
    kid = str(uuid.uuid4())
    await db.execute(
        "INSERT INTO signing_keys (kid, alg, state, public_jwk, private_box) "
        "VALUES ($1, 'ES256', $2, $3::jsonb, $4)",
        kid,
        state,
        json.dumps({"kty": "EC", "kid": kid}),
        b"\x00" * 40,
    )


@pytest.mark.parametrize("state", ["active", "next"])
async def test_database_refuses_a_second_key_in_a_unique_state(
    db: asyncpg.Connection, state: str
) -> None:
    await _insert_key(db, state)
    with pytest.raises(asyncpg.UniqueViolationError):
        await _insert_key(db, state)


async def test_database_accepts_one_key_per_unique_state_and_many_retired(
    db: asyncpg.Connection,
) -> None:
    """Control for the test above: the refusal is the partial unique index, not the row."""
    for state in ("active", "next", "retired", "retired"):
        await _insert_key(db, state)
    assert await states(db) == {"active": 1, "next": 1, "retired": 2}


# --- the active key signs ------------------------------------------------------------------


async def test_access_token_is_signed_by_the_active_key(
    rotor: Rotor, db: asyncpg.Connection
) -> None:
    client = await rotor.client(grants=["client_credentials"])
    response = await rotor.token({"grant_type": "client_credentials"}, client.auth)
    assert response.status_code == 200, response.text
    header = token_header(response.json()["access_token"])
    active = await db.fetchval("SELECT kid FROM signing_keys WHERE state = 'active'")
    assert (header["kid"], header["alg"], header["typ"]) == (active, "ES256", "at+jwt")


# --- SecretBox -----------------------------------------------------------------------------


SECRET = b"k" * 32


def test_secretbox_round_trip() -> None:
    box = SecretBox.for_purpose(SECRET, b"test")
    assert box.open(box.seal(b"plain text", b"ad"), b"ad") == b"plain text"


def test_secretbox_seals_differently_each_time() -> None:
    box = SecretBox.for_purpose(SECRET, b"test")
    assert box.seal(b"plain text", b"ad") != box.seal(b"plain text", b"ad")


def test_secretbox_ciphertext_does_not_contain_the_plaintext() -> None:
    box = SecretBox.for_purpose(SECRET, b"test")
    assert b"plain text" not in box.seal(b"plain text", b"ad")


@pytest.mark.parametrize("position", [0, 11, 12, -17, -1])
def test_secretbox_tampered_ciphertext_is_refused(position: int) -> None:
    """Nonce (0, 11), ciphertext (12), tag (-17, -1): any flipped bit is refused."""
    box = SecretBox.for_purpose(SECRET, b"test")
    sealed = bytearray(box.seal(b"plain text", b"ad"))
    sealed[position] ^= 0x01
    with pytest.raises(BoxOpenError):
        box.open(bytes(sealed), b"ad")


def test_secretbox_wrong_associated_data_is_refused() -> None:
    box = SecretBox.for_purpose(SECRET, b"test")
    with pytest.raises(BoxOpenError):
        box.open(box.seal(b"plain text", b"ad"), b"other")


def test_secretbox_other_purpose_is_refused() -> None:
    sealed = SecretBox.for_purpose(SECRET, b"test").seal(b"plain text", b"ad")
    with pytest.raises(BoxOpenError):
        SecretBox.for_purpose(SECRET, b"other").open(sealed, b"ad")


@pytest.mark.parametrize("length", [0, 12, 28])
def test_secretbox_truncated_box_is_refused(length: int) -> None:
    box = SecretBox.for_purpose(SECRET, b"test")
    with pytest.raises(BoxOpenError):
        box.open(box.seal(b"plain text", b"ad")[:length], b"ad")
