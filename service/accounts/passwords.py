"""Human passwords: argon2id, hashed off the event loop with bounded concurrency.

Parameters (RFC 9106 section 4, the second recommended option): time_cost 3,
memory 64 MiB, parallelism 4. Memory is what makes GPU guessing expensive; at
most `hash_concurrency` hashes run at once (default 2, one per core), so 50
simultaneous logins need 2 x 64 MiB, not 50 x 64 MiB, and queue instead of
starving the requests that do not hash; the hashing threads also run at the
lowest CPU priority.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from service.config import Argon2Params
from service.deadline import deadline_paused

MIN_PASSWORD_CHARS = 8
MAX_WAITING_PER_SLOT = 64


class HashQueueFull(Exception):
    """Too many password hashes queued in this process (answered 503)."""


MAX_PASSWORD_CHARS = 1024


class PasswordHasher:
    def __init__(self, params: Argon2Params, concurrency: int) -> None:
        self._argon2 = Argon2Hasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        # argon2-cffi releases the GIL while hashing, so threads give real parallelism.
        self._executor = ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix="rotor-argon2", initializer=_yield_cpu
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._waiting = 0
        self._max_waiting = MAX_WAITING_PER_SLOT * concurrency
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        result: str = await self._run(self._argon2.hash, password)
        return result

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Verify; an unknown user (`stored_hash` None) costs one real hash too,
        so neither the answer nor its timing says whether the user exists."""
        if stored_hash is None:
            stored_hash = await self._dummy()
            await self._verify(stored_hash, password)
            return False
        return await self._verify(stored_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._argon2.check_needs_rehash(stored_hash)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _verify(self, stored_hash: str, password: str) -> bool:
        result: bool = await self._run(self._verify_sync, stored_hash, password)
        return result

    async def _run(self, work: Callable[..., Any], *args: Any) -> Any:
        if self._waiting >= self._max_waiting:
            # More logins queued than can finish soon: say so at once.
            raise HashQueueFull
        self._waiting += 1
        try:
            async with deadline_paused():
                return await self._hash_in_slot(work, *args)
        finally:
            self._waiting -= 1

    async def _hash_in_slot(self, work: Callable[..., Any], *args: Any) -> Any:
        await self._slots.acquire()
        loop = asyncio.get_running_loop()
        try:
            job = self._executor.submit(work, *args)
        except BaseException:
            self._slots.release()
            raise

        def done(_: Future[Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop may be closed at shutdown
                loop.call_soon_threadsafe(self._slots.release)

        # The slot is held until the hash itself ends, even when the request that
        # waits for it is cancelled (deadline): that hash still occupies a core.
        job.add_done_callback(done)
        return await asyncio.wrap_future(job)

    def _verify_sync(self, stored_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash("rotor-dummy-password-for-unknown-users")
        return self._dummy_hash


def _yield_cpu() -> None:
    """Hashing threads run at the lowest priority (nice 19; argon2's lane threads
    inherit it), so a flood of logins cannot starve the event loops that serve
    /refresh and /introspect."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def password_problem(password: str) -> str | None:
    """Length in Unicode characters (CONTRACT 3.6); nothing is truncated."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"password must be at least {MIN_PASSWORD_CHARS} characters"
    if len(password) > MAX_PASSWORD_CHARS:
        return f"password must be at most {MAX_PASSWORD_CHARS} characters"
    return None
