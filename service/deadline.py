"""The request's database deadline (ROTOR_DB_TIMEOUT), shared with the code that
must not spend it: waiting for a password hash is not waiting for the database,
so the deadline is paused while a request queues for and runs its hash."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

request_deadline: contextvars.ContextVar[asyncio.Timeout | None] = contextvars.ContextVar(
    "rotor_request_deadline", default=None
)


@asynccontextmanager
async def deadline_paused() -> AsyncIterator[None]:
    deadline = request_deadline.get()
    when = deadline.when() if deadline is not None else None
    if deadline is None or when is None or deadline.expired():
        yield
        return
    loop = asyncio.get_running_loop()
    remaining = when - loop.time()
    deadline.reschedule(None)
    try:
        yield
    finally:
        deadline.reschedule(loop.time() + max(remaining, 0.0))
