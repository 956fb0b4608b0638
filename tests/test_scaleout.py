"""Rotor scaled out on real parts (CONTRACT 5): three `rotor serve` replicas of
two workers each behind HAProxy, through PgBouncer 1.18 in transaction mode
(ROTOR_DB_POOLER=transaction) or straight at PostgreSQL, both run with the
files `deploy/` ships (tests/scaleout.py).

- exactly-once rotation: 20 simultaneous refreshes of one token through the
  load balancer, 10 rounds, with and without a grace window, pooled and direct;
- a key rotation made through one replica is what every replica signs with
  within 5 s;
- the login limit stays exact across replicas;
- failover: a replica killed (SIGKILL) under refresh load is taken out by
  HAProxy's readiness check, the load goes on, no family is torn, and the
  failed requests are counted and bounded; a replica stopped with SIGTERM
  drains with no failed request;
- PgBouncer restarted under load: 503 with Retry-After while it is down,
  recovery by itself after.

Without pgbouncer or haproxy the module is skipped with one line that names the
install command; with ROTOR_SCALEOUT_TEST=required (.ci/run) it fails instead.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from service.accounts.clients import create_client
from tests import scaleout
from tests.helpers import PASSWORD, app_and_user, basic

REQUIRED = os.environ.get("ROTOR_SCALEOUT_TEST") == "required"
MISSING = scaleout.missing()
if MISSING:  # one line in pytest's summary, the one scripts/test prints
    if REQUIRED:
        pytest.fail(MISSING, pytrace=False)
    pytest.skip(MISSING, allow_module_level=True)

pytestmark = pytest.mark.slow

ROUNDS = 10
CONCURRENT = 20
GRACE = 30
LOAD_CLIENTS = 12
KEY_PROPAGATION = 5.0  # CONTRACT 3.6: a rotation is served by every process within 5 s
SHUTDOWN_DELAY = 3  # above haproxy.cfg's inter 1 s x fall 2
LOGIN_LIMIT = 5


# ---- the parts ----------------------------------------------------------------------


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Not under pytest's tmp_path (mode 0700): PgBouncer runs as another user
    when the suite runs as root, and must read its files and write its log."""
    path = Path(tempfile.mkdtemp(prefix="rotor-scaleout-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def database_name(database_url: str) -> str:
    return urlsplit(database_url).path.lstrip("/")


@dataclass
class Accounts:
    auth: dict[str, str]
    username: str
    admin_auth: dict[str, str]


async def accounts(db: asyncpg.Connection, username: str = "racer") -> Accounts:
    _, auth = await app_and_user(db, username=username)
    admin, admin_secret = await create_client(
        db,
        name="operator",
        grant_types=["client_credentials"],
        scopes=[],
        public=False,
        can_introspect=True,
        is_admin=True,
    )
    assert admin_secret is not None
    return Accounts(auth, username, basic(admin.client_id, admin_secret))


async def login(http: httpx.AsyncClient, url: str, who: Accounts) -> httpx.Response:
    return await http.post(
        f"{url}/token",
        headers=who.auth,
        data={"grant_type": "password", "username": who.username, "password": PASSWORD},
    )


async def torn_families(db: asyncpg.Connection) -> dict[str, int]:
    """What CONTRACT 5 forbids: a spent token with no successor, two live tokens."""
    spent_without_successor = await db.fetchval(
        "SELECT count(*) FROM refresh_tokens t WHERE t.spent_at IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM refresh_tokens s WHERE s.family_id = t.family_id "
        " AND s.generation = t.generation + 1)"
    )
    two_live = await db.fetchval(
        "SELECT count(*) FROM (SELECT family_id FROM refresh_tokens WHERE spent_at IS NULL "
        "GROUP BY family_id HAVING count(*) > 1) AS doubled"
    )
    return {"spent without a successor": spent_without_successor, "two live tokens": two_live}


# ---- exactly-once rotation through the balancer (and the pooler) ---------------------


@pytest.mark.parametrize("pooled", [True, False], ids=["pgbouncer", "direct"])
@pytest.mark.parametrize("grace", [0, GRACE], ids=["grace-0", "grace-30"])
async def test_simultaneous_refreshes_through_the_balancer_rotate_once(
    server_url: str,
    database_url: str,
    db: asyncpg.Connection,
    workdir: Path,
    pooled: bool,
    grace: int,
) -> None:
    who = await accounts(db)
    rounds: list[Counter[int]] = []
    async with (
        scaleout.cluster(
            server_url,
            database_name(database_url),
            workdir,
            pooled=pooled,
            ROTOR_REUSE_GRACE=str(grace),
        ) as parts,
        httpx.AsyncClient(timeout=30) as http,
    ):
        for _ in range(ROUNDS):
            signed_in = await login(http, parts.url, who)
            assert signed_in.status_code == 200, signed_in.text
            token = signed_in.json()["refresh_token"]
            responses = await asyncio.gather(
                *(
                    http.post(
                        f"{parts.url}/refresh", headers=who.auth, json={"refresh_token": token}
                    )
                    for _ in range(CONCURRENT)
                )
            )
            statuses = Counter(response.status_code for response in responses)
            rounds.append(statuses)
            family = await db.fetchrow(
                "SELECT f.revoked_reason, "
                "(SELECT count(*) FROM refresh_tokens r WHERE r.family_id = f.id) AS tokens "
                "FROM token_families f JOIN refresh_tokens t ON t.family_id = f.id "
                "WHERE t.token_hash = sha256(convert_to($1, 'UTF8'))",
                token,
            )
            assert family["tokens"] == 2  # one successor, never a second branch
            if grace == 0:
                assert {r.json()["error"] for r in responses if r.status_code == 400} == {
                    "invalid_grant"
                }
                assert family["revoked_reason"] == "reuse_detected"
            else:
                assert len({r.json()["refresh_token"] for r in responses}) == 1
                assert family["revoked_reason"] is None
        served = await replicas_that_served(parts)
    print(
        f"\nrounds ({'pooled' if pooled else 'direct'}, grace {grace}): {[dict(r) for r in rounds]}"
    )
    if grace == 0:
        assert rounds == [Counter({200: 1, 400: CONCURRENT - 1})] * ROUNDS
    else:
        assert rounds == [Counter({200: CONCURRENT})] * ROUNDS
    assert served == 3  # the balancer really spread them
    assert await torn_families(db) == {"spent without a successor": 0, "two live tokens": 0}


async def replicas_that_served(parts: scaleout.Cluster, path: str = "/refresh") -> int:
    """Replicas whose /metrics count a request to `path` (each process of a
    replica reports the replica's whole count: multiprocess metrics)."""
    served = 0
    async with httpx.AsyncClient(timeout=10) as http:
        for replica in parts.replicas:
            text = (await http.get(f"{replica.url}/metrics")).text
            if any(
                line.startswith("rotor_http_requests_total")
                and f'path="{path}"' in line
                and float(line.rsplit(" ", 1)[1]) > 0
                for line in text.splitlines()
            ):
                served += 1
    return served


# ---- keys and login limits across replicas --------------------------------------------


async def test_a_key_rotated_through_one_replica_is_used_by_all_within_5_seconds(
    server_url: str, database_url: str, db: asyncpg.Connection, workdir: Path
) -> None:
    who = await accounts(db)
    async with (
        scaleout.cluster(server_url, database_name(database_url), workdir) as parts,
        httpx.AsyncClient(timeout=10) as http,
    ):
        first = parts.replicas[0].url
        admin = await http.post(
            f"{first}/token", headers=who.admin_auth, data={"grant_type": "client_credentials"}
        )
        assert admin.status_code == 200, admin.text
        bearer = {"Authorization": f"Bearer {admin.json()['access_token']}"}
        rotated = await http.post(
            f"{first}/admin/keys/rotate", headers=bearer, json={"force": True}
        )
        assert rotated.status_code == 200, rotated.text
        new_kid = rotated.json()["kid"]
        started = time.monotonic()
        seen: dict[str, float] = {}
        while len(seen) < len(parts.replicas) and time.monotonic() - started < 2 * KEY_PROPAGATION:
            for replica in parts.replicas:
                if replica.url in seen:
                    continue
                issued = await http.post(
                    f"{replica.url}/token",
                    headers=who.admin_auth,
                    data={"grant_type": "client_credentials"},
                )
                assert issued.status_code == 200, issued.text
                if kid_of(issued.json()["access_token"]) == new_kid:
                    seen[replica.url] = time.monotonic() - started
            await asyncio.sleep(0.1)
        # Every replica, asked through the balancer, knows the new key's tokens.
        token = (
            await http.post(
                f"{parts.replicas[2].url}/token",
                headers=who.admin_auth,
                data={"grant_type": "client_credentials"},
            )
        ).json()["access_token"]
        active = [
            (
                await http.post(
                    f"{replica.url}/introspect", headers=who.admin_auth, data={"token": token}
                )
            ).json()["active"]
            for replica in parts.replicas
        ]
    print(f"\nkey {new_kid} signed with by each replica after (s): {sorted(seen.values())}")
    assert sorted(seen) == sorted(replica.url for replica in parts.replicas), seen
    assert max(seen.values()) <= KEY_PROPAGATION, seen
    assert active == [True, True, True]


def kid_of(token: str) -> str:
    header = token.split(".", 1)[0]
    decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    kid: str = decoded["kid"]
    return kid


async def test_the_login_limit_is_exact_across_replicas(
    server_url: str, database_url: str, db: asyncpg.Connection, workdir: Path
) -> None:
    who = await accounts(db)
    async with (
        scaleout.cluster(
            server_url,
            database_name(database_url),
            workdir,
            ROTOR_LOGIN_MAX_FAILURES=str(LOGIN_LIMIT),
        ) as parts,
        httpx.AsyncClient(timeout=30) as http,
    ):
        responses = await asyncio.gather(
            *(
                http.post(
                    f"{parts.url}/token",
                    headers=who.auth,
                    data={
                        "grant_type": "password",
                        "username": who.username,
                        "password": f"wrong {n}",
                    },
                )
                for n in range(LOGIN_LIMIT + 1)
            )
        )
        served = await replicas_that_served(parts, "/token")
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [400] * LOGIN_LIMIT + [429]
    assert {r.json()["error"] for r in responses if r.status_code == 400} == {"invalid_grant"}
    counted = await db.fetchval(
        "SELECT count(*) FROM login_failures WHERE subject_kind = 'username' AND NOT pending"
    )
    assert counted == LOGIN_LIMIT
    assert served >= 2


# ---- failover: a replica lost, a replica stopped, the pooler restarted ------------------


@dataclass
class Load:
    """Clients refreshing their own families through the balancer, back to back:
    each presents the token the previous answer returned; a client whose
    request failed signs in again (its family's state is unknown to it)."""

    url: str
    who: Accounts
    outcomes: list[tuple[float, str]] = field(default_factory=list)
    headers_of_failures: list[httpx.Headers] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def _client(self, http: httpx.AsyncClient) -> None:
        token: str | None = None
        while not self._stop.is_set():
            try:
                if token is None:
                    response = await login(http, self.url, self.who)
                else:
                    response = await http.post(
                        f"{self.url}/refresh", headers=self.who.auth, json={"refresh_token": token}
                    )
            except httpx.TransportError as exc:
                self.outcomes.append((time.monotonic(), type(exc).__name__))
                token = None
                await asyncio.sleep(0.05)
                continue
            self.outcomes.append((time.monotonic(), str(response.status_code)))
            if response.status_code == 200:
                token = response.json()["refresh_token"]
            else:
                self.headers_of_failures.append(response.headers)
                token = None
                await asyncio.sleep(0.05)

    @asynccontextmanager
    async def running(self, clients: int = LOAD_CLIENTS) -> AsyncIterator[Load]:
        async with httpx.AsyncClient(timeout=20) as http:
            self._tasks = [asyncio.create_task(self._client(http)) for _ in range(clients)]
            try:
                yield self
            finally:
                self._stop.set()
                await asyncio.gather(*self._tasks)

    def between(self, start: float, end: float) -> Counter[str]:
        return Counter(outcome for at, outcome in self.outcomes if start <= at < end)


async def test_a_replica_killed_under_load_is_taken_out_and_tears_no_family(
    server_url: str, database_url: str, db: asyncpg.Connection, workdir: Path
) -> None:
    who = await accounts(db)
    async with scaleout.cluster(server_url, database_name(database_url), workdir) as parts:
        victim = parts.replicas[1]
        load = Load(parts.url, who)
        async with load.running():
            await asyncio.sleep(2)
            killed_at = time.monotonic()
            victim.kill()
            states = await parts.lb.wait_for(up=2, timeout=10)
            out_at = time.monotonic()
            await asyncio.sleep(2)
            ended_at = time.monotonic()
    before = load.between(0, killed_at)
    during = load.between(killed_at, out_at)
    after = load.between(out_at, ended_at)
    failed = sum(count for outcome, count in during.items() if outcome != "200")
    print(
        f"\nfailover: {out_at - killed_at:.2f} s until HAProxy took the replica out; "
        f"requests before {dict(before)}, during {dict(during)}, after {dict(after)}"
    )
    assert states == {"rotor-1": "UP", "rotor-2": "DOWN", "rotor-3": "UP"}
    assert set(before) == {"200"}
    # Only requests in flight on the killed replica fail: at most one a client.
    assert failed <= LOAD_CLIENTS, during
    assert set(after) == {"200"}, after
    assert after["200"] > 50, after
    assert await torn_families(db) == {"spent without a successor": 0, "two live tokens": 0}


async def test_a_replica_stopped_with_sigterm_drains_with_no_failed_request(
    server_url: str, database_url: str, db: asyncpg.Connection, workdir: Path
) -> None:
    who = await accounts(db)
    async with scaleout.cluster(
        server_url,
        database_name(database_url),
        workdir,
        ROTOR_SHUTDOWN_DELAY=str(SHUTDOWN_DELAY),
    ) as parts:
        leaving = parts.replicas[0]
        load = Load(parts.url, who)
        async with load.running():
            await asyncio.sleep(1.5)
            leaving.signal(signal.SIGTERM)
            assert leaving.process is not None
            code = await asyncio.to_thread(leaving.process.wait, SHUTDOWN_DELAY + 15)
            states = await parts.lb.wait_for(up=2, timeout=10)
            await asyncio.sleep(1)
    outcomes = Counter(outcome for _, outcome in load.outcomes)
    print(f"\nSIGTERM drain: exit {code}, requests {dict(outcomes)}")
    assert code == 0
    assert states == {"rotor-1": "DOWN", "rotor-2": "UP", "rotor-3": "UP"}
    assert set(outcomes) == {"200"}, outcomes
    assert outcomes["200"] > 100, outcomes
    assert await torn_families(db) == {"spent without a successor": 0, "two live tokens": 0}


async def test_pgbouncer_restarted_under_load_gives_503_with_retry_after_then_recovers(
    server_url: str, database_url: str, db: asyncpg.Connection, workdir: Path
) -> None:
    who = await accounts(db)
    async with scaleout.cluster(server_url, database_name(database_url), workdir) as parts:
        assert parts.pgbouncer is not None
        load = Load(parts.url, who)
        async with load.running():
            await asyncio.sleep(1.5)
            stopped_at = time.monotonic()
            parts.pgbouncer.stop()
            await asyncio.sleep(3)
            down = load.between(stopped_at + 1, time.monotonic())
            await parts.pgbouncer.start()
            restarted_at = time.monotonic()
            await parts.lb.wait_for(up=3, timeout=20)
            recovered_at = time.monotonic()
            await asyncio.sleep(1.5)
            ended_at = time.monotonic()
    after = load.between(recovered_at + 0.5, ended_at)
    print(
        f"\npgbouncer restart: down {dict(down)}; "
        f"{recovered_at - restarted_at:.2f} s to all replicas ready; after {dict(after)}"
    )
    # While it is down every answer is a 503 with Retry-After (Rotor's own or,
    # once every replica reports not ready, HAProxy's in the same shape).
    assert set(down) == {"503"}, down
    failures = load.headers_of_failures
    assert failures
    assert {headers.get("retry-after") for headers in failures} == {"1"}
    assert set(after) == {"200"}, after
    assert after["200"] > 30, after
    assert recovered_at - restarted_at < 15
    assert await torn_families(db) == {"spent without a successor": 0, "two live tokens": 0}


# ---- the commands through the pooler ----------------------------------------------------


def rotor_command(*args: str, database_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    from tests.helpers import server_env

    return subprocess.run(
        [str(scaleout.ROTOR_SCRIPT), *args],
        env={**server_env(database_url), "ROTOR_DB_POOLER": "transaction", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_every_command_but_migrate_works_through_pgbouncer(
    server_url: str, database_url: str, db: asyncpg.Connection, workdir: Path
) -> None:
    async with scaleout.cluster(
        server_url, database_name(database_url), workdir, replicas=1
    ) as parts:
        assert parts.pgbouncer is not None
        pooled = parts.pgbouncer.url(database_name(database_url))
        client = rotor_command(
            "create-client", "--name", "cli", "--grant", "client_credentials", database_url=pooled
        )
        user = rotor_command(
            "create-user", "--username", "cli-user", database_url=pooled, ROTOR_PASSWORD=PASSWORD
        )
        rotated = rotor_command("rotate-keys", "--force", database_url=pooled)
        pruned = rotor_command("prune", database_url=pooled)
        migrate = rotor_command("migrate", database_url=pooled)
        states = await parts.lb.states()
    assert (client.returncode, user.returncode, rotated.returncode, pruned.returncode) == (
        0,
        0,
        0,
        0,
    ), (client.stderr, user.stderr, rotated.stderr, pruned.stderr)
    assert await db.fetchval("SELECT count(*) FROM clients WHERE name = 'cli'") == 1
    assert await db.fetchval("SELECT count(*) FROM users WHERE username = 'cli-user'") == 1
    assert json.loads(pruned.stdout) == {
        "families": 0,
        "revoked_jtis": 0,
        "login_failures": 0,
        "keys_removed": 0,
    }
    assert migrate.returncode == 2
    assert migrate.stderr.startswith(
        "rotor: configuration error: ROTOR_DB_POOLER: rotor migrate needs a direct connection"
    )
    assert states == {"rotor-1": "UP", "rotor-2": "DOWN", "rotor-3": "DOWN"}
