"""Human passwords: argon2id off the event loop, bounded concurrency, the dummy verify
for unknown users, transparent rehash, and the length rule (CONTRACT 3.2, 3.6)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import argon2
import asyncpg
import pytest

from service.accounts.passwords import PasswordHasher, password_problem
from service.config import Argon2Params, Settings
from tests.conftest import TEST_ARGON2
from tests.helpers import PASSWORD, Rotor

PRODUCTION = Argon2Params()
REPO = Path(__file__).resolve().parent.parent


def prefix(params: Argon2Params) -> str:
    return f"$argon2id$v=19$m={params.memory_kib},t={params.time_cost},p={params.parallelism}$"


@pytest.fixture(params=[False, True], ids=["threads", "isolated"])
async def hasher(request: pytest.FixtureRequest) -> AsyncIterator[PasswordHasher]:
    """Both ways of hashing: threads of this process, and processes of their own
    (what served workers use)."""
    hasher = PasswordHasher(TEST_ARGON2, 2, isolated=request.param)
    yield hasher
    hasher.close()


@pytest.fixture
async def threaded() -> AsyncIterator[PasswordHasher]:
    """Threads only: argon2-cffi's methods can be counted in this process."""
    hasher = PasswordHasher(TEST_ARGON2, 2)
    yield hasher
    hasher.close()


class Counting:
    """Wraps an argon2-cffi method: counts calls, tracks how many run at once."""

    def __init__(self, original: Callable[..., Any], hold: float = 0.0) -> None:
        self.original = original
        self.hold = hold
        self.calls: list[tuple[Any, ...]] = []
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()

    def method(self) -> Callable[..., Any]:
        """A plain function, so it binds like the method it replaces."""

        def wrapper(this: argon2.PasswordHasher, *args: Any) -> Any:
            return self(this, *args)

        return wrapper

    def __call__(self, this: argon2.PasswordHasher, *args: Any) -> Any:
        with self._lock:
            self.calls.append(args)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            if self.hold:
                # Widens the window in which overlapping calls would be seen; not a wait.
                time.sleep(self.hold)
            return self.original(this, *args)
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture
def counted_verify(monkeypatch: pytest.MonkeyPatch) -> Counting:
    counter = Counting(argon2.PasswordHasher.verify)
    monkeypatch.setattr(argon2.PasswordHasher, "verify", counter.method())
    return counter


# --- hash and verify -----------------------------------------------------------------------


async def test_hash_then_verify(hasher: PasswordHasher) -> None:
    stored = await hasher.hash(PASSWORD)
    assert await hasher.verify(stored, PASSWORD) is True


async def test_wrong_password_is_false(hasher: PasswordHasher) -> None:
    stored = await hasher.hash(PASSWORD)
    assert await hasher.verify(stored, PASSWORD + "!") is False


async def test_garbage_stored_hash_is_false(hasher: PasswordHasher) -> None:
    assert await hasher.verify("not an argon2 hash", PASSWORD) is False


async def test_hash_is_argon2id_with_the_configured_parameters(hasher: PasswordHasher) -> None:
    assert (await hasher.hash(PASSWORD)).startswith(prefix(TEST_ARGON2))


async def test_unknown_user_is_false(hasher: PasswordHasher) -> None:
    assert await hasher.verify(None, PASSWORD) is False


async def test_unknown_user_spends_one_real_verify(
    threaded: PasswordHasher, counted_verify: Counting
) -> None:
    await threaded.verify(None, PASSWORD)
    # One argon2 verify of the presented password against a hash of this hasher's own
    # parameters: the same work as for a known user.
    assert [
        (args[0].startswith(prefix(TEST_ARGON2)), args[1]) for args in counted_verify.calls
    ] == [(True, PASSWORD)]


async def test_known_user_spends_one_verify(
    threaded: PasswordHasher, counted_verify: Counting
) -> None:
    stored = await threaded.hash(PASSWORD)
    await threaded.verify(stored, "wrong password")
    assert len(counted_verify.calls) == 1


