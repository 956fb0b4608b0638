"""The long-chain case: one family rotated many times by one client, one request
at a time over one keep-alive connection, as a real client does (each request
presents the refresh token that the previous answer returned); then that
family's next rotations against a fresh family's first ones, taken in turn
(A, B, A, B, ...) so that the machine's drift falls on both alike.

If a rotation's cost grows with the length of its family's chain, family A's
p50 after `build` rotations is above family B's p50 at its start.
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import asyncpg

from bench import procs
from bench.seed import SESSION_USER_AGENT

BLOCK = 1000  # rotations per point of the build-up's curve


class ChainBroken(Exception):
    """A rotation did not answer 200: the chain has no next token."""


@dataclass
class LongChain:
    build: int
    sample: int
    p50_first_ms: float  # family B, rotations 1..sample
    p50_after_ms: float  # family A, rotations build+1..build+sample
    p90_first_ms: float
    p90_after_ms: float
    # p50 per block of BLOCK rotations of the build-up (rotations 1..build of A)
    build_p50_ms: list[float] = field(default_factory=list)
    build_seconds: float = 0.0
    # CPU ms per rotation over the build-up (server, database), from /proc
    build_cpu_ms: dict[str, float] = field(default_factory=dict)
    errors: int = 0
    # refresh_tokens after the run: dead tuples, autovacuums (pg_stat_user_tables)
    table_after: dict[str, int] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.p50_after_ms / self.p50_first_ms if self.p50_first_ms else 0.0


class Client:
    """One keep-alive connection, a JSON POST /refresh at a time."""

    def __init__(self, base_url: str, authorization: str) -> None:
        parts = urlsplit(base_url)
        self._connection = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=10
        )
        self._headers = {
            "Authorization": authorization,
            "Content-Type": "application/json",
            "User-Agent": SESSION_USER_AGENT,
        }

    def rotate(self, token: str) -> tuple[str, float]:
        """The successor and the seconds the rotation took."""
        body = json.dumps({"refresh_token": token})
        started = time.perf_counter()
        self._connection.request("POST", "/refresh", body, self._headers)
        response = self._connection.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise ChainBroken(f"{response.status}: {payload[:200]!r}")
        successor: str = json.loads(payload)["refresh_token"]
        return successor, elapsed

    def close(self) -> None:
        self._connection.close()


def _p(values: list[float], q: int) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0] * 1000
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


async def table_state(url: str) -> dict[str, int]:
    connection = await asyncpg.connect(url)
    try:
        row = await connection.fetchrow(
            "SELECT n_live_tup, n_dead_tup, n_tup_upd, n_tup_hot_upd, autovacuum_count "
            "FROM pg_stat_user_tables WHERE relname = 'refresh_tokens'"
        )
        return {key: int(value) for key, value in dict(row or {}).items()}
    finally:
        await connection.close()


def run(
    base_url: str,
    authorization: str,
    tokens: tuple[str, str],
    *,
    build: int,
    sample: int,
    server: procs.PidSource,
    database: procs.PidSource,
) -> LongChain:
    """Rotate family A `build` times, then A and B in turn `sample` times each."""
    a, b = tokens
    client = Client(base_url, authorization)
    errors = 0
    built: list[float] = []
    first: list[float] = []
    after: list[float] = []
    watch = procs.Sampler({"server": server, "database": database}).start()
    started = time.monotonic()
    try:
        try:
            for _ in range(build):
                a, seconds = client.rotate(a)
                built.append(seconds)
        finally:
            usage = watch.stop()
            build_seconds = time.monotonic() - started
        for _ in range(sample):
            a, seconds = client.rotate(a)
            after.append(seconds)
            b, seconds = client.rotate(b)
            first.append(seconds)
    except ChainBroken:
        errors += 1
    finally:
        client.close()
    blocks = [built[i : i + BLOCK] for i in range(0, len(built), BLOCK)]
    return LongChain(
        build=len(built),
        sample=min(len(first), len(after)),
        p50_first_ms=_p(first, 50),
        p50_after_ms=_p(after, 50),
        p90_first_ms=_p(first, 90),
        p90_after_ms=_p(after, 90),
        build_p50_ms=[_p(block, 50) for block in blocks],
        build_seconds=build_seconds,
        build_cpu_ms={
            group: usage.cpu_seconds.get(group, 0.0) * 1000 / len(built) if built else 0.0
            for group in ("server", "database")
        },
        errors=errors,
    )
