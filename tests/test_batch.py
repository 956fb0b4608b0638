"""Batched look-ups (service/db/batch.py) against the real database, and
introspections answered together: each answer is its own token's."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from service.config import Settings
from service.db.batch import Batcher
from service.db.pool import Connection, Database
from tests.helpers import Rotor, claims_of, client_token, serve_in_loop


@pytest.fixture
async def database(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.database_url, timeout=5, max_size=4)
    await database.open()
    yield database
    await database.close()


class Squares:
    """A load that asks PostgreSQL, and remembers each batch and its backend."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.backends: list[int] = []

    async def __call__(self, connection: Connection, keys: list[int]) -> list[int]:
        self.batches.append(keys)
        self.backends.append(await connection.fetchval("SELECT pg_backend_pid()"))
        rows = await connection.fetch(
            "SELECT i, k * k AS square FROM unnest($1::int[]) WITH ORDINALITY AS q(k, i)", keys
        )
        by_position = {row["i"]: row["square"] for row in rows}
        return [by_position[i] for i in range(1, len(keys) + 1)]


async def test_lookups_of_one_moment_are_one_batch_in_order(database: Database) -> None:
    load = Squares()
    batcher = Batcher(database, load)
    keys = [7, 3, 0, 3, 9, 1, 7, 2]  # the same key twice is asked twice

    answers = await asyncio.gather(*(batcher.get(k) for k in keys))

    assert answers == [k * k for k in keys]
    assert load.batches == [keys]


async def test_lookups_of_different_moments_are_different_batches(database: Database) -> None:
    load = Squares()
    batcher = Batcher(database, load)

    assert await batcher.get(3) == 9
    assert await batcher.get(4) == 16
    assert load.batches == [[3], [4]]


async def test_lookups_made_while_a_batch_runs_go_together_next(database: Database) -> None:
    """At most one statement in flight: what arrives meanwhile waits and goes as
    one batch (group commit), not one statement each."""
    load = Squares()
    slow = Squares()

    async def first_slow(connection: Connection, keys: list[int]) -> list[int]:
        if not slow.batches:
            await connection.execute("SELECT pg_sleep(0.2)")
            return await slow(connection, keys)
        return await load(connection, keys)

    batcher = Batcher(database, first_slow)
    first = asyncio.ensure_future(batcher.get(1))
    await asyncio.sleep(0.05)  # the first batch is in the database now
    later = [asyncio.ensure_future(batcher.get(k)) for k in (2, 3, 4)]
    await asyncio.sleep(0)
    more = [asyncio.ensure_future(batcher.get(k)) for k in (5, 6)]

    assert await asyncio.gather(first, *later, *more) == [1, 4, 9, 16, 25, 36]
    assert slow.batches == [[1]]
    assert load.batches == [[2, 3, 4, 5, 6]]


async def test_a_large_moment_is_split_at_the_batch_size(database: Database) -> None:
    load = Squares()
    batcher = Batcher(database, load, max_size=4)

    answers = await asyncio.gather(*(batcher.get(k) for k in range(10)))

    assert answers == [k * k for k in range(10)]
    assert sorted(len(batch) for batch in load.batches) == [2, 4, 4]


async def test_a_failed_batch_fails_every_request_of_it(database: Database) -> None:
    async def broken(connection: Connection, keys: list[int]) -> list[int]:
        await connection.fetchval("SELECT 1 / 0")
        raise AssertionError("unreachable")

    batcher = Batcher(database, broken)
    results = await asyncio.gather(*(batcher.get(k) for k in range(3)), return_exceptions=True)

    assert [type(result) for result in results] == [asyncpg.DivisionByZeroError] * 3


async def test_a_request_that_gave_up_is_left_out_of_its_batch(database: Database) -> None:
    load = Squares()
    batcher = Batcher(database, load)
    waiting = [asyncio.ensure_future(batcher.get(k)) for k in range(3)]
    await asyncio.sleep(0)  # all three are queued; the batch runs at the next turn
    waiting[1].cancel()

    done = await asyncio.gather(*waiting, return_exceptions=True)

    assert done[0] == 0
    assert isinstance(done[1], asyncio.CancelledError)
    assert done[2] == 4
    assert load.batches == [[0, 2]]


