"""The ceilings, measured in the same run as Rotor:

- framework: the minimal Litestar app on the same uvicorn, same workers, same wrk;
- database: pgbench running Rotor's own rotation statement (ROTATE_SQL) as a
  custom script against seeded rows, `-M prepared -c 32 -j 2 -T N`;
- hash: argon2 verifications per second with Rotor's configured parameters,
  in as many threads as ROTOR_HASH_CONCURRENCY.
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import argon2
import asyncpg

from bench import procs
from bench.seed import FAMILY_COLUMNS, ORIGIN_COLUMNS, ORIGIN_VALUES, SESSION_IP, SESSION_USER_AGENT
from service.config import Argon2Params
from service.db.families import ROTATE_SQL

PGBENCH_ESTIMATE_TPS = 10_000  # only sizes the warm-up's rows: more than 2 cores can do
SUCCESSOR_OFFSET = 10**12


@dataclass(frozen=True, slots=True)
class HashCeiling:
    verifies_per_second: float
    verifies: int
    seconds: float
    threads: int
    time_cost: int
    memory_kib: int
    parallelism: int


def hash_ceiling(params: Argon2Params, threads: int, seconds: float) -> HashCeiling:
    hasher = argon2.PasswordHasher(
        time_cost=params.time_cost, memory_cost=params.memory_kib, parallelism=params.parallelism
    )
    password = secrets.token_hex(16)
    stored = hasher.hash(password)
    started = time.monotonic()
    deadline = started + seconds

    def verify_until_deadline(_: int) -> int:
        count = 0
        while time.monotonic() < deadline:
            hasher.verify(stored, password)
            count += 1
        return count

    with ThreadPoolExecutor(max_workers=threads) as pool:
        verifies = sum(pool.map(verify_until_deadline, range(threads)))
    elapsed = time.monotonic() - started
    return HashCeiling(
        verifies / elapsed,
        verifies,
        elapsed,
        threads,
        params.time_cost,
        params.memory_kib,
        params.parallelism,
    )


@dataclass(frozen=True, slots=True)
class DatabaseCeiling:
    tps: float
    transactions: int
    rotated: int
    latency_ms: float
    seconds: int
    clients: int
    cpu_seconds: dict[str, float]
    wall_seconds: float
    steal_seconds: float

    @property
    def misses(self) -> int:
        """Transactions that found no live token (the seed ran short): cheaper ones."""
        return max(0, self.transactions - self.rotated)


def pgbench_script(client_id: str, idle_ttl: int) -> str:
    """ROTATE_SQL with its parameters bound to pgbench variables and constants,
    one rotation per statement (a batch of one): the presented token is the
    hash of a per-client counter, its successor the hash of the counter plus
    an offset; no grace box, no scope narrowing; the family's last use is the
    seeded sessions' IP and user agent (bench/seed.py), as /refresh writes it."""
    values = {
        1: "ARRAY[sha256(int8send(:i))]",
        2: f"ARRAY['{uuid.UUID(client_id)}'::uuid]",
        3: "ARRAY[NULL::bytea]",
        4: "ARRAY[sha256(int8send(:s))]",
        5: "ARRAY[NULL::text]",
        6: str(idle_ttl),
        7: f"ARRAY['{SESSION_IP}'::inet]",
        8: f"ARRAY['{SESSION_USER_AGENT}'::text]",
        9: "ARRAY[NULL::text]",  # no DPoP proof (an unbound family)
    }

    def bind(match: re.Match[str]) -> str:
        index = int(match.group(1))
        if index not in values:
            raise RuntimeError(f"ROTATE_SQL has an unexpected parameter ${index}")
        return values[index]

    statement = re.sub(r"\$(\d+)", bind, ROTATE_SQL).strip().rstrip(";")
    return "\n".join(
        [
            r"\set n :n + 1",
            r"\set i :base + :client_id * :per_client + :n",
            rf"\set s :i + {SUCCESSOR_OFFSET}",
            statement + ";",
            "",
        ]
    )


