"""Human passwords: argon2id, hashed off the event loop with bounded concurrency.

Parameters (RFC 9106 section 4, the second recommended option): time_cost 3,
memory 64 MiB, parallelism 4. Memory is what makes GPU guessing expensive; at
most `hash_concurrency` hashes run at once (default 2, one per core), so 50
simultaneous logins need 2 x 64 MiB, not 50 x 64 MiB, and queue instead of
starving the requests that do not hash.

Hashing runs at the lowest CPU priority. In threads (the default), that is
nice 19 for the hashing threads, which weighs them against the other threads
of their scheduling group only. Where the kernel groups processes by session
(Linux autogroups), the group as a whole still competes at full weight with
PostgreSQL's backends and everything else, and a flood of logins takes CPU
from /refresh and /introspect through it. So served workers hash `isolated`:
in processes of their own, each in a session (hence an autogroup) of its own
at nice 19. Measured on this project's 2-core machine (solo, then under a
login flood, three paired rounds each): /refresh kept 0.69 to 0.79 of its solo
throughput, against 0.58 to 0.69 with threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from service.config import Argon2Params
from service.deadline import deadline_paused

log = logging.getLogger("rotor.passwords")

MIN_PASSWORD_CHARS = 8
MAX_WAITING_PER_SLOT = 64
LOWEST_PRIORITY = 19
AUTOGROUP = Path("/proc/self/autogroup")
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class HashingUnavailable(Exception):
    """No password can be hashed now (answered 503, with this description)."""

    description = "password hashing is unavailable; retry shortly"


class HashQueueFull(HashingUnavailable):
    """Too many password hashes queued in this process."""

    description = "too many logins in progress; retry shortly"


MAX_PASSWORD_CHARS = 1024


class PasswordHasher:
    def __init__(self, params: Argon2Params, concurrency: int, *, isolated: bool = False) -> None:
        self._params = params
        self._concurrency = concurrency
        self._isolated = isolated
        self._argon2 = argon2_hasher(params)
        self._hash_work: Callable[..., Any]
        self._verify_work: Callable[..., Any]
        if isolated:
            self._hash_work, self._verify_work = _hash_here, _verify_here
        else:
            self._hash_work = partial(_hash_with, self._argon2)
            self._verify_work = partial(_verify_with, self._argon2)
        self._executor = self._new_executor()
        self._slots = asyncio.Semaphore(concurrency)
        self._waiting = 0
        self._max_waiting = MAX_WAITING_PER_SLOT * concurrency
        self._dummy_hash: str | None = None

    def start(self) -> None:
        """Start the hashing processes now, not at the first logins: a process is
        spawned for each task submitted while none is idle."""
        if self._isolated:
            for _ in range(self._concurrency):
                self._executor.submit(int)

    async def hash(self, password: str) -> str:
        result: str = await self._run(self._hash_work, password)
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
        # Waits for the hash in flight, if any (at most one per slot; queued ones
        # are cancelled): leaving the pool's threads running into interpreter
        # exit made CPython print "Exception ignored in: <module 'threading'>"
        # after a SIGTERM soon after start-up.
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _new_executor(self) -> Executor:
        if self._isolated:
            return ProcessPoolExecutor(
                max_workers=self._concurrency,
                # Not fork: the worker has threads (the event loop's, asyncpg's).
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_hashing_process,
                initargs=(self._params, os.getpid()),
            )
        # argon2-cffi releases the GIL while hashing, so threads give real parallelism.
        return ThreadPoolExecutor(
            max_workers=self._concurrency,
            thread_name_prefix="rotor-argon2",
            initializer=_lowest_priority,
        )

    async def _verify(self, stored_hash: str, password: str) -> bool:
        result: bool = await self._run(self._verify_work, stored_hash, password)
        return result

    async def _run(self, work: Callable[..., Any], *args: Any) -> Any:
        with self.queued():
            async with deadline_paused():
                return await self._hash_once_more_if_broken(work, *args)

    @contextlib.contextmanager
    def queued(self) -> Iterator[None]:
        """A place among this process's logins waiting for a hash, or for
        attempts in flight on their username to end (service/accounts/throttle.py):
        more than can finish soon are told so at once (503)."""
        if self._waiting >= self._max_waiting:
            raise HashQueueFull
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1

    async def _hash_once_more_if_broken(self, work: Callable[..., Any], *args: Any) -> Any:
        """A hashing process that died (killed, out of memory) breaks its pool and
        every hash in it: those are tried once more, in a new pool."""
        executor = self._executor
        try:
            return await self._hash_in_slot(executor, work, *args)
        except BrokenProcessPool:
            if self._executor is executor:
                log.warning("a password hashing process died; starting new ones")
                executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._new_executor()
        try:
            return await self._hash_in_slot(self._executor, work, *args)
        except BrokenProcessPool:
            raise HashingUnavailable from None

    async def _hash_in_slot(self, executor: Executor, work: Callable[..., Any], *args: Any) -> Any:
        await self._slots.acquire()
        loop = asyncio.get_running_loop()
        try:
            job = executor.submit(work, *args)
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

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash("rotor-dummy-password-for-unknown-users")
        return self._dummy_hash


def argon2_hasher(params: Argon2Params) -> Argon2Hasher:
    return Argon2Hasher(
        time_cost=params.time_cost,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        hash_len=32,
        salt_len=16,
        type=Type.ID,
    )


def _hash_with(argon2: Argon2Hasher, password: str) -> str:
    return argon2.hash(password)


def _verify_with(argon2: Argon2Hasher, stored_hash: str, password: str) -> bool:
    try:
        return argon2.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _lowest_priority() -> None:
    """The calling thread at nice 19 (argon2's lane threads inherit it), so a
    flood of logins cannot starve the event loops that serve /refresh and
    /introspect. On Linux this is the thread's own priority, not the process's."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)


# -- in a hashing process (isolated) ----------------------------------------------

_process_argon2: Argon2Hasher | None = None


def _start_hashing_process(params: Argon2Params, worker: int) -> None:
    """A session of its own, so a kernel with autogroups gives the process a
    group of its own, and that group the lowest weight; then nice 19 for the
    thread that hashes. Where a step is not available, the others still apply.
    Out of the worker's session, nothing that stops the worker's process group
    reaches this process: it is stopped with its worker instead."""
    global _process_argon2
    _die_with(worker)
    with contextlib.suppress(OSError, AttributeError):
        os.setsid()
    with contextlib.suppress(OSError):
        AUTOGROUP.write_text(str(LOWEST_PRIORITY))
    _lowest_priority()
    _process_argon2 = argon2_hasher(params)


def _die_with(worker: int) -> None:
    """Linux: SIGKILL when the worker dies, however it dies (a SIGKILL leaves
    it no time to stop its hashing processes); if it has died already, exit."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != worker:
        os._exit(0)


def _hash_here(password: str) -> str:
    assert _process_argon2 is not None
    return _hash_with(_process_argon2, password)


def _verify_here(stored_hash: str, password: str) -> bool:
    assert _process_argon2 is not None
    return _verify_with(_process_argon2, stored_hash, password)


def password_problem(password: str) -> str | None:
    """Length in Unicode characters (CONTRACT 3.6); nothing is truncated."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"password must be at least {MIN_PASSWORD_CHARS} characters"
    if len(password) > MAX_PASSWORD_CHARS:
        return f"password must be at most {MAX_PASSWORD_CHARS} characters"
    return None
