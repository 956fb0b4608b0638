"""PostgreSQL advisory locks: their ids, and the statements that take them.

Every lock Rotor takes is named here, so two uses can never share an id by
accident. Transaction-level locks (`pg_advisory_xact_lock`) end with their
transaction; the pruner's session-level lock is always released before its
connection goes back to the pool.
"""

from __future__ import annotations

from service.db.pool import Connection

KEYS = 7270710002  # key bootstrap and every key-state change
PRUNE = 7270710003  # one pruner at a time across processes
LOGIN_NAMESPACE = 7  # second argument of hashtextextended for per-username locks


async def lock_keys(connection: Connection) -> None:
    """In the caller's transaction: key changes happen one at a time."""
    await connection.execute("SELECT pg_advisory_xact_lock($1)", KEYS)


async def lock_username(connection: Connection, username: str) -> None:
    """In the caller's transaction: one login reservation per username at a time."""
    await connection.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, $2))",
        f"username:{username}",
        LOGIN_NAMESPACE,
    )


async def try_lock_pruning(connection: Connection) -> bool:
    """The pruner's lock, for the session: False when another process holds it."""
    held: bool = await connection.fetchval("SELECT pg_try_advisory_lock($1)", PRUNE)
    return held


async def unlock_pruning(connection: Connection) -> None:
    await connection.execute("SELECT pg_advisory_unlock($1)", PRUNE)