async def test_needs_rehash_for_other_parameters(hasher: PasswordHasher) -> None:
    other = argon2.PasswordHasher(time_cost=2, memory_cost=16384, parallelism=1).hash(PASSWORD)
    assert hasher.needs_rehash(other) is True


async def test_no_rehash_for_own_parameters(hasher: PasswordHasher) -> None:
    assert hasher.needs_rehash(await hasher.hash(PASSWORD)) is False


def test_production_default_parameters() -> None:
    assert (PRODUCTION.time_cost, PRODUCTION.memory_kib, PRODUCTION.parallelism) == (3, 65536, 4)


def test_settings_use_the_production_parameters_by_default() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u@h/d",
            "ROTOR_SECRET": "A" * 43,
            "ROTOR_ISSUER": "https://auth.example.com",
        }
    )
    assert settings.argon2 == Argon2Params(time_cost=3, memory_kib=65536, parallelism=4)


async def test_production_hash_carries_the_production_parameters() -> None:
    hasher = PasswordHasher(PRODUCTION, 1)
    try:
        stored = await hasher.hash(PASSWORD)
    finally:
        hasher.close()
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


# --- concurrency and the event loop --------------------------------------------------------


async def test_at_most_concurrency_hashes_run_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    counter = Counting(argon2.PasswordHasher.hash, hold=0.05)
    monkeypatch.setattr(argon2.PasswordHasher, "hash", counter.method())
    hasher = PasswordHasher(TEST_ARGON2, 2)
    try:
        await asyncio.gather(*(hasher.hash(f"password {i}") for i in range(10)))
    finally:
        hasher.close()
    assert (len(counter.calls), counter.max_running) == (10, 2)


@pytest.mark.parametrize("isolated", [False, True], ids=["threads", "isolated"])
async def test_hashing_does_not_block_the_event_loop(isolated: bool) -> None:
    """A ticker keeps running while production-strength hashes run: the longest pause
    between its ticks is far shorter than the time the hashes took."""
    hasher = PasswordHasher(PRODUCTION, 2, isolated=isolated)
    await hasher.hash("the processes start before the ticker")
    ticks: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    try:
        started = time.perf_counter()
        await asyncio.gather(*(hasher.hash(f"password {i}") for i in range(2)))
        finished = time.perf_counter()
    finally:
        stop.set()
        await task
        hasher.close()
    during = [t for t in ticks if started <= t <= finished]
    longest_pause = max(b - a for a, b in zip([started, *during], [*during, finished], strict=True))
    assert longest_pause < (finished - started) / 4, (longest_pause, finished - started)


# --- password length -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "accepted"),
    [
        pytest.param("a" * 7, False, id="7"),
        pytest.param("a" * 8, True, id="8"),
        pytest.param("a" * 1024, True, id="1024"),
        pytest.param("a" * 1025, False, id="1025"),
        pytest.param("\U0001f600" * 8, True, id="8-emoji"),
        pytest.param("\U0001f600" * 7, False, id="7-emoji"),
        pytest.param("\u00e9" * 1024, True, id="1024-two-byte-chars"),
        pytest.param("\U0001f600" * 1025, False, id="1025-emoji"),
        pytest.param("", False, id="empty"),
    ],
)
def test_password_length_counts_characters(password: str, accepted: bool) -> None:
    assert (password_problem(password) is None) == accepted


# --- through HTTP --------------------------------------------------------------------------


async def test_login_rehashes_a_hash_with_other_parameters(
    rotor: Rotor, db: asyncpg.Connection
) -> None:
    client = await rotor.client()
    old_hash = argon2.PasswordHasher(time_cost=2, memory_cost=16384, parallelism=1).hash(PASSWORD)
    user_id = await rotor.user(password_hash=old_hash)
    before = await db.fetchval("SELECT password_changed_at FROM users WHERE id = $1::uuid", user_id)
    response = await rotor.login(client)
    row = await db.fetchrow(
        "SELECT password_hash, password_changed_at FROM users WHERE id = $1::uuid", user_id
    )
    assert (
        response.status_code,
        row["password_hash"].startswith(prefix(rotor.settings.argon2)),
        argon2.PasswordHasher().verify(row["password_hash"], PASSWORD),
        row["password_changed_at"],
    ) == (200, True, True, before), response.text


