"""Test fixtures: a real PostgreSQL, a fresh migrated database per test.

Where the server comes from: TEST_DATABASE_URL if set; else a testcontainers
PostgreSQL where a Docker engine answers; else the embedded one (pgserver).
The schema is built once by running the Alembic migrations into a template
database; each test gets `CREATE DATABASE ... TEMPLATE` of it (tens of ms), so
test order never matters.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app, quiet_known_warnings
from service.config import Argon2Params, Settings
from service.db.migrate import upgrade
from tests.helpers import TEST_SECRET, Rotor, database_url_for

__all__ = ["TEST_SECRET"]

quiet_known_warnings()

# Cheap argon2 for the suite (the production defaults are tested in test_passwords).
TEST_ARGON2 = Argon2Params(time_cost=1, memory_kib=8192, parallelism=1)


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL", "").strip()
    if url:
        yield url
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    import pgserver

    # Not under pytest's basetemp: a concurrent pytest run may prune that.
    home = Path(tempfile.mkdtemp(prefix="rotor-test-pg-"))
    server = pgserver.get_server(home / "pgdata", cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(home, ignore_errors=True)


async def _admin(server_url: str, sql: str) -> None:
    connection = await asyncpg.connect(server_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def template_db(server_url: str) -> Iterator[str]:
    name = f"rotor_tpl_{os.getpid()}"
    asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}"'))
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    upgrade(database_url_for(server_url, name))
    yield name
    asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def dropper(server_url: str) -> Iterator[Callable[[str], None]]:
    """Drops test databases in the background: the next test need not wait for
    a DROP DATABASE (a checkpoint's worth of I/O each). All are gone when the
    session ends."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rotor-test-drop") as pool:

        def drop(name: str) -> None:
            sql = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
            pool.submit(asyncio.run, _admin(server_url, sql))

        yield drop


@pytest.fixture
async def database_url(
    server_url: str, template_db: str, dropper: Callable[[str], None]
) -> AsyncIterator[str]:
    name = f"rotor_t_{uuid.uuid4().hex[:16]}"
    await _admin(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield database_url_for(server_url, name)
    dropper(name)


@pytest.fixture
async def empty_database_url(server_url: str) -> AsyncIterator[str]:
    """A database with nothing in it (not cloned from the migrated template)."""
    name = f"rotor_empty_{uuid.uuid4().hex[:12]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    yield database_url_for(server_url, name)
    await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url, secret=TEST_SECRET, argon2=TEST_ARGON2, key_refresh_interval=0.2
    )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test's database, to arrange and to check state."""
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def rotor(settings: Settings, db: asyncpg.Connection) -> AsyncIterator[Rotor]:
    """Rotor served in-process over HTTP (lifespan included), with helpers."""
    async with AsyncTestClient(create_app(settings)) as client:
        yield Rotor(client, settings, db)
