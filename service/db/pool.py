"""The connection pool and the unit of work.

Every use case runs in one explicit transaction (`Database.transaction`):
leaving the block without an exception commits, an exception rolls back. The
HTTP status never decides a commit.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg

from service.config import asyncpg_dsn
from service.deadline import request_deadline

Connection: TypeAlias = asyncpg.Connection


class DatabaseUnavailable(Exception):
    """The database did not answer in time (CONTRACT section 3: 503)."""


# Errors that mean "the database cannot be asked", as opposed to a bug in a query.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.QueryCanceledError,
)


async def _init_connection(connection: Connection) -> None:
    # Every statement Rotor prepares is a short look-up or write by key: one
    # generic plan, made once per connection, is right for all of them. Left to
    # choose, PostgreSQL re-plans the batched look-ups (arrays of varying
    # length) at every execution, which doubled its CPU per introspection. A
    # SET rather than a startup parameter, which PgBouncer would refuse.
    await connection.execute("SET plan_cache_mode = force_generic_plan")
    await _set_codecs(connection)


async def _init_pooled_connection(connection: Connection) -> None:
    # Behind a transaction pooler a SET would stay on whichever server connection
    # ran it, for whoever is handed that one next; and with no statement cache
    # every statement is planned for its own parameters anyway.
    await _set_codecs(connection)


async def _set_codecs(connection: Connection) -> None:
    await connection.set_type_codec(
        "jsonb", encoder=_json_dumps, decoder=_json_loads, schema="pg_catalog"
    )


async def _no_session_state(_: Connection) -> None:
    return None


def _json_dumps(value: Any) -> str:
    import msgspec

    return msgspec.json.encode(value).decode()


def _json_loads(value: str) -> Any:
    import msgspec

    return msgspec.json.decode(value)


class Database:
    """The pool. With `pooler="transaction"` (ROTOR_DB_POOLER, CONTRACT section 1)
    the server connection behind a client connection may change at every
    transaction boundary (PgBouncer `pool_mode = transaction`), so Rotor keeps
    nothing on it between transactions:

    - no prepared-statement cache: PgBouncer 1.18 knows nothing of prepared
      statements, and a named one would be left on whichever server prepared
      it. asyncpg then uses the unnamed statement, which it parses again with
      each execution and ends with one Sync, so that its parse, bind and
      execute reach one server even outside a transaction (asyncpg >= 0.30);
    - no SET (`_init_pooled_connection`) and no session-level advisory lock
      (`locks` takes only transaction-level ones).
    """

    def __init__(self, url: str, *, timeout: float, max_size: int, pooler: str = "none") -> None:
        self._dsn = asyncpg_dsn(url)
        self.timeout = timeout
        self._max_size = max_size
        self._pooled = pooler == "transaction"
        self._pool: asyncpg.Pool | None = None
        self._held: contextvars.ContextVar[Connection | None] = contextvars.ContextVar(
            "rotor_connection", default=None
        )

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=1,
            max_size=self._max_size,
            timeout=self.timeout,
            command_timeout=self.timeout,
            init=_init_pooled_connection if self._pooled else _init_connection,
            statement_cache_size=0 if self._pooled else 100,
            # Rotor keeps no session state (no LISTEN, cursors or session
            # advisory locks; its one SET is made once, at connect): skip the
            # RESET ALL round trip asyncpg makes on every release. Open
            # transactions still roll back.
            reset=_no_session_state,
            max_inactive_connection_lifetime=60,
        )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise DatabaseUnavailable("pool is not open")
        return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection; nested calls within one task share the outer one,
        so a hot path takes one connection from the pool, not one per step."""
        held = self._held.get()
        if held is not None:
            yield held
            return
        # Within a request the request's deadline bounds the wait (and costs no
        # task, which asyncpg's own acquire timeout does); elsewhere, the timeout.
        timeout = None if request_deadline.get() is not None else self.timeout
        try:
            async with self.pool.acquire(timeout=timeout) as connection:
                token = self._held.set(connection)
                try:
                    yield connection
                finally:
                    self._held.reset(token)
        except UNAVAILABLE_ERRORS as exc:
            raise DatabaseUnavailable(type(exc).__name__) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.connection() as connection:
            try:
                async with connection.transaction():
                    yield connection
            except UNAVAILABLE_ERRORS as exc:
                raise DatabaseUnavailable(type(exc).__name__) from exc
