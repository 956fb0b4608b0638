"""The PostgreSQL the bench runs on: DATABASE_URL, or an embedded one (pgserver)
in a temporary directory; a fresh database per run, migrated, dropped at the end."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import asyncpg

from bench import procs
from service.db.migrate import upgrade


def database_url_for(server_url: str, name: str) -> str:
    """The same server, another database (works for host:port and socket URLs)."""
    parts = urlsplit(server_url.replace("postgresql+asyncpg://", "postgresql://"))
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def socket_dir(url: str) -> str | None:
    hosts = parse_qs(urlsplit(url).query).get("host", [])
    return hosts[0] if hosts else None


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return socket_dir(url) is not None or parts.hostname in (None, "", "localhost", "127.0.0.1")


async def admin(server_url: str, sql: str) -> None:
    connection = await asyncpg.connect(database_url_for(server_url, "postgres"))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def setting(server_url: str, name: str) -> str:
    connection = await asyncpg.connect(database_url_for(server_url, "postgres"))
    try:
        value: str = await connection.fetchval(f"SHOW {name}")
        return value
    finally:
        await connection.close()


def postmaster_pid(data_directory: Path) -> int:
    return int((data_directory / "postmaster.pid").read_text().split()[0])


@dataclass
class Postgres:
    """A server URL (any database on it) and where its processes are, for the CPU split."""

    url: str
    embedded: Any = None
    home: Path | None = None

    @classmethod
    def start(cls) -> Postgres:
        url = os.environ.get("DATABASE_URL", "").strip()
        if url:
            return cls(url.replace("postgresql+asyncpg://", "postgresql://"))
        import pgserver

        home = Path(tempfile.mkdtemp(prefix="rotor-bench-pg-"))
        server = pgserver.get_server(home / "pgdata", cleanup_mode="delete")  # type: ignore[attr-defined,unused-ignore]
        return cls(str(server.get_uri()), server, home)

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.cleanup()
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)

    def pids(self) -> procs.PidSource:
        """The postmaster and its children; for an external server on this machine,
        its postmaster's tree when its data directory is readable (else every
        `postgres` process: another cluster's work counts too); for a remote
        one, nothing."""
        if self.home is not None:
            return procs.tree(postmaster_pid(self.home / "pgdata"))
        if not is_local(self.url):
            return lambda: []
        try:
            directory = asyncio.run(setting(self.url, "data_directory"))
            return procs.tree(postmaster_pid(Path(directory)))
        except (OSError, ValueError, IndexError, asyncpg.PostgresError):
            return procs.named("postgres")

    def create_database(self, prefix: str, template: str | None = None) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        clause = f' TEMPLATE "{template}"' if template else ""
        asyncio.run(admin(self.url, f'CREATE DATABASE "{name}"{clause}'))
        return name

    def create_migrated(self, prefix: str) -> str:
        name = self.create_database(prefix)
        upgrade(database_url_for(self.url, name))
        return name

    def drop_database(self, name: str) -> None:
        asyncio.run(admin(self.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def checkpoint(self) -> str | None:
        """CHECKPOINT, so the writes of the set-up (minted tokens, copies of the
        database) are on disk before a measured window, not flushed inside it.
        None when done; else why not (the role may lack pg_checkpoint)."""
        try:
            asyncio.run(admin(self.url, "CHECKPOINT"))
        except asyncpg.PostgresError as exc:
            return f"CHECKPOINT before the loads failed: {type(exc).__name__}"
        return None

    def url_of(self, name: str) -> str:
        return database_url_for(self.url, name)


def pgbench_binary() -> str:
    """pgserver's own pgbench (same major version as its server), else the system's."""
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "pginstall" / "bin" / "pgbench"
        if bundled.is_file():
            return str(bundled)
    found = shutil.which("pgbench")
    if found is None:
        raise SystemExit("pgbench not found: apt-get install -y postgresql-client")
    return found