async def test_a_batch_never_runs_on_a_connection_a_request_holds(database: Database) -> None:
    load = Squares()
    batcher = Batcher(database, load)

    async with database.connection() as held:
        held_backend = await held.fetchval("SELECT pg_backend_pid()")
        assert await batcher.get(5) == 25

    assert load.backends[0] != held_backend


async def test_concurrent_introspections_each_get_their_own_answer(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """Forty introspections in flight at once, of tokens in every state: batched
    together, each answer is still the one for its own token."""
    async with serve_in_loop(settings, db) as rotor:
        app = await rotor.client()
        gateway = await rotor.client(grants=[], introspect=True)
        users = [await rotor.user(f"user-{n}") for n in range(4)]
        sessions = [(await rotor.login(app, username=f"user-{n}")).json() for n in range(4)]
        service_token = await client_token(rotor, await rotor.client(grants=["client_credentials"]))
        revoked = sessions[3]["access_token"]
        assert (await revoke(rotor, app, revoked)).status_code == 200
        spent = sessions[2]["refresh_token"]
        rotated = await rotor.http.post("/refresh", json={"refresh_token": spent}, headers=app.auth)
        assert rotated.status_code == 200, rotated.text

        expected: list[tuple[str, dict[str, Any]]] = []
        for n in range(2):
            expected.append((sessions[n]["access_token"], {"active": True, "sub": users[n]}))
            expected.append((sessions[n]["refresh_token"], {"active": True, "sub": users[n]}))
        expected.append((rotated.json()["refresh_token"], {"active": True, "sub": users[2]}))
        expected.append((service_token, {"active": True, "token_type": "access_token"}))
        expected.append((revoked, {"active": False}))
        expected.append((spent, {"active": False}))
        expected.append(("not-a-token", {"active": False}))
        expected.append((sessions[0]["access_token"][:-4] + "AAAA", {"active": False}))
        cases = (expected * 4)[:40]

        answers = await asyncio.gather(
            *(
                rotor.http.post("/introspect", data={"token": token}, headers=gateway.auth)
                for token, _ in cases
            )
        )

    for (token, want), answer in zip(cases, answers, strict=True):
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert {key: body.get(key) for key in want} == want, (token[:16], body)
        if want["active"] is False:
            assert body == {"active": False}


async def test_concurrent_rotations_of_many_families_each_get_their_own_successor(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """Twenty families rotated at once (and so in shared statements): every answer
    carries a successor of the family its token belonged to, never another's."""
    async with serve_in_loop(settings, db) as rotor:
        app = await rotor.client()
        presented: list[tuple[str, uuid.UUID]] = []
        for n in range(20):
            await rotor.user(f"user-{n}")
            token = (await rotor.login(app, username=f"user-{n}")).json()["refresh_token"]
            presented.append((token, await family_of(db, token)))

        answers = await asyncio.gather(
            *(
                rotor.http.post("/refresh", json={"refresh_token": token}, headers=app.auth)
                for token, _ in presented
            )
        )

    for (_, family), answer in zip(presented, answers, strict=True):
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert await family_of(db, body["refresh_token"]) == family
        assert claims_of(body["access_token"])["sid"] == str(family)
    generations = await db.fetch(
        "SELECT family_id, max(generation) AS top, count(*) FILTER (WHERE spent_at IS NULL) AS live"
        " FROM refresh_tokens GROUP BY family_id"
    )
    assert {(row["top"], row["live"]) for row in generations} == {(2, 1)}


async def family_of(db: asyncpg.Connection, token: str) -> uuid.UUID:
    family: uuid.UUID = await db.fetchval(
        "SELECT family_id FROM refresh_tokens WHERE token_hash = $1",
        hashlib.sha256(token.encode()).digest(),
    )
    return family


async def revoke(rotor: Rotor, client: Any, token: str) -> Any:
    return await rotor.http.post("/revoke", data={"token": token}, headers=client.auth)
