"""Pruning: storage stays bounded while the service runs.

Deletes, in bounded batches (each its own statement), the families
revoked or expired longer ago than the retention period, with their refresh
tokens (ON DELETE CASCADE); revoked jtis past their expiry; DPoP proof jtis
past their window (counted in the metric only, so `rotor prune` prints what
it did before); login failures out of the window; and marks retired keys
`removed` once every token they signed has expired. Security events are
kept (they are the audit trail). Inside the service one process at a time
prunes: a run is one transaction under a transaction-level advisory lock,
which holds through a transaction pooler as well. It locks only rows that no
request touches any more (families dead for longer than the retention).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from service.db import dpop, families, keys, locks, logins
from service.db.pool import Connection, Database
from service.observability import metrics

log = logging.getLogger("rotor.prune")

BATCH = 1000


@dataclass(frozen=True, slots=True)
class PruneReport:
    families: int
    revoked_jtis: int
    login_failures: int
    keys_removed: int


async def prune(
    connection: Connection,
    *,
    retention: int,
    access_ttl: int,
    login_window: int,
    batch: int = BATCH,
) -> PruneReport:
    dead = 0
    while True:  # each batch its own statement, so no lock is held for long
        deleted = await families.delete_dead_families(connection, retention, batch)
        dead += deleted
        if deleted < batch:
            break
    jtis = await families.delete_expired_jtis(connection)
    proof_jtis = await dpop.delete_expired_jtis(connection)
    failures = await logins.delete_older_than(connection, login_window)
    removed = await keys.remove_retired(connection, access_ttl)
    for table, count in (
        ("token_families", dead),
        ("revoked_access_tokens", jtis),
        ("dpop_proof_jtis", proof_jtis),
        ("login_failures", failures),
    ):
        metrics.child(metrics.PRUNED, table).inc(count)
    return PruneReport(dead, jtis, failures, removed)


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
        async with self._db.transaction() as connection:
            if not await locks.try_lock_pruning(connection):
                return None
            return await prune(connection, **self._args)

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
