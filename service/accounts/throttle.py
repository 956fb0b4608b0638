"""Login-failure limits, kept in the database so they hold across processes.

CONTRACT section 1: a failure counts against the username (known or not) and
the client IP; once either has `max_failures` in the last `window` seconds,
every further attempt is refused (429) without hashing, until enough failures
age out.

Per username the limit is exact under concurrency, and only failures lock an
account. An attempt reserves a `pending` row (under a per-username advisory
lock) before its password is hashed; the row becomes the failure if the
password is wrong, and is deleted if it is right or the attempt ends neither
way (hashing unavailable, its deadline, a lost client). While finished
failures and attempts in flight together reach the limit, a further attempt
waits for one of them to end instead of being hashed: 20 simultaneous guesses
against a limit of 10 get 10 hashes and 10 429s, and 20 simultaneous right
passwords all log in. A pending row older than STALE_PENDING belongs to an
attempt whose process died, and counts as a failure.

Per IP only finished failures count, and nothing waits: one IP may be a BFF
logging in many users at once. Simultaneous failing guesses from one IP can
therefore exceed the IP limit by the number in flight, which the bounded
hashing queue keeps small.

The throttle owns the short transactions of the attempt's bookkeeping (each
reservation try, the failure); a successful login clears its rows inside the
login's own transaction (`succeeded`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from dataclasses import dataclass

from service.accounts.passwords import HashQueueFull, PasswordHasher
from service.accounts.users import User, user_by_name
from service.db import events, locks, logins
from service.db.logins import STALE_PENDING
from service.db.pool import Connection, Database
from service.deadline import deadline_paused
from service.errors import InvalidGrant, TooManyAttempts
from service.events import Caller
from service.observability import metrics

__all__ = ["STALE_PENDING", "Attempt", "LoginFailed", "LoginThrottle", "Subjects"]

log = logging.getLogger("rotor.throttle")

# An attempt that finds the limit taken up by attempts in flight looks again
# after IN_FLIGHT_POLL, then twice as long each time up to IN_FLIGHT_POLL_MAX,
# for at most IN_FLIGHT_MAX_WAIT in all (then 503: logins are backed up).
IN_FLIGHT_POLL = 0.05
IN_FLIGHT_POLL_MAX = 0.4
IN_FLIGHT_MAX_WAIT = 10.0


@dataclass(frozen=True, slots=True)
class Attempt:
    """The failure rows reserved for one password attempt."""

    row_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Subjects:
    username: str
    ip: str | None

    def pairs(self) -> list[tuple[str, str]]:
        items = [("username", self.username)]
        if self.ip is not None:
            items.append(("ip", self.ip))
        return items


class LoginFailed(InvalidGrant):
    """A password login that failed and was counted (its reserved row stays)."""


class _InFlight(Exception):
    """The limit is taken up by failures and attempts still being checked:
    reserve again once one of those has ended."""


class LoginThrottle:
    def __init__(
        self, database: Database, hasher: PasswordHasher, *, max_failures: int, window: int
    ) -> None:
        self._db = database
        self._hasher = hasher
        self.max_failures = max_failures
        self.window = window

    async def reserve(
        self, subjects: Subjects, caller: Caller, client_id: uuid.UUID
    ) -> tuple[User | None, Attempt]:
        """The user (None if unknown) and a reservation for one attempt. Each try
        is one transaction, committed before any answer: the 429 and its event
        must survive the error response (STYLE.md, unit of work). While failures
        and attempts in flight take up the limit, the attempt waits for one of
        them to end: only failures lock (CONTRACT section 1)."""
        waited, pause = 0.0, IN_FLIGHT_POLL
        with contextlib.ExitStack() as waiting:
            while True:
                try:
                    return await self._try_reserve(subjects, caller, client_id)
                except _InFlight:
                    pass
                if waited >= IN_FLIGHT_MAX_WAIT:
                    raise HashQueueFull  # 503 with Retry-After: logins are backed up
                if not waited:
                    # A waiting login holds a place in the hash queue: a flood of
                    # guesses at one account is bounded like any other.
                    waiting.enter_context(self._hasher.queued())
                async with deadline_paused():  # waiting on hashes, as a hash does
                    await asyncio.sleep(pause)
                waited += pause
                pause = min(2 * pause, IN_FLIGHT_POLL_MAX)

    async def _try_reserve(
        self, subjects: Subjects, caller: Caller, client_id: uuid.UUID
    ) -> tuple[User | None, Attempt]:
        async with self._db.transaction() as connection:
            await locks.lock_username(connection, subjects.username)
            wait = await self._seconds_locked(connection, subjects)
            if wait > 0:
                await events.record(
                    connection,
                    "login_locked",
                    caller,
                    client_id=client_id,
                    detail={"retry_after": wait},
                )
            elif await logins.taken(connection, subjects.username, self.window) >= (
                self.max_failures
            ):
                raise _InFlight
            else:
                row_id = await logins.reserve(connection, subjects.username)
                return await user_by_name(connection, subjects.username), Attempt((row_id,))
        metrics.LOGIN_LOCKOUTS.inc()
        raise TooManyAttempts(wait)

    async def _seconds_locked(self, connection: Connection, subjects: Subjects) -> int:
        wait = 0
        for kind, subject in subjects.pairs():
            remaining = await logins.seconds_locked(
                connection, kind, subject, window=self.window, max_failures=self.max_failures
            )
            if remaining is not None:
                wait = max(wait, max(1, math.ceil(remaining)))
        return wait

    async def fail(
        self,
        subjects: Subjects,
        attempt: Attempt,
        *,
        caller: Caller,
        client_id: uuid.UUID,
        user: User | None,
        reason: str,
    ) -> LoginFailed:
        """The reserved username row becomes the failure, counted from now, the
        IP's failure is added and the event recorded, all committed: then the
        answer, which the caller raises."""
        async with self._db.transaction() as connection:
            await logins.finish_as_failures(connection, list(attempt.row_ids))
            if subjects.ip is not None:
                await logins.add_failure(connection, "ip", subjects.ip)
            await events.record(
                connection,
                "login_failed",
                caller,
                client_id=client_id,
                user_id=user.id if user else None,
                detail={"reason": reason if user else "unknown_user"},
            )
        metrics.LOGIN_FAILURES.inc()
        return LoginFailed("invalid username or password")

    @staticmethod
    async def succeeded(connection: Connection, subjects: Subjects, attempt: Attempt) -> None:
        """In the login's transaction: a successful login clears that username's
        failures and its own row; other attempts still in flight keep theirs."""
        await logins.clear(connection, subjects.username, list(attempt.row_ids))

    async def release(self, attempt: Attempt) -> None:
        """The attempt ended neither in success nor in failure: its rows go."""
        try:
            async with self._db.transaction() as connection:
                await logins.delete(connection, list(attempt.row_ids))
        except Exception:
            # The pending row then counts as a failure once STALE_PENDING passes.
            log.warning("a login attempt's reservation could not be released")