async def test_login_keeps_a_hash_with_current_parameters(
    rotor: Rotor, db: asyncpg.Connection
) -> None:
    client = await rotor.client()
    current = argon2.PasswordHasher(
        time_cost=TEST_ARGON2.time_cost,
        memory_cost=TEST_ARGON2.memory_kib,
        parallelism=TEST_ARGON2.parallelism,
    ).hash(PASSWORD)
    user_id = await rotor.user(password_hash=current)
    response = await rotor.login(client)
    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1::uuid", user_id)
    assert (response.status_code, stored) == (200, current), response.text


async def test_failed_login_does_not_rehash(rotor: Rotor, db: asyncpg.Connection) -> None:
    client = await rotor.client()
    old_hash = argon2.PasswordHasher(time_cost=2, memory_cost=16384, parallelism=1).hash(PASSWORD)
    user_id = await rotor.user(password_hash=old_hash)
    response = await rotor.login(client, password="not the password")
    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1::uuid", user_id)
    assert (response.status_code, response.json()["error"], stored) == (
        400,
        "invalid_grant",
        old_hash,
    )


async def test_login_of_unknown_user_spends_one_verify(
    rotor: Rotor, counted_verify: Counting
) -> None:
    client = await rotor.client()
    response = await rotor.login(client, username="nobody")
    assert (response.status_code, response.json()["error"], len(counted_verify.calls)) == (
        400,
        "invalid_grant",
        1,
    )


async def test_a_cancelled_wait_keeps_the_slot_until_its_hash_ends() -> None:
    """A request cancelled by its deadline must not free its slot while its hash
    still runs: otherwise more hashes than `concurrency` would run at once."""
    import threading

    from service.accounts.passwords import PasswordHasher as Hasher
    from service.config import Argon2Params

    hasher = Hasher(Argon2Params(time_cost=1, memory_kib=8192, parallelism=1), 1)
    release, running = threading.Event(), threading.Event()
    order: list[str] = []

    def slow() -> str:
        running.set()
        release.wait(10)
        order.append("first ended")
        return "first"

    def second() -> str:
        order.append("second started")
        return "second"

    first = asyncio.create_task(hasher._run(slow))
    await asyncio.to_thread(running.wait, 10)
    first.cancel()
    follower = asyncio.create_task(hasher._run(second))
    await asyncio.sleep(0.2)
    assert order == []  # the slot is still held by the cancelled request's hash
    release.set()
    assert await follower == "second"
    assert order == ["first ended", "second started"]
    hasher.close()


async def test_waiting_for_a_hash_does_not_spend_the_database_deadline() -> None:
    """ROTOR_DB_TIMEOUT bounds waits for the database, not the hashing queue."""
    import threading
    import time

    from service.accounts.passwords import PasswordHasher as Hasher
    from service.config import Argon2Params
    from service.deadline import Deadlines, request_deadline

    hasher = Hasher(Argon2Params(time_cost=1, memory_kib=8192, parallelism=1), 1)
    release = threading.Event()

    def slow() -> str:
        release.wait(5)
        return "hashed"

    deadlines = Deadlines(0.3, resolution=0.02)
    deadline = deadlines.start()
    token = request_deadline.set(deadline)
    threading.Timer(0.6, release.set).start()
    started = time.monotonic()
    assert await hasher._run(slow) == "hashed"  # outlives the 0.3 s deadline
    assert time.monotonic() - started >= 0.5
    # The deadline is back in force, with what was left of it.
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(2)
    assert time.monotonic() - started < 1.5
    assert deadline.was_hit()
    deadlines.finish(deadline)
    request_deadline.reset(token)
    hasher.close()


