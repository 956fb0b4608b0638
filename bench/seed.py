"""Putting what the load needs into the store before it starts: clients and
users (through the `rotor` CLI, as an operator would), token families with one
live refresh token each (COPY, the same rows service.db.families.start writes), filler
families for the scale comparison, and the rows pgbench rotates."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import asyncpg

from bench.servers import REPO, VENV_BIN
from service.config import Settings

SCOPE = "read write"
# Where the seeded sessions were opened and last used (CONTRACT 3.8): a fixed IP
# and a user agent of a browser's usual length, as a BFF forwards it; the wrk
# scripts send the same (bench/lua/common.lua), so rotations rewrite as much.
SESSION_IP = "198.51.100.7"
SESSION_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
FILLER_BATCH = 100_000
APP_GRANTS = ("--grant", "password", "--grant", "refresh_token", "--grant", "client_credentials")


FAMILY_COLUMNS = ("id", "user_id", "client_id", "scope", "expires_at")
ORIGIN_COLUMNS = ("login_ip", "login_user_agent", "last_ip", "last_user_agent")
ORIGIN_VALUES = ", ".join([f"'{SESSION_IP}'::inet", f"'{SESSION_USER_AGENT}'"] * 2)  # SQL


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    client_secret: str

    @property
    def authorization(self) -> str:
        raw = f"{quote(self.client_id, safe='')}:{quote(self.client_secret, safe='')}"
        return "Basic " + base64.b64encode(raw.encode()).decode()


@dataclass(frozen=True, slots=True)
class Accounts:
    """The app (password, refresh_token, client_credentials), the gateway
    (introspection) and the users, all with one password."""

    app: Client
    gateway: Client
    usernames: list[str]
    user_ids: list[uuid.UUID]
    password: str


def rotor_cli(args: list[str], env: Mapping[str, str]) -> dict[str, str]:
    done = subprocess.run(
        [str(VENV_BIN / "rotor"), *args],
        cwd=REPO,
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"rotor {' '.join(args)} failed:\n{done.stderr}")
    result: dict[str, str] = json.loads(done.stdout)
    return result


def create_client(env: Mapping[str, str], name: str, flags: list[str]) -> Client:
    created = rotor_cli(["create-client", "--name", name, *flags], env)
    return Client(created["client_id"], created["client_secret"])


def create_accounts(env: Mapping[str, str], users: int) -> Accounts:
    """Two clients and one user through the CLI (the user's hash is made with
    the configured argon2 parameters), then more users with that same hash."""
    app = create_client(
        env,
        "bench-app",
        [*APP_GRANTS, "--scope", "read", "--scope", "write"],
    )
    gateway = create_client(env, "bench-gateway", ["--grant", "client_credentials", "--introspect"])
    password = "bench-" + secrets.token_hex(16)
    first = rotor_cli(
        ["create-user", "--username", "bench-user-0"], {**env, "ROTOR_PASSWORD": password}
    )
    usernames = [f"bench-user-{index}" for index in range(users)]
    user_ids = asyncio.run(_copy_users(env["DATABASE_URL"], first["username"], usernames[1:]))
    return Accounts(app, gateway, usernames, [uuid.UUID(first["id"]), *user_ids], password)


async def _copy_users(url: str, template: str, usernames: list[str]) -> list[uuid.UUID]:
    connection = await asyncpg.connect(url)
    try:
        password_hash = await connection.fetchval(
            "SELECT password_hash FROM users WHERE username = $1", template
        )
        ids = [uuid.uuid4() for _ in usernames]
        await connection.copy_records_to_table(
            "users",
            records=[(i, name, password_hash) for i, name in zip(ids, usernames, strict=True)],
            columns=["id", "username", "password_hash"],
        )
        return ids
    finally:
        await connection.close()


def token_hash(token: str) -> bytes:
    """As Rotor stores a refresh token: SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode()).digest()


async def seed_families(
    url: str, settings: Settings, client_id: str, user_ids: list[uuid.UUID], count: int
) -> list[str]:
    """`count` new families (a login each), one live generation-1 refresh token
    each; returns the tokens. Same rows as service.db.families.start, written by COPY."""
    now = datetime.now(UTC)
    family_expires = now + timedelta(seconds=settings.family_max_ttl)
    token_expires = min(now + timedelta(seconds=settings.refresh_idle_ttl), family_expires)
    client = uuid.UUID(client_id)
    tokens = [secrets.token_urlsafe(32) for _ in range(count)]
    families = [uuid.uuid4() for _ in range(count)]
    connection = await asyncpg.connect(url)
    try:
        async with connection.transaction():
            origin = (SESSION_IP, SESSION_USER_AGENT) * 2
            await connection.copy_records_to_table(
                "token_families",
                records=[
                    (
                        family,
                        user_ids[index % len(user_ids)],
                        client,
                        SCOPE,
                        family_expires,
                        *origin,
                    )
                    for index, family in enumerate(families)
                ],
                columns=[*FAMILY_COLUMNS, *ORIGIN_COLUMNS],
            )
            await connection.copy_records_to_table(
                "refresh_tokens",
                records=[
                    (token_hash(token), family, 1, token_expires)
                    for token, family in zip(tokens, families, strict=True)
                ],
                columns=["token_hash", "family_id", "generation", "expires_at"],
            )
    finally:
        await connection.close()
    return tokens


