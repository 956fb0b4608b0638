"""Requests' database deadlines (ROTOR_DB_TIMEOUT): the whole request is bounded
(CONTRACT section 3), and the code that must not spend the bound can pause it:
waiting for a password hash is not waiting for the database.

One timer per process, every RESOLUTION seconds, cancels the requests that
are past their deadline, instead of a timer armed and disarmed for every
request as `asyncio.timeout` does: on /refresh that cost about 6 % of the
server's time, this a dictionary entry. A request is cancelled between its
deadline and RESOLUTION seconds later, then answered 503 by the HTTP edge.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

RESOLUTION = 0.1


class Deadline:
    """One request's deadline, on the event loop's clock."""

    __slots__ = ("cancelling", "expired", "remaining", "task", "when")

    def __init__(self, task: asyncio.Task[object], when: float) -> None:
        self.task = task
        self.when: float | None = when
        self.remaining = 0.0
        self.expired = False
        self.cancelling = task.cancelling()

    def pause(self, now: float) -> None:
        if self.when is not None and not self.expired:
            self.remaining = max(self.when - now, 0.0)
            self.when = None

    def resume(self, now: float) -> None:
        if self.when is None and not self.expired:
            self.when = now + self.remaining

    def was_hit(self) -> bool:
        """After a CancelledError: whether it was this deadline's, and only its
        (then the cancellation is taken back, as `asyncio.timeout` does)."""
        return self.expired and self.task.uncancel() <= self.cancelling


class Deadlines:
    """The deadlines of the requests in flight in one process."""

    def __init__(self, seconds: float, resolution: float = RESOLUTION) -> None:
        self.seconds = seconds
        self._resolution = resolution
        self._in_flight: dict[Deadline, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> Deadline:
        """The current task's deadline, from now."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        deadline = Deadline(task, loop.time() + self.seconds)
        self._in_flight[deadline] = None
        if self._timer is None or self._timer_loop is not loop:
            self._timer = loop.call_later(self._resolution, self._sweep, loop)
            self._timer_loop = loop
        return deadline

    def finish(self, deadline: Deadline) -> None:
        self._in_flight.pop(deadline, None)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for deadline in [d for d in self._in_flight if d.when is not None and d.when <= now]:
            del self._in_flight[deadline]
            deadline.expired = True
            deadline.task.cancel()
        # The timer runs while requests are in flight, and stops with the last.
        if self._in_flight:
            self._timer = loop.call_later(self._resolution, self._sweep, loop)
        else:
            self._timer = None


request_deadline: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "rotor_request_deadline", default=None
)


@asynccontextmanager
async def deadline_paused() -> AsyncIterator[None]:
    deadline = request_deadline.get()
    if deadline is None:
        yield
        return
    loop = asyncio.get_running_loop()
    deadline.pause(loop.time())
    try:
        yield
    finally:
        deadline.resume(loop.time())