async def test_a_full_hash_queue_is_refused_at_once() -> None:
    import threading

    from service.accounts.passwords import MAX_WAITING_PER_SLOT, HashQueueFull
    from service.accounts.passwords import PasswordHasher as Hasher
    from service.config import Argon2Params

    hasher = Hasher(Argon2Params(time_cost=1, memory_kib=8192, parallelism=1), 1)
    release = threading.Event()
    waiting = [
        asyncio.create_task(hasher._run(release.wait, 5)) for _ in range(MAX_WAITING_PER_SLOT)
    ]
    await asyncio.sleep(0.05)
    with pytest.raises(HashQueueFull):
        await hasher._run(release.wait, 5)
    release.set()
    assert await asyncio.gather(*waiting) == [True] * MAX_WAITING_PER_SLOT
    hasher.close()


# --- isolated hashing (served workers) -------------------------------------------------------


def hashing_processes(parent: int | None = None) -> set[int]:
    """The children of `parent` (default: this process) that run a
    multiprocessing worker (the hashing processes; not multiprocessing's
    resource tracker)."""
    found = set()
    me = os.getpid() if parent is None else parent
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")
        )
        if parent == me and b"spawn_main" in command:
            found.add(int(entry.name))
    return found


def autogroup_of(pid: str) -> tuple[str, str] | None:
    """(group, nice) from /proc/PID/autogroup, or None where no autogroup
    applies: no such file, or a process in the root group, for which the
    kernel prints nothing (PID 1 here, and a test run in init's session, as
    in CI)."""
    try:
        words = Path(f"/proc/{pid}/autogroup").read_text().split()
    except OSError:
        return None
    return (words[0], words[2]) if len(words) == 3 else None


needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")


@needs_proc
async def test_isolated_hashing_runs_in_sessions_of_its_own_at_the_lowest_priority() -> None:
    before = hashing_processes()
    hasher = PasswordHasher(TEST_ARGON2, 2, isolated=True)
    try:
        hasher.start()
        await asyncio.gather(hasher.hash(PASSWORD), hasher.hash(PASSWORD))
        started = hashing_processes() - before

        def facts() -> dict[int, tuple[bool, int]]:
            return {
                pid: (
                    os.getsid(pid) == pid,  # a session leader: a session (an autogroup) of its own
                    os.getpriority(os.PRIO_PROCESS, pid),
                )
                for pid in started
            }

        expected = dict.fromkeys(started, (True, 19))
        assert await settled(facts, expected) == expected
        assert len(started) == 2
        mine = autogroup_of("self")
        seen = [autogroup_of(str(pid)) for pid in started]
        if seen != [None, None]:  # the kernel groups the hashing processes by session
            assert None not in seen
            mine_name = mine[0] if mine else None
            assert [(g[0] != mine_name, g[1]) for g in seen if g] == [(True, "19")] * 2
    finally:
        hasher.close()


@needs_proc
async def test_a_killed_hashing_process_is_replaced_and_the_login_still_verifies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = hashing_processes()
    hasher = PasswordHasher(TEST_ARGON2, 1, isolated=True)
    try:
        stored = await hasher.hash(PASSWORD)
        (victim,) = hashing_processes() - before
        os.kill(victim, signal.SIGKILL)
        with caplog.at_level(logging.WARNING, logger="rotor.passwords"):
            verified = await hasher.verify(stored, PASSWORD)
        replacement = hashing_processes() - before - {victim}
        assert (verified, len(replacement)) == (True, 1)
        assert "a password hashing process died; starting new ones" in caplog.messages
        assert await hasher.verify(stored, "not the password") is False
    finally:
        hasher.close()


async def test_a_pool_that_breaks_again_is_answered_as_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from concurrent.futures.process import BrokenProcessPool

    from service.accounts.passwords import HashingUnavailable

    hasher = PasswordHasher(TEST_ARGON2, 1, isolated=True)
    attempts: list[object] = []

    async def broken(executor: object, *_: object) -> None:
        attempts.append(executor)
        raise BrokenProcessPool("a child process terminated abruptly")

    monkeypatch.setattr(hasher, "_hash_in_slot", broken)
    try:
        with pytest.raises(HashingUnavailable):
            await hasher.hash(PASSWORD)
    finally:
        hasher.close()
    # Tried twice, the second time in a new pool.
    assert len(attempts) == 2
    assert attempts[0] is not attempts[1]


