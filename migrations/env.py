"""Alembic environment: async (asyncpg); an upgrade runs in one transaction.

It imports nothing from `service`: a revision describes the schema as it was
when written, not as the code is now. The URL comes from the caller
(`config.attributes["url"]`, as `rotor migrate` passes it) or DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

config = context.config


def _url() -> str:
    url = config.attributes.get("url") or os.environ.get("DATABASE_URL", "")
    if not url:
        raise SystemExit("DATABASE_URL: required to run migrations")
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise SystemExit("DATABASE_URL: must be a postgresql:// URL")


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=None,
        transactional_ddl=True,
    )
    with context.begin_transaction():
        # Two `rotor serve` or `rotor migrate` started together must not race.
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7270710001)")
        context.run_migrations()


async def _main() -> None:
    engine = create_async_engine(_url(), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported")

connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_main())
