"""Look-ups that arrive together go to the database together (the DataLoader
pattern): every request that asks for a key during one turn of the event loop,
or while the previous batch is still in the database, joins one batch, and
the batch is one statement on one pooled connection.

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
# Statements of one batcher at once, per process. While one runs, new look-ups
# gather into the next batch: at low load a look-up goes at once, under load
# batches grow with the database's latency (as group commit does). Measured
# with the bench, one in flight cost the least CPU per request; the statements
# are short (a few index look-ups or one rotation each), so a batch waits at
# most one statement's time behind another.
MAX_IN_FLIGHT = 1

Load = Callable[[Connection, list[K]], Awaitable[Sequence[V]]]


class Batcher(Generic[K, V]):
    def __init__(
        self,
        database: Database,
        load: Load[K, V],
        *,
        max_size: int = MAX_BATCH,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._db = database
        self._load = load
        self._max = max_size
        self._max_in_flight = max_in_flight
        self._pending: list[tuple[K, asyncio.Future[V]]] = []
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()

    async def get(self, key: K) -> V:
        """`load(connection, [..., key, ...])`'s answer for `key`; what it raises,
        every request of the batch gets."""
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._pending.append((key, future))
        self._wake()
        return await future

    def _wake(self) -> None:
        if self._pending and not self._scheduled and len(self._running) < self._max_in_flight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._pending and len(self._running) < self._max_in_flight:
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            # A context of its own: no request's held connection or deadline.
            task = loop.create_task(self._run(batch), context=contextvars.Context())
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake()  # what gathered meanwhile goes next, as one batch

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
