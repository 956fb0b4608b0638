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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.db.pool import Connection

STALE_PENDING = 120  # seconds: far beyond a hash and its queue


@dataclass(frozen=True, slots=True)
class Attempt:
    """The failure rows reserved for one password attempt."""

    row_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class InFlight:
    """The limit is taken up by failures and attempts still being checked:
    reserve again once one of those has ended."""


@dataclass(frozen=True, slots=True)
class Subjects:
    username: str
    ip: str | None

    def pairs(self) -> list[tuple[str, str]]:
        items = [("username", self.username)]
        if self.ip is not None:
            items.append(("ip", self.ip))
        return items


# A row counts as a failure once it is not pending, or pending for too long.
_FINISHED = f"(NOT pending OR at <= now() - make_interval(secs => {STALE_PENDING}))"


class LoginThrottle:
    def __init__(self, max_failures: int, window: int) -> None:
        self.max_failures = max_failures
        self.window = window

    async def reserve(self, connection: Connection, subjects: Subjects) -> Attempt | InFlight | int:
        """In the caller's transaction: an Attempt, InFlight, or the seconds to
        wait before any attempt may be made (locked)."""
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", f"username:{subjects.username}"
        )
        wait = 0
        for kind, subject in subjects.pairs():
            wait = max(wait, await self._seconds_locked(connection, kind, subject))
        if wait > 0:
            return wait
        taken = await connection.fetchval(
            "SELECT count(*) FROM login_failures "
            "WHERE subject_kind = 'username' AND subject = $1 "
            "AND at > now() - make_interval(secs => $2)",
            subjects.username,
            self.window,
        )
        if taken >= self.max_failures:
            return InFlight()
        row_id = await connection.fetchval(
            "INSERT INTO login_failures (subject_kind, subject, pending) "
            "VALUES ('username', $1, true) RETURNING id",
            subjects.username,
        )
        return Attempt((row_id,))

    async def failed(self, connection: Connection, subjects: Subjects, attempt: Attempt) -> None:
        """The attempt failed: its username row is the failure, counted from now;
        the IP's failure is added."""
        await connection.execute(
            "UPDATE login_failures SET pending = false, at = now() WHERE id = ANY($1::bigint[])",
            list(attempt.row_ids),
        )
        if subjects.ip is not None:
            await connection.execute(
                "INSERT INTO login_failures (subject_kind, subject) VALUES ('ip', $1)",
                subjects.ip,
            )

    async def succeeded(self, connection: Connection, subjects: Subjects, attempt: Attempt) -> None:
        """A successful login clears that username's failures and its own row;
        other attempts still in flight keep theirs."""
        await connection.execute(
            "DELETE FROM login_failures WHERE id = ANY($1::bigint[]) "
            f"OR (subject_kind = 'username' AND subject = $2 AND {_FINISHED})",
            list(attempt.row_ids),
            subjects.username,
        )

    async def release(self, connection: Connection, attempt: Attempt) -> None:
        """The attempt ended neither in success nor in failure: its rows go."""
        await connection.execute(
            "DELETE FROM login_failures WHERE id = ANY($1::bigint[])", list(attempt.row_ids)
        )

    async def _seconds_locked(self, connection: Connection, kind: str, subject: str) -> int:
        # The max_failures-th newest failure in the window: once it ages out,
        # fewer than max_failures remain and the subject may try again.
        remaining = await connection.fetchval(
            f"""
            SELECT extract(epoch FROM at + make_interval(secs => $3) - now())
            FROM login_failures
            WHERE subject_kind = $1 AND subject = $2 AND at > now() - make_interval(secs => $3)
              AND {_FINISHED}
            ORDER BY at DESC
            OFFSET $4 LIMIT 1
            """,
            kind,
            subject,
            self.window,
            self.max_failures - 1,
        )
        if remaining is None:
            return 0
        return max(1, math.ceil(float(remaining)))
