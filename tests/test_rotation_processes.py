"""Exactly-once rotation across several Rotor processes on one database (CONTRACT 3.3).

Two real `rotor serve` processes share the test's PostgreSQL database; 20
simultaneous refreshes of one token are split between them, 10 rounds.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from service.accounts.clients import ClientStore
from tests.conftest import TEST_SECRET
from tests.helpers import PASSWORD, basic

ROTOR = Path(sys.executable).with_name("rotor")
ROUNDS = 10
CONCURRENT = 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def rotor_processes(database_url: str, count: int, grace: int) -> AsyncIterator[list[str]]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ROTOR_SECRET": base64.urlsafe_b64encode(TEST_SECRET).decode(),
        "ROTOR_REUSE_GRACE": str(grace),
        "ROTOR_ARGON2_TIME_COST": "1",
        "ROTOR_ARGON2_MEMORY_KIB": "8192",
        "ROTOR_ARGON2_PARALLELISM": "1",
    }
    ports = [_free_port() for _ in range(count)]
    processes = [
        subprocess.Popen(
            [str(ROTOR), "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        await _wait_ready(urls, processes)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


async def _wait_ready(urls: list[str], processes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as http:
        for url, process in zip(urls, processes, strict=True):
            while True:
                if process.poll() is not None:
                    error = process.stderr.read().decode() if process.stderr else ""
                    pytest.fail(f"rotor serve exited: {error[-2000:]}")
                try:
                    if (await http.get(f"{url}/health/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"{url} did not become ready")
                await asyncio.sleep(0.1)


async def _race(database_url: str, db, grace: int) -> list[Counter[int]]:
    client, secret = await ClientStore().create(
        db,
        name="race",
        grant_types=["password", "refresh_token"],
        scopes=["read"],
        public=False,
        can_introspect=False,
        is_admin=False,
    )
    assert secret is not None
    auth = basic(client.client_id, secret)
    from argon2 import PasswordHasher

    password_hash = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    await db.execute(
        "INSERT INTO users (id, username, password_hash) VALUES (gen_random_uuid(), 'racer', $1)",
        password_hash,
    )
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
