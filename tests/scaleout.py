"""Real PgBouncer, HAProxy and Rotor replicas on 127.0.0.1, each run with the
file that `deploy/` ships, for tests/test_scaleout.py and the bench's
`--topology`.

PgBouncer reads `deploy/pgbouncer/pgbouncer.ini` through `%include`, from a
small file of ours that names the test's database and sets the port, trust
authentication and the log file: every pooling setting is the shipped one.
HAProxy reads `deploy/haproxy/haproxy.cfg` as it is, with its addresses from
the environment (ROTOR_LB_BIND, ROTOR_LB_STATS_BIND, ROTOR_REPLICA_1..3).

`python -m tests.scaleout` prints the one line that says the scale-out tests
cannot run and what installs what they need, or nothing (exit 0 either way).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
PGBOUNCER_INI = ROOT / "deploy" / "pgbouncer" / "pgbouncer.ini"
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
ROTOR_SCRIPT = Path(sys.executable).with_name("rotor")
INSTALL = "apt-get update && apt-get install -y pgbouncer haproxy"
REPLICA_SLOTS = 3  # servers named in haproxy.cfg
# Where haproxy.cfg's unused slots point: nothing listens on port 1, so the
# health check marks them down and HAProxy never sends them a request.
NOWHERE = "127.0.0.1:1"


def program(name: str) -> str | None:
    """A Debian package's daemon: on PATH, or in /usr/sbin (not on every PATH)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = Path("/usr/sbin") / name
    return str(candidate) if os.access(candidate, os.X_OK) else None


def missing() -> str | None:
    """None when the scale-out tests can run; else the line saying they did not."""
    lacking = [name for name in ("pgbouncer", "haproxy") if program(name) is None]
    if not lacking:
        return None
    return (
        f"scale-out tests (tests/test_scaleout.py) did not run: missing "
        f"{' and '.join(lacking)}; install with: {INSTALL}"
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not listen on {port}") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@dataclass(frozen=True)
class Postgres:
    """Where PostgreSQL listens: a host and port, or a socket directory."""

    host: str
    port: int
    user: str

    @classmethod
    def of(cls, url: str) -> Postgres:
        parts = urlsplit(url.replace("postgresql+asyncpg://", "postgresql://"))
        query = parse_qs(parts.query)
        host = parts.hostname or query.get("host", ["127.0.0.1"])[0]
        port = parts.port or int(query.get("port", ["5432"])[0])
        return cls(unquote(host), port, unquote(parts.username or "postgres"))

    def pgbouncer_user(self) -> str | None:
        """PgBouncer refuses to run as root; run as root, it takes `-u`: the owner
        of PostgreSQL's socket directory (who can reach the socket), else nobody."""
        if os.geteuid() != 0:
            return None
        if self.host.startswith("/"):
            return pwd.getpwuid(os.stat(self.host).st_uid).pw_name
        return "nobody"


@dataclass
class PgBouncer:
    postgres: Postgres
    databases: list[str]
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"postgresql://{self.postgres.user}@127.0.0.1:{self.port}/{database}"

    def _write_config(self) -> Path:
        user = self.postgres.pgbouncer_user()
        self.workdir.mkdir(parents=True, exist_ok=True)
        userlist = self.workdir / "userlist.txt"
        userlist.write_text(f'"{self.postgres.user}" ""\n')
        server = f"host={self.postgres.host} port={self.postgres.port}"
        lines = ["[databases]"]
        lines += [f"{name} = {server} dbname={name}" for name in self.databases]
        lines += [
            "[pgbouncer]",
            f"%include {PGBOUNCER_INI}",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "auth_type = trust",
            f"auth_file = {userlist}",
            f"logfile = {self.workdir / 'pgbouncer.log'}",
            f"pidfile = {self.workdir / 'pgbouncer.pid'}",
        ]
        config = self.workdir / "pgbouncer.ini"
        config.write_text("\n".join(lines) + "\n")
        if user is not None:
            entry = pwd.getpwnam(user)
            for path in (self.workdir, userlist, config):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        return config

    async def start(self) -> None:
        config = self._write_config()
        user = self.postgres.pgbouncer_user()
        pgbouncer = program("pgbouncer")
        assert pgbouncer is not None, missing()
        command = [pgbouncer, *(["-u", user] if user else []), str(config)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        await wait_for_port(self.port, self.process, "pgbouncer")

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def log(self) -> str:
        path = self.workdir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class Replica:
    """One `rotor serve` process, its log in a file (a pipe left unread would
    stop it once full)."""

    database_url: str
    env: dict[str, str]
    workdir: Path
    workers: int = 2
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> None:
        from tests.helpers import server_env

        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / f"rotor-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            [str(ROTOR_SCRIPT), "serve", "--port", str(self.port), "--workers", str(self.workers)],
            env=server_env(self.database_url, **self.env),
            stdout=subprocess.DEVNULL,
            stderr=log,
            # Its own process group: the replica is the server and its workers,
            # and losing it (kill) means losing all of them, as a container would.
            start_new_session=True,
        )
        log.close()

    async def ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=5) as http:
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(f"rotor serve exited: {self.log()[-2000:]}")
                try:
                    if (await http.get(f"{self.url}/health/ready")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.url} did not become ready")
                await asyncio.sleep(0.1)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL to the whole replica: the server process and its workers."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # a worker left behind

    def log(self) -> str:
        path = self.workdir / f"rotor-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class HAProxy:
    replicas: list[str]
    workdir: Path
    port: int = field(default_factory=free_port)
    stats_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        assert len(self.replicas) <= REPLICA_SLOTS
        slots = [*self.replicas, *[NOWHERE] * (REPLICA_SLOTS - len(self.replicas))]
        env = {
            **os.environ,
            "ROTOR_LB_BIND": f"127.0.0.1:{self.port}",
            "ROTOR_LB_STATS_BIND": f"127.0.0.1:{self.stats_port}",
            **{f"ROTOR_REPLICA_{i}": address for i, address in enumerate(slots, 1)},
        }
        haproxy = program("haproxy")
        assert haproxy is not None, missing()
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "haproxy.log").open("ab")
        self.process = subprocess.Popen(
            [haproxy, "-db", "-f", str(HAPROXY_CFG)], env=env, stdout=log, stderr=log
        )
        log.close()
        await wait_for_port(self.port, self.process, "haproxy")
        await self.wait_for(up=len(self.replicas))

    async def states(self) -> dict[str, str]:
        """Each replica slot's state as HAProxy sees it (UP, DOWN, ...)."""
        async with httpx.AsyncClient(timeout=5) as http:
            page = await http.get(f"http://127.0.0.1:{self.stats_port}/stats;csv")
        rows = csv.DictReader(io.StringIO(page.text.lstrip("# ")))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row["pxname"] == "rotor" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    async def wait_for(self, *, up: int, timeout: float = 30) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            states = await self.states()
            if sum(state == "UP" for state in states.values()) == up and all(
                state in ("UP", "DOWN") for state in states.values()
            ):
                return states
            if time.monotonic() > deadline:
                raise AssertionError(f"HAProxy's replicas never settled at {up} up: {states}")
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


