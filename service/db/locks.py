"""PostgreSQL advisory locks: their ids, and the statements that take them.

Every lock Rotor takes is named here, so two uses can never share an id by
accident. Every one is transaction-level (`pg_advisory_xact_lock`): it ends
with its transaction, so it means the same through a transaction pooler
(ROTOR_DB_POOLER=transaction), where a session-level lock would be held by
whichever server connection ran the statement, for whoever is handed it next.
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
    """In the caller's transaction: False when another process is pruning."""
    held: bool = await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", PRUNE)
    return held
