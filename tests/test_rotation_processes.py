"""Exactly-once rotation across several Rotor processes on one database (CONTRACT 3.3).

Two real `rotor serve` processes share the test's PostgreSQL database; 20
simultaneous refreshes of one token are split between them, 10 rounds.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from tests.helpers import PASSWORD, app_and_user, start_rotor, stop_rotor

ROUNDS = 10
CONCURRENT = 20


@asynccontextmanager
async def rotor_processes(database_url: str, count: int, grace: int) -> AsyncIterator[list[str]]:
    started = []
    try:
        for _ in range(count):
            started.append(await start_rotor(database_url, ROTOR_REUSE_GRACE=str(grace)))
        yield [url for _, url in started]
    finally:
        for process, _ in started:
            stop_rotor(process)


async def _race(database_url: str, db, grace: int) -> list[Counter[int]]:
    _, auth = await app_and_user(db, name="race", username="racer")
    results = []
    async with (
        rotor_processes(database_url, 2, grace) as urls,
        httpx.AsyncClient(timeout=30) as http,
    ):
        for _ in range(ROUNDS):
            login = await http.post(
                f"{urls[0]}/token",
                headers=auth,
                data={"grant_type": "password", "username": "racer", "password": PASSWORD},
            )
            assert login.status_code == 200, login.text
            token = login.json()["refresh_token"]
            responses = await asyncio.gather(
                *(
                    http.post(
                        f"{urls[i % len(urls)]}/refresh",
                        headers=auth,
                        json={"refresh_token": token},
                    )
                    for i in range(CONCURRENT)
                )
            )
            results.append((token, responses))
    counts = []
    for token, responses in results:
        statuses = Counter(r.status_code for r in responses)
        counts.append(statuses)
        family = await db.fetchrow(
            "SELECT f.id, f.revoked_reason, "
            "(SELECT count(*) FROM refresh_tokens r WHERE r.family_id = f.id) AS tokens, "
            "(SELECT count(*) FROM refresh_tokens r WHERE r.family_id = f.id "
            " AND r.spent_at IS NULL) AS live "
            "FROM token_families f JOIN refresh_tokens t ON t.family_id = f.id "
            "WHERE t.token_hash = sha256(convert_to($1, 'UTF8'))",
            token,
        )
        # Exactly one rotation: one successor, never a second branch.
        assert family["tokens"] == 2
        assert family["live"] == 1
        if grace == 0:
            assert statuses == Counter({200: 1, 400: CONCURRENT - 1})
            assert {r.json()["error"] for r in responses if r.status_code == 400} == {
                "invalid_grant"
            }
            assert family["revoked_reason"] == "reuse_detected"
        else:
            assert statuses == Counter({200: CONCURRENT})
            assert len({r.json()["refresh_token"] for r in responses}) == 1
            assert family["revoked_reason"] is None
    return counts


@pytest.mark.slow
async def test_two_processes_grace_zero_exactly_one_rotation(database_url, db):
    counts = await _race(database_url, db, grace=0)
    assert counts == [Counter({200: 1, 400: CONCURRENT - 1})] * ROUNDS


@pytest.mark.slow
async def test_two_processes_grace_window_all_get_the_same_successor(database_url, db):
    counts = await _race(database_url, db, grace=30)
    assert counts == [Counter({200: CONCURRENT})] * ROUNDS
