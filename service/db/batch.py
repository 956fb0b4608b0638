"""Look-ups that arrive together go to the database together (the DataLoader
pattern): every request that asks for a key during one turn of the event loop
joins one batch, and the batch is one statement on one pooled connection.

Under load a gateway's introspections arrive many at a time. Each statement
costs PostgreSQL and asyncpg far more in per-statement work (protocol,
transaction, pool) than in the index look-ups themselves, so one statement
for a handful of tokens is much cheaper than one each. The answer is still
read after the request arrived and before it is answered: a revocation that
has returned before a request's batch starts is seen by it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from service.db.pool import Connection, Database

K = TypeVar("K")
V = TypeVar("V")

MAX_BATCH = 256

Load = Callable[[Connection, list[K]], Awaitable[Sequence[V]]]


class Batcher(Generic[K, V]):
    def __init__(self, database: Database, load: Load[K, V], *, max_size: int = MAX_BATCH) -> None:
        self._db = database
        self._load = load
        self._max = max_size
        self._pending: list[tuple[K, asyncio.Future[V]]] = []
        self._running: set[asyncio.Task[None]] = set()

    async def get(self, key: K) -> V:
        """`load(connection, [..., key, ...])`'s answer for `key`; what it raises,
        every request of the batch gets."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((key, future))
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        loop = asyncio.get_running_loop()
        for start in range(0, len(pending), self._max):
            # A context of its own: no request's held connection or deadline.
            task = loop.create_task(
                self._run(pending[start : start + self._max]), context=contextvars.Context()
            )
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[K, asyncio.Future[V]]]) -> None:
        waiting = [(key, future) for key, future in batch if not future.done()]
        if not waiting:
            return  # every request gave up (deadline) before the batch began
        try:
            async with self._db.connection() as connection:
                answers = await self._load(connection, [key for key, _ in waiting])
        except Exception as exc:
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (shutting down): nobody waits in vain
            for _, future in waiting:
                future.cancel()
            raise
        for (_, future), answer in zip(waiting, answers, strict=True):
            if not future.done():
                future.set_result(answer)