# Families nobody will present (their tokens are hashes of random bytes): the
# bulk of a large store, written by the server itself.
FILLER_SQL = f"""
WITH source AS (
    SELECT i, gen_random_uuid() AS id FROM generate_series(1, $5::bigint) AS i
), families AS (
    INSERT INTO token_families ({", ".join((*FAMILY_COLUMNS, *ORIGIN_COLUMNS))})
    SELECT id, ($1::uuid[])[1 + i % cardinality($1::uuid[])], $2, $3,
           now() + make_interval(secs => $4), {ORIGIN_VALUES}
    FROM source
)
INSERT INTO refresh_tokens (token_hash, family_id, generation, expires_at)
SELECT sha256(uuid_send(gen_random_uuid())), id, 1, now() + make_interval(secs => $6)
FROM source
"""


async def family_count(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        count: int = await connection.fetchval("SELECT count(*) FROM token_families")
        return count
    finally:
        await connection.close()


async def seed_filler(
    url: str, settings: Settings, client_id: str, user_ids: list[uuid.UUID], count: int
) -> None:
    connection = await asyncpg.connect(url)
    try:
        remaining = count
        while remaining > 0:
            batch = min(remaining, FILLER_BATCH)
            await connection.execute(
                FILLER_SQL,
                user_ids,
                uuid.UUID(client_id),
                SCOPE,
                settings.family_max_ttl,
                batch,
                min(settings.refresh_idle_ttl, settings.family_max_ttl),
            )
            remaining -= batch
    finally:
        await connection.close()


async def analyze(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("VACUUM ANALYZE token_families")
        await connection.execute("VACUUM ANALYZE refresh_tokens")
    finally:
        await connection.close()


# The spent history of a seeded chain: generations 1..$2 of each family ($1),
# spent and vacuumed long ago, as a family rotated for a while leaves them.
HISTORY_SQL = """
INSERT INTO refresh_tokens (token_hash, family_id, parent_hash, generation, issued_at,
                            expires_at, spent_at)
SELECT sha256(uuid_send(gen_random_uuid())), f.id, NULL, g,
       now() - make_interval(secs => $2 - g + 60), now() + interval '1 day',
       now() - make_interval(secs => $2 - g + 30)
FROM unnest($1::uuid[]) AS f(id), generate_series(1, $2::int) AS g
"""


async def seed_chains(
    url: str,
    settings: Settings,
    client_id: str,
    user_ids: list[uuid.UUID],
    count: int,
    history: int,
    *,
    analyze: bool = True,
) -> list[str]:
    """`count` families that have already rotated `history` times: generations
    1..history spent, generation history+1 live (its token returned); then
    vacuumed and analyzed, as a store in use for a while would be, unless
    `analyze` is false (a young store: PostgreSQL has not looked at it yet)."""
    now = datetime.now(UTC)
    family_expires = now + timedelta(seconds=settings.family_max_ttl)
    token_expires = min(now + timedelta(seconds=settings.refresh_idle_ttl), family_expires)
    client = uuid.UUID(client_id)
    tokens = [secrets.token_urlsafe(32) for _ in range(count)]
    families = [uuid.uuid4() for _ in range(count)]
    origin = (SESSION_IP, SESSION_USER_AGENT) * 2
    connection = await asyncpg.connect(url)
    try:
        async with connection.transaction():
            await connection.copy_records_to_table(
                "token_families",
                records=[
                    (family, user_ids[i % len(user_ids)], client, SCOPE, family_expires, *origin)
                    for i, family in enumerate(families)
                ],
                columns=[*FAMILY_COLUMNS, *ORIGIN_COLUMNS],
            )
            if history > 0:
                await connection.execute(HISTORY_SQL, families, history)
            await connection.copy_records_to_table(
                "refresh_tokens",
                records=[
                    (token_hash(token), family, history + 1, token_expires)
                    for token, family in zip(tokens, families, strict=True)
                ],
                columns=["token_hash", "family_id", "generation", "expires_at"],
            )
        if analyze:
            await connection.execute("VACUUM ANALYZE refresh_tokens")
            await connection.execute("VACUUM ANALYZE token_families")
    finally:
        await connection.close()
    return tokens
