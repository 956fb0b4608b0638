"""Pruning: storage stays bounded while the service runs.

Deletes, in bounded batches (each its own short transaction), the families
revoked or expired longer ago than the retention period, with their refresh
tokens (ON DELETE CASCADE); revoked jtis past their expiry; login failures
out of the window; and marks retired keys `removed` once every token they
signed has expired. Security events are kept (they are the audit trail).
Inside the service one process at a time prunes, through an advisory lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from service.db.pool import Connection, Database
from service.observability import metrics

log = logging.getLogger("rotor.prune")

PRUNE_LOCK_ID = 7270710003
BATCH = 1000

# A family is prunable once revoked, absolutely expired, or idled out (its
# newest refresh token expired) longer ago than the retention period.
DELETE_FAMILIES_SQL = """
WITH doomed AS (
    SELECT f.id FROM token_families f
    WHERE f.revoked_at < now() - make_interval(secs => $1)
       OR f.expires_at < now() - make_interval(secs => $1)
       OR NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.family_id = f.id
                      AND r.expires_at >= now() - make_interval(secs => $1))
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM token_families WHERE id IN (SELECT id FROM doomed)
"""


@dataclass(frozen=True, slots=True)
class PruneReport:
    families: int
    revoked_jtis: int
    login_failures: int
    keys_removed: int


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def prune(
    connection: Connection,
    *,
    retention: int,
    access_ttl: int,
    login_window: int,
    batch: int = BATCH,
) -> PruneReport:
    families = 0
    while True:
        deleted = _count(await connection.execute(DELETE_FAMILIES_SQL, retention, batch))
        families += deleted
        if deleted < batch:
            break
    jtis = _count(
        await connection.execute("DELETE FROM revoked_access_tokens WHERE expires_at < now()")
    )
    failures = _count(
        await connection.execute(
            "DELETE FROM login_failures WHERE at < now() - make_interval(secs => $1)", login_window
        )
    )
    keys = _count(
        await connection.execute(
            "UPDATE signing_keys SET state = 'removed', removed_at = now() "
            "WHERE state = 'retired' AND retired_at < now() - make_interval(secs => $1)",
            access_ttl,
        )
    )
    for table, count in (
        ("token_families", families),
        ("revoked_access_tokens", jtis),
        ("login_failures", failures),
    ):
        metrics.child(metrics.PRUNED, table).inc(count)
    return PruneReport(families, jtis, failures, keys)


class Pruner:
    """The periodic task: every `interval` seconds, whichever process holds the lock prunes."""

    def __init__(
        self,
        database: Database,
        *,
        interval: int,
        retention: int,
        access_ttl: int,
        login_window: int,
    ) -> None:
        self._db = database
        self._interval = interval
        self._args = {
            "retention": retention,
            "access_ttl": access_ttl,
            "login_window": login_window,
        }
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._loop(), name="rotor-prune")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run_once(self) -> PruneReport | None:
        """Prune if no other process is pruning; None when another holds the lock."""
        async with self._db.connection() as connection:
            if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", PRUNE_LOCK_ID):
                return None
            try:
                return await prune(connection, **self._args)
            finally:
                await connection.execute("SELECT pg_advisory_unlock($1)", PRUNE_LOCK_ID)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                report = await self.run_once()
            except Exception:
                log.warning("pruning failed; retrying next interval", exc_info=True)
                continue
            if report is not None:
                log.info("pruned", extra={"report": report})