@dataclass
class Cluster:
    """Replicas, behind HAProxy (`lb`) or asked directly, through PgBouncer
    (`pgbouncer`) or straight at PostgreSQL."""

    replicas: list[Replica] = field(default_factory=list)
    lb: HAProxy | None = None
    pgbouncer: PgBouncer | None = None

    @property
    def url(self) -> str:
        """Where clients send requests: the balancer, else the one replica."""
        return self.lb.url if self.lb is not None else self.replicas[0].url

    def proxy_pids(self) -> list[int]:
        return [
            part.process.pid
            for part in (self.pgbouncer, self.lb)
            if part is not None and part.process is not None
        ]

    def stop(self) -> None:
        if self.lb is not None:
            self.lb.stop()
        for replica in self.replicas:
            replica.stop()
        if self.pgbouncer is not None:
            self.pgbouncer.stop()


async def start(
    postgres_url: str,
    database: str,
    workdir: Path,
    *,
    replicas: int = 3,
    pooled: bool = True,
    balanced: bool = True,
    workers: int = 2,
    own_issuer: bool = False,
    **env: str,
) -> Cluster:
    """`replicas` Rotor processes behind HAProxy (`balanced`; else one replica),
    through PgBouncer in transaction mode (`pooled`) or straight at PostgreSQL.
    With `own_issuer` the issuer is the URL clients use (else the tests' one).
    What started is stopped again if a later part fails to start."""
    assert balanced or replicas == 1
    parts = Cluster()
    if balanced:
        parts.lb = HAProxy([], workdir / "haproxy")
    try:
        if pooled:
            parts.pgbouncer = PgBouncer(
                Postgres.of(postgres_url), [database], workdir / "pgbouncer"
            )
            await parts.pgbouncer.start()
            url = parts.pgbouncer.url(database)
            env = {"ROTOR_DB_POOLER": "transaction", **env}
        else:
            from tests.helpers import database_url_for

            url = database_url_for(postgres_url, database)
        env = {"ROTOR_TRUSTED_PROXIES": "127.0.0.1", **env}
        for _ in range(replicas):
            replica = Replica(url, dict(env), workdir / "replicas", workers=workers)
            if own_issuer:
                replica.env["ROTOR_ISSUER"] = parts.lb.url if parts.lb else replica.url
            parts.replicas.append(replica)
            replica.start()
        await asyncio.gather(*(replica.ready() for replica in parts.replicas))
        if parts.lb is not None:
            parts.lb.replicas = [replica.address for replica in parts.replicas]
            await parts.lb.start()
    except BaseException:
        parts.stop()
        raise
    return parts


@asynccontextmanager
async def cluster(
    postgres_url: str, database: str, workdir: Path, **options: Any
) -> AsyncIterator[Cluster]:
    """`start`'s cluster, stopped on the way out."""
    parts = await start(postgres_url, database, workdir, **options)
    try:
        yield parts
    finally:
        parts.stop()


def main() -> int:
    line = missing()
    if line:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
