"""The store of login failures (CONTRACT section 1): one row per failure, and
one *pending* row per password attempt in flight (service/accounts/throttle.py
says why)."""

from __future__ import annotations

from service.db.pool import Connection

STALE_PENDING = 120  # seconds: far beyond a hash and its queue

# A row counts as a failure once it is not pending, or pending for too long.
_FINISHED = f"(NOT pending OR at <= now() - make_interval(secs => {STALE_PENDING}))"


async def seconds_locked(
    connection: Connection, kind: str, subject: str, *, window: int, max_failures: int
) -> float | None:
    """Seconds until the `max_failures`-th newest failure in the window ages
    out (then fewer remain and the subject may try again); None if not locked."""
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
        window,
        max_failures - 1,
    )
    return None if remaining is None else float(remaining)


async def taken(connection: Connection, username: str, window: int) -> int:
    """Failures and attempts in flight for the username, in the window."""
    count: int = await connection.fetchval(
        "SELECT count(*) FROM login_failures "
        "WHERE subject_kind = 'username' AND subject = $1 "
        "AND at > now() - make_interval(secs => $2)",
        username,
        window,
    )
    return count


async def reserve(connection: Connection, username: str) -> int:
    """A pending row for one attempt: its id."""
    row_id: int = await connection.fetchval(
        "INSERT INTO login_failures (subject_kind, subject, pending) "
        "VALUES ('username', $1, true) RETURNING id",
        username,
    )
    return row_id


async def finish_as_failures(connection: Connection, row_ids: list[int]) -> None:
    """Pending rows become failures, counted from now."""
    await connection.execute(
        "UPDATE login_failures SET pending = false, at = now() WHERE id = ANY($1::bigint[])",
        row_ids,
    )


async def add_failure(connection: Connection, kind: str, subject: str) -> None:
    await connection.execute(
        "INSERT INTO login_failures (subject_kind, subject) VALUES ($1, $2)", kind, subject
    )


async def clear(connection: Connection, username: str, row_ids: list[int]) -> None:
    """These rows, and the username's finished failures; attempts still in
    flight keep theirs."""
    await connection.execute(
        "DELETE FROM login_failures WHERE id = ANY($1::bigint[]) "
        f"OR (subject_kind = 'username' AND subject = $2 AND {_FINISHED})",
        row_ids,
        username,
    )


async def delete(connection: Connection, row_ids: list[int]) -> None:
    await connection.execute("DELETE FROM login_failures WHERE id = ANY($1::bigint[])", row_ids)


async def delete_older_than(connection: Connection, seconds: int) -> int:
    status = await connection.execute(
        "DELETE FROM login_failures WHERE at < now() - make_interval(secs => $1)", seconds
    )
    return int(status.rsplit(" ", 1)[-1])
