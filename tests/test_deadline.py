"""The requests' deadlines (service/deadline.py): one timer per process cancels
the requests past their deadline; anything else's cancellation stays its own.
The 503 they lead to is tested end to end in test_faults.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.deadline import Deadlines

RESOLUTION = 0.02


async def test_a_request_past_its_deadline_is_cancelled_as_its_own() -> None:
    deadlines = Deadlines(0.1, resolution=RESOLUTION)
    deadline = deadlines.start()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(5)
    waited = time.monotonic() - started
    assert 0.1 <= waited < 0.1 + RESOLUTION + 0.2
    assert deadline.was_hit()  # and the cancellation is taken back
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    deadlines.finish(deadline)


async def test_requests_that_finish_in_time_are_left_alone() -> None:
    deadlines = Deadlines(0.2, resolution=RESOLUTION)

    async def request(seconds: float) -> str:
        deadline = deadlines.start()
        try:
            await asyncio.sleep(seconds)
            return "answered"
        except asyncio.CancelledError:
            return "answered 503" if deadline.was_hit() else "cancelled"
        finally:
            deadlines.finish(deadline)

    answers = await asyncio.gather(request(0.05), request(0.5), request(0.1), request(0.6))
    assert answers == ["answered", "answered 503", "answered", "answered 503"]
    await asyncio.sleep(3 * RESOLUTION)
    assert deadlines._timer is None  # the timer stops with the last request


async def test_another_cancellation_is_not_taken_for_the_deadline() -> None:
    deadlines = Deadlines(5, resolution=RESOLUTION)
    outcome: list[str] = []

    async def request() -> None:
        deadline = deadlines.start()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            outcome.append("deadline" if deadline.was_hit() else "someone else")
            raise
        finally:
            deadlines.finish(deadline)

    task = asyncio.create_task(request())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outcome == ["someone else"]


async def test_a_paused_deadline_does_not_run_out() -> None:
    deadlines = Deadlines(0.5, resolution=RESOLUTION)
    deadline = deadlines.start()
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.4)
    deadline.pause(loop.time())
    await asyncio.sleep(0.6)  # paused: no cancellation
    deadline.resume(loop.time())
    resumed = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(5)
    assert time.monotonic() - resumed < 0.35  # the 0.1 s left, not a new 0.5 s
    assert deadline.was_hit()
    deadlines.finish(deadline)