@pytest.mark.parametrize(
    ("problem", "description"),
    [
        ("HashQueueFull", "too many logins in progress; retry shortly"),
        ("HashingUnavailable", "password hashing is unavailable; retry shortly"),
    ],
)
async def test_no_hash_now_is_503_with_retry_after(
    rotor: Rotor, monkeypatch: pytest.MonkeyPatch, problem: str, description: str
) -> None:
    from service.accounts import passwords

    async def refuse(*_: object) -> bool:
        raise getattr(passwords, problem)

    client = await rotor.client()
    await rotor.user()
    monkeypatch.setattr(PasswordHasher, "verify", refuse)
    response = await rotor.login(client)
    assert (
        response.status_code,
        response.json(),
        response.headers.get("retry-after"),
        response.headers.get("cache-control"),
    ) == (
        503,
        {"error": "temporarily_unavailable", "error_description": description},
        "1",
        "no-store",
    )


@needs_proc
async def test_a_served_worker_hashes_in_processes_of_its_own(
    settings: Settings, db: asyncpg.Connection
) -> None:
    from litestar.testing import AsyncTestClient

    from service.app import create_asgi

    before = hashing_processes()
    async with AsyncTestClient(create_asgi(settings, served=True)) as http:  # type: ignore[arg-type]
        served = Rotor(http, settings, db)
        client = await served.client()
        await served.user()
        ok = await served.login(client)
        wrong = await served.login(client, password="not the password")
        started = hashing_processes() - before
        priorities = await settled(
            lambda: {pid: os.getpriority(os.PRIO_PROCESS, pid) for pid in started},
            dict.fromkeys(started, 19),
        )
    assert (ok.status_code, wrong.status_code, wrong.json()["error"]) == (200, 400, "invalid_grant")
    assert len(started) == settings.hash_concurrency
    assert priorities == dict.fromkeys(started, 19)


T = TypeVar("T")


async def settled(read: Callable[[], T], expected: T, within: float = 30.0) -> T:
    """What `read` returns once it is `expected`, or at the deadline. A pool's
    processes start together, but one that has not finished booting (spawn
    imports the modules first, slowly on a loaded machine) has not yet entered
    its session nor lowered its priority, though its sibling already hashes."""
    deadline = time.monotonic() + within
    while True:
        value = read()
        if value == expected or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


HASH_THEN_WAIT = """
import asyncio, time
from service.accounts.passwords import PasswordHasher
from service.config import Argon2Params

async def main():
    params = Argon2Params(time_cost=1, memory_kib=8192, parallelism=1)
    hasher = PasswordHasher(params, 2, isolated=True)
    hasher.start()
    await asyncio.gather(hasher.hash("password 1"), hasher.hash("password 2"))
    print("hashed", flush=True)
    time.sleep(60)

asyncio.run(main())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_hashing_processes_die_with_their_worker_even_by_sigkill() -> None:
    """They run in sessions of their own, out of reach of a signal to the worker's
    process group: a worker killed outright must not leave them behind."""
    worker = subprocess.Popen(
        [sys.executable, "-c", HASH_THEN_WAIT], stdout=subprocess.PIPE, cwd=REPO
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline() == b"hashed\n"
        children = hashing_processes(worker.pid)
        assert len(children) == 2
    finally:
        worker.kill()
        worker.wait()
    deadline = time.monotonic() + 10
    while any(map(alive, children)) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in children if alive(pid)]
    for pid in left:  # the test failed: do not leave them behind either
        os.kill(pid, signal.SIGKILL)
    assert left == []


def alive(pid: int) -> bool:
    """Running or asleep: not gone, and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
