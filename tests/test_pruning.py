"""Pruning (CONTRACT 4 `rotor prune`): storage stays bounded.

`service.tokens.pruning.prune` is called on the test's own connection; the
families it works on come from real logins over HTTP and are made "long dead"
by moving their timestamps back with SQL (time never passes in these tests).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from service.db.pool import Database
from service.tokens.pruning import Pruner, PruneReport, prune
from tests.conftest import TEST_SECRET
from tests.helpers import RegisteredClient, Rotor, claims_of

RETENTION = 3600
LONG_AGO = RETENTION + 120  # dead for longer than the retention period
LATELY = RETENTION - 120  # dead, but not for long enough
ACCESS_TTL = 300
LOGIN_WINDOW = 900
PRUNE_LOCK_ID = 7270710003  # the advisory lock every Rotor process prunes under


# --------------------------------------------------------------------------- helpers


@pytest.fixture
async def app(rotor: Rotor) -> RegisteredClient:
    await rotor.user()
    return await rotor.client(name="app")


async def start(rotor: Rotor, client: RegisteredClient, rotations: int = 0) -> uuid.UUID:
    """A family from a password login, rotated `rotations` times; its id."""
    response = await rotor.login(client)
    assert response.status_code == 200, response.text
    refresh_token = response.json()["refresh_token"]
    family_id = uuid.UUID(claims_of(response.json()["access_token"])["sid"])
    for _ in range(rotations):
        rotated = await rotor.http.post(
            "/refresh", json={"refresh_token": refresh_token}, headers=client.auth
        )
        assert rotated.status_code == 200, rotated.text
        refresh_token = rotated.json()["refresh_token"]
    return family_id


async def revoked_ago(db: asyncpg.Connection, family_id: uuid.UUID, seconds: int) -> None:
    await db.execute(
        "UPDATE token_families SET revoked_at = now() - make_interval(secs => $2), "
        "revoked_reason = 'admin' WHERE id = $1",
        family_id,
        seconds,
    )


async def expired_ago(db: asyncpg.Connection, family_id: uuid.UUID, seconds: int) -> None:
    await db.execute(
        "UPDATE token_families SET expires_at = now() - make_interval(secs => $2) WHERE id = $1",
        family_id,
        seconds,
    )


async def idled_ago(db: asyncpg.Connection, family_id: uuid.UUID, seconds: int) -> None:
    """Every refresh token of the family (the live one included) expired `seconds` ago."""
    await db.execute(
        "UPDATE refresh_tokens SET expires_at = now() - make_interval(secs => $2) "
        "WHERE family_id = $1",
        family_id,
        seconds,
    )


async def family_ids(db: asyncpg.Connection) -> set[uuid.UUID]:
    return {row["id"] for row in await db.fetch("SELECT id FROM token_families")}


async def token_rows(db: asyncpg.Connection, families: set[uuid.UUID] | None = None) -> int:
    if families is None:
        count: int = await db.fetchval("SELECT count(*) FROM refresh_tokens")
    else:
        count = await db.fetchval(
            "SELECT count(*) FROM refresh_tokens WHERE family_id = ANY($1::uuid[])",
            list(families),
        )
    return count


async def run_prune(db: asyncpg.Connection, **overrides: int) -> PruneReport:
    args = {
        "retention": RETENTION,
        "access_ttl": ACCESS_TTL,
        "login_window": LOGIN_WINDOW,
        **overrides,
    }
    return await prune(db, **args)


# --------------------------------------------------------------------------- families


async def test_prune_deletes_long_dead_families_with_their_tokens_and_keeps_the_rest(
    rotor: Rotor, app: RegisteredClient
) -> None:
    live = await start(rotor, app)
    live_rotated = await start(rotor, app, rotations=2)
    revoked_long = await start(rotor, app, rotations=1)
    revoked_lately = await start(rotor, app)
    expired_long = await start(rotor, app, rotations=1)
    expired_lately = await start(rotor, app)
    idled_long = await start(rotor, app, rotations=2)
    idled_lately = await start(rotor, app)
    await revoked_ago(rotor.db, revoked_long, LONG_AGO)
    await revoked_ago(rotor.db, revoked_lately, LATELY)
    await rotor.db.execute(
        "INSERT INTO security_events (id, type, family_id, detail) "
        "VALUES (gen_random_uuid(), 'family_revoked', $1, '{\"reason\": \"admin\"}'::jsonb)",
        revoked_long,
    )
    await expired_ago(rotor.db, expired_long, LONG_AGO)
    await expired_ago(rotor.db, expired_lately, LATELY)
    await idled_ago(rotor.db, idled_long, LONG_AGO)
    await idled_ago(rotor.db, idled_lately, LATELY)

    doomed = {revoked_long, expired_long, idled_long}
    kept = {live, live_rotated, revoked_lately, expired_lately, idled_lately}
    assert await token_rows(rotor.db, doomed) == 2 + 2 + 3
    total = await token_rows(rotor.db)
    assert total == 1 + 3 + 2 + 1 + 2 + 1 + 3 + 1

    report = await run_prune(rotor.db)

    assert report.families == 3
    assert await family_ids(rotor.db) == kept
    assert await token_rows(rotor.db, doomed) == 0
    assert await token_rows(rotor.db) == total - 7
    # Security events are the audit trail: they outlive the families they name.
    assert (
        await rotor.db.fetchval(
            "SELECT count(*) FROM security_events WHERE family_id = $1", revoked_long
        )
        == 1
    )


async def test_prune_keeps_families_that_just_ended(rotor: Rotor, app: RegisteredClient) -> None:
    revoked = await start(rotor, app)
    expired = await start(rotor, app)
    idled = await start(rotor, app)
    await revoked_ago(rotor.db, revoked, 1)
    await expired_ago(rotor.db, expired, 1)
    await idled_ago(rotor.db, idled, 1)
    report = await run_prune(rotor.db)
    assert report.families == 0
    assert await family_ids(rotor.db) == {revoked, expired, idled}


@pytest.mark.parametrize("batch", [1, 2, 5, 1000])
async def test_prune_deletes_every_doomed_family_whatever_the_batch(
    rotor: Rotor, app: RegisteredClient, batch: int
) -> None:
    live = await start(rotor, app)
    doomed = [await start(rotor, app) for _ in range(5)]
    for family_id in doomed:
        await revoked_ago(rotor.db, family_id, LONG_AGO)
    report = await run_prune(rotor.db, batch=batch)
    assert report.families == 5
    assert await family_ids(rotor.db) == {live}
    assert await token_rows(rotor.db) == 1


async def test_a_second_prune_finds_nothing(rotor: Rotor, app: RegisteredClient) -> None:
    await revoked_ago(rotor.db, await start(rotor, app), LONG_AGO)
    assert (await run_prune(rotor.db)).families == 1
    assert await run_prune(rotor.db) == PruneReport(0, 0, 0, 0)


# --------------------------------------------------------------------------- other rows


async def test_prune_deletes_dpop_proof_jtis_past_their_window(rotor: Rotor) -> None:
    await rotor.db.execute(
        "INSERT INTO dpop_proof_jtis (endpoint, jti, expires_at) VALUES "
        "('/refresh', 'old', now() - interval '1 second'), "
        "('/refresh', 'fresh', now() + interval '1 minute')"
    )
    await run_prune(rotor.db)
    remaining = await rotor.db.fetch("SELECT jti FROM dpop_proof_jtis")
    assert [row["jti"] for row in remaining] == ["fresh"]


async def test_prune_deletes_revoked_jtis_past_their_expiry(rotor: Rotor) -> None:
    client = await rotor.client(grants=["client_credentials"], name="m2m")
    gateway = await rotor.client(grants=[], introspect=True, name="gateway")
    tokens = []
    for _ in range(2):
        issued = await rotor.token({"grant_type": "client_credentials"}, client.auth)
        token = issued.json()["access_token"]
        revoked = await rotor.http.post("/revoke", data={"token": token}, headers=client.auth)
        assert revoked.status_code == 200, revoked.text
        tokens.append(token)
    expired_jti, live_jti = (uuid.UUID(claims_of(token)["jti"]) for token in tokens)
    assert await rotor.db.fetchval("SELECT count(*) FROM revoked_access_tokens") == 2
    await rotor.db.execute(
        "UPDATE revoked_access_tokens SET expires_at = now() - interval '1 second' WHERE jti = $1",
        expired_jti,
    )

    report = await run_prune(rotor.db)

    assert report.revoked_jtis == 1
    remaining = [
        row["jti"] for row in await rotor.db.fetch("SELECT jti FROM revoked_access_tokens")
    ]
    assert remaining == [live_jti]
    # The revocation of a token that can still be presented is kept.
    answer = await rotor.http.post("/introspect", data={"token": tokens[1]}, headers=gateway.auth)
    assert answer.json() == {"active": False}


async def test_prune_deletes_login_failures_out_of_the_window(
    rotor: Rotor, app: RegisteredClient
) -> None:
    for _ in range(3):
        failed = await rotor.login(app, password="not the password")
        assert failed.status_code == 400, failed.text
    ids = [row["id"] for row in await rotor.db.fetch("SELECT id FROM login_failures ORDER BY id")]
    assert len(ids) == 3  # one per attempt: the test client has no IP address
    await rotor.db.execute(
        "UPDATE login_failures SET at = now() - make_interval(secs => $2) WHERE id = ANY($1)",
        ids[:2],
        LOGIN_WINDOW + 10,
    )

    report = await run_prune(rotor.db)

    assert report.login_failures == 2
    assert [row["id"] for row in await rotor.db.fetch("SELECT id FROM login_failures")] == [ids[2]]


# --------------------------------------------------------------------------- one pruner at a time


async def test_the_pruner_skips_while_another_process_holds_the_lock(
    rotor: Rotor, app: RegisteredClient
) -> None:
    doomed = await start(rotor, app)
    await revoked_ago(rotor.db, doomed, LONG_AGO)
    database = Database(rotor.settings.database_url, timeout=5, max_size=2)
    await database.open()
    try:
        pruner = Pruner(
            database,
            interval=0,
            retention=RETENTION,
            access_ttl=ACCESS_TTL,
            login_window=LOGIN_WINDOW,
        )
        await rotor.db.execute("SELECT pg_advisory_lock($1)", PRUNE_LOCK_ID)
        assert await pruner.run_once() is None
        assert doomed in await family_ids(rotor.db)

        await rotor.db.execute("SELECT pg_advisory_unlock($1)", PRUNE_LOCK_ID)
        report = await pruner.run_once()
        assert report is not None
        assert report.families == 1
        assert doomed not in await family_ids(rotor.db)
        # It let go of the lock when it was done.
        assert await rotor.db.fetchval("SELECT pg_try_advisory_lock($1)", PRUNE_LOCK_ID) is True
        await rotor.db.execute("SELECT pg_advisory_unlock($1)", PRUNE_LOCK_ID)
    finally:
        await database.close()


# --------------------------------------------------------------------------- the command line


async def test_cli_prune_prints_its_report(
    rotor: Rotor, app: RegisteredClient, tmp_path: Path
) -> None:
    for _ in range(2):
        await revoked_ago(rotor.db, await start(rotor, app), LONG_AGO)
    live = await start(rotor, app)
    await rotor.db.execute(
        "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES "
        "($1, now() - interval '1 minute'), ($2, now() + interval '1 minute')",
        uuid.uuid4(),
        uuid.uuid4(),
    )
    await rotor.db.execute(
        "INSERT INTO login_failures (subject_kind, subject, at) VALUES "
        "('username', 'mallory', now() - make_interval(secs => $1)), "
        "('username', 'mallory', now())",
        LOGIN_WINDOW + 10,
    )
    admin = await rotor.client(grants=["client_credentials"], scopes=[], admin=True, name="ops")
    token = (await rotor.token({"grant_type": "client_credentials"}, admin.auth)).json()
    rotated = await rotor.http.post(
        "/admin/keys/rotate",
        json={"force": True},
        headers={"Authorization": f"Bearer {token['access_token']}"},
    )
    assert rotated.status_code == 200, rotated.text
    await rotor.db.execute(
        "UPDATE signing_keys SET retired_at = now() - make_interval(secs => $1) "
        "WHERE state = 'retired'",
        ACCESS_TTL + 1,
    )

    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ROTOR_") and key != "DATABASE_URL"
    }
    env |= {
        "DATABASE_URL": rotor.settings.database_url,
        "ROTOR_SECRET": base64.urlsafe_b64encode(TEST_SECRET).rstrip(b"=").decode(),
        "ROTOR_PRUNE_RETENTION": str(RETENTION),
        "ROTOR_ACCESS_TOKEN_TTL": str(ACCESS_TTL),
        "ROTOR_LOGIN_WINDOW": str(LOGIN_WINDOW),
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "rotor"), "prune"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "families": 2,
        "revoked_jtis": 1,
        "login_failures": 1,
        "keys_removed": 1,
    }
    assert await family_ids(rotor.db) == {live}
    assert await rotor.db.fetchval("SELECT count(*) FROM revoked_access_tokens") == 1
    assert await rotor.db.fetchval("SELECT count(*) FROM login_failures") == 1
    states = sorted(row["state"] for row in await rotor.db.fetch("SELECT state FROM signing_keys"))
    assert states == ["active", "next", "removed"]
