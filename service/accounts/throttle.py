"""Login-failure limits, kept in the database so they hold across processes.

CONTRACT section 1: a failure counts against the username (known or not) and
the client IP; once either has `max_failures` in the last `window` seconds,
every further attempt is refused (429) without hashing, until enough failures
age out.

Per username the limit is exact under concurrency: an attempt reserves its
failure row (under a per-username advisory lock) before the password is
hashed, and a successful login deletes it again, so N simultaneous guesses
at one account cannot all slip past the check. An attempt that ends neither
way (hashing unavailable, its deadline, a lost client) releases its row. Per IP only finished
failures count: one IP may be a BFF logging in many users at once, and its
honest logins in flight must not lock it out. Simultaneous failing guesses
from one IP can therefore exceed the IP limit by the number in flight, which
the bounded hashing queue keeps small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.db.pool import Connection


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


class LoginThrottle:
    def __init__(self, max_failures: int, window: int) -> None:
        self.max_failures = max_failures
        self.window = window

    async def reserve(self, connection: Connection, subjects: Subjects) -> Attempt | int:
        """In the caller's transaction: an Attempt, or the seconds to wait (locked)."""
        await connection.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", f"username:{subjects.username}"
        )
        wait = 0
        for kind, subject in subjects.pairs():
            wait = max(wait, await self._seconds_locked(connection, kind, subject))
        if wait > 0:
            return wait
        row_id = await connection.fetchval(
            "INSERT INTO login_failures (subject_kind, subject) VALUES ('username', $1) "
            "RETURNING id",
            subjects.username,
        )
        return Attempt((row_id,))

    async def failed(self, connection: Connection, subjects: Subjects) -> None:
        """The attempt failed: its username row stays; the IP's failure is counted now."""
        if subjects.ip is not None:
            await connection.execute(
                "INSERT INTO login_failures (subject_kind, subject) VALUES ('ip', $1)",
                subjects.ip,
            )

    async def succeeded(self, connection: Connection, subjects: Subjects, attempt: Attempt) -> None:
        """A successful login clears that username's failures (its own row included)."""
        await connection.execute(
            "DELETE FROM login_failures WHERE id = ANY($1::bigint[]) "
            "OR (subject_kind = 'username' AND subject = $2)",
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
            """
            SELECT extract(epoch FROM at + make_interval(secs => $3) - now())
            FROM login_failures
            WHERE subject_kind = $1 AND subject = $2 AND at > now() - make_interval(secs => $3)
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