SEED_ROTATABLE_SQL = f"""
WITH source AS (
    SELECT i, gen_random_uuid() AS id FROM generate_series($1::bigint, $2::bigint) AS i
), families AS (
    INSERT INTO token_families ({", ".join((*FAMILY_COLUMNS, *ORIGIN_COLUMNS))})
    SELECT id, ($3::uuid[])[1 + i % cardinality($3::uuid[])], $4, 'read write',
           now() + interval '30 days', {ORIGIN_VALUES}
    FROM source
)
INSERT INTO refresh_tokens (token_hash, family_id, generation, expires_at)
SELECT sha256(int8send(i)), id, 1, now() + interval '7 days' FROM source
"""


async def _seed_rotatable(
    url: str, first: int, last: int, user_ids: list[uuid.UUID], client_id: str
) -> int:
    """Rows i in [first, last], token hash sha256(int8send(i)); returns the
    number of successors (generation 2) so far, to count rotations."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(SEED_ROTATABLE_SQL, first, last, user_ids, uuid.UUID(client_id))
        await connection.execute("VACUUM ANALYZE refresh_tokens")
        await connection.execute("VACUUM ANALYZE token_families")
        return await _successors(connection)
    finally:
        await connection.close()


async def _successors(connection: asyncpg.Connection) -> int:
    count: int = await connection.fetchval(
        "SELECT count(*) FROM refresh_tokens WHERE generation = 2"
    )
    return count


async def _count_successors(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        return await _successors(connection)
    finally:
        await connection.close()


@dataclass(frozen=True, slots=True)
class Pgbench:
    binary: str
    url: str
    script: Path
    clients: int
    threads: int
    database_pids: procs.PidSource

    def run(self, seconds: int, base: int, per_client: int) -> tuple[str, procs.Usage]:
        command = [self.binary, "-n", "-M", "prepared", "-c", str(self.clients)]
        command += ["-j", str(self.threads), "-T", str(seconds), "-f", str(self.script)]
        command += ["-D", "n=0", "-D", f"base={base}", "-D", f"per_client={per_client}", self.url]
        generator: list[int] = []
        watch = procs.Sampler({"generator": lambda: generator, "database": self.database_pids})
        watch.start()
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        generator.append(process.pid)
        output, _ = process.communicate(timeout=seconds + 120)
        usage = watch.stop()
        if process.returncode != 0:
            raise RuntimeError(f"pgbench failed:\n{output}")
        return output, usage


def _number(pattern: str, output: str) -> float:
    found = re.search(pattern, output)
    if found is None:
        raise RuntimeError(f"pgbench output lacks {pattern!r}:\n{output}")
    return float(found.group(1))


def database_ceiling(
    bench: Pgbench,
    *,
    user_ids: list[uuid.UUID],
    client_id: str,
    warmup: int,
    seconds: int,
) -> DatabaseCeiling:
    """A warm-up sizes the rows of the measured run: every transaction of the
    measured run should find its own live token (misses are reported)."""
    clients = bench.clients
    warm_per_client = math.ceil(PGBENCH_ESTIMATE_TPS * max(warmup, 1) / clients)
    asyncio.run(_seed_rotatable(bench.url, 1, clients * warm_per_client, user_ids, client_id))
    output, _ = bench.run(max(warmup, 1), 0, warm_per_client)
    warm_tps = _number(r"tps = ([\d.]+)", output)
    per_client = math.ceil(warm_tps * seconds * 1.5 / clients) + 100
    base = clients * warm_per_client
    before = asyncio.run(
        _seed_rotatable(bench.url, base + 1, base + clients * per_client, user_ids, client_id)
    )
    output, usage = bench.run(seconds, base, per_client)
    after = asyncio.run(_count_successors(bench.url))
    return DatabaseCeiling(
        tps=_number(r"tps = ([\d.]+) \(without", output),
        transactions=int(_number(r"actually processed: (\d+)", output)),
        rotated=after - before,
        latency_ms=_number(r"latency average = ([\d.]+) ms", output),
        seconds=seconds,
        clients=clients,
        cpu_seconds={**usage.cpu_seconds, "other": usage.other_cpu_seconds},
        wall_seconds=usage.wall_seconds,
        steal_seconds=usage.machine.steal_seconds,
    )
