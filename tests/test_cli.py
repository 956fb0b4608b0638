"""The `rotor` console script (CONTRACT section 4), run as a real subprocess."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import argon2
import asyncpg
import httpx
import psutil
import pytest

from service.cli import Embedded, _banner, listen_url
from service.config import Settings
from service.db.migrate import head_revision
from service.db.tables import metadata
from tests.helpers import PASSWORD, free_port

ROOT = Path(__file__).resolve().parent.parent
ROTOR = ROOT / ".venv" / "bin" / "rotor"
SECRET = base64.urlsafe_b64encode(bytes(range(32, 64))).rstrip(b"=").decode()


def base_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any Rotor configuration, plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ROTOR_") and key != "DATABASE_URL"
    }
    env.update(extra)
    return env


def rotor(
    *args: str, env: dict[str, str], stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROTOR), *args],
        env=env,
        input=stdin,
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def env(database_url: str) -> dict[str, str]:
    return base_env(DATABASE_URL=database_url, ROTOR_SECRET=SECRET)


# --- migrate -------------------------------------------------------------------------------


async def test_migrate_builds_the_schema_and_prints_the_head_revision(
    empty_database_url: str,
) -> None:
    result = rotor("migrate", env=base_env(DATABASE_URL=empty_database_url))
    connection = await asyncpg.connect(empty_database_url)
    try:
        version = await connection.fetchval("SELECT version_num FROM alembic_version")
        tables = {
            row["tablename"]
            for row in await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
    finally:
        await connection.close()
    assert (result.returncode, json.loads(result.stdout), version, tables) == (
        0,
        {"revision": head_revision()},
        head_revision(),
        set(metadata.tables) | {"alembic_version"},
    ), result.stderr


async def test_migrate_refuses_a_transaction_pooler_and_applies_nothing(
    empty_database_url: str,
) -> None:
    result = rotor(
        "migrate",
        env=base_env(DATABASE_URL=empty_database_url, ROTOR_DB_POOLER="transaction"),
    )
    connection = await asyncpg.connect(empty_database_url)
    try:
        tables = await connection.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
    finally:
        await connection.close()
    assert (result.returncode, result.stdout, result.stderr, tables) == (
        2,
        "",
        "rotor: configuration error: ROTOR_DB_POOLER: rotor migrate needs a direct "
        "connection to PostgreSQL, not a transaction pooler: run it with DATABASE_URL "
        "pointing at PostgreSQL and ROTOR_DB_POOLER unset (or none)\n",
        0,
    )


# --- create-client -------------------------------------------------------------------------


async def test_create_client_prints_id_and_secret_and_stores_only_a_hash(
    env: dict[str, str], db: asyncpg.Connection
) -> None:
    result = rotor(
        "create-client", "--name", "n", "--grant", "password", "--grant", "refresh_token",
        "--scope", "read", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert set(printed) == {"client_id", "client_secret"}
    client_id = uuid.UUID(printed["client_id"])
    secret = printed["client_secret"]
    row = await db.fetchrow(
        "SELECT name, public, grant_types, scopes, can_introspect, is_admin, secret_hash "
        "FROM clients WHERE id = $1",
        client_id,
    )
    assert (isinstance(secret, str) and len(secret) >= 32, dict(row)) == (
        True,
        {
            "name": "n",
            "public": False,
            "grant_types": ["password", "refresh_token"],
            "scopes": ["read"],
            "can_introspect": False,
            "is_admin": False,
            "secret_hash": hashlib.sha256(secret.encode()).digest(),
        },
    )


async def test_create_public_client_has_no_secret(
    env: dict[str, str], db: asyncpg.Connection
) -> None:
    result = rotor(
        "create-client", "--name", "spa", "--public", "--grant", "password",
        "--grant", "refresh_token", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    row = await db.fetchrow(
        "SELECT public, secret_hash FROM clients WHERE id = $1", uuid.UUID(printed["client_id"])
    )
    assert (printed["client_secret"], row["public"], row["secret_hash"]) == (None, True, None)


async def test_create_client_with_require_dpop(env: dict[str, str], db: asyncpg.Connection) -> None:
    """CONTRACT 4: --require-dpop; without it a client does not require DPoP."""
    required = rotor(
        "create-client", "--name", "app", "--public", "--grant", "password",
        "--grant", "refresh_token", "--require-dpop", env=env,
    )  # fmt: skip
    plain = rotor("create-client", "--name", "bff", "--grant", "password", env=env)
    assert (required.returncode, plain.returncode) == (0, 0), (required.stderr, plain.stderr)
    rows = await db.fetch(
        "SELECT id, require_dpop FROM clients WHERE id = ANY($1::uuid[])",
        [json.loads(result.stdout)["client_id"] for result in (required, plain)],
    )
    by_id = {str(row["id"]): row["require_dpop"] for row in rows}
    assert [by_id[json.loads(r.stdout)["client_id"]] for r in (required, plain)] == [True, False]


async def test_public_client_with_client_credentials_is_refused(
    env: dict[str, str], db: asyncpg.Connection
) -> None:
    result = rotor(
        "create-client", "--name", "bad", "--public", "--grant", "client_credentials", env=env
    )
    count = await db.fetchval("SELECT count(*) FROM clients")
    assert (result.returncode != 0, result.stdout, count) == (True, "", 0), result.stderr


async def test_introspection_only_client_has_no_grant(
    env: dict[str, str], db: asyncpg.Connection
) -> None:
    result = rotor("create-client", "--name", "gateway", "--introspect", env=env)
    assert result.returncode == 0, result.stderr
    row = await db.fetchrow(
        "SELECT grant_types, scopes, can_introspect, is_admin, public FROM clients WHERE id = $1",
        uuid.UUID(json.loads(result.stdout)["client_id"]),
    )
    assert dict(row) == {
        "grant_types": [],
        "scopes": [],
        "can_introspect": True,
        "is_admin": False,
        "public": False,
    }


async def test_create_client_refuses_a_scope_that_is_not_one_scope_token(
    env: dict[str, str], db: asyncpg.Connection
) -> None:
    result = rotor(
        "create-client", "--name", "n", "--grant", "password", "--scope", "read write", env=env
    )
    count = await db.fetchval("SELECT count(*) FROM clients")
    assert (result.returncode != 0, count) == (True, 0), result.stdout


# --- create-user ---------------------------------------------------------------------------


async def test_create_user_with_password_from_environment(
    env: dict[str, str], db: asyncpg.Connection
) -> None:
    result = rotor("create-user", "--username", "bob", env={**env, "ROTOR_PASSWORD": PASSWORD})
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    row = await db.fetchrow("SELECT id, username FROM users WHERE username = 'bob'")
    assert printed == {"id": str(row["id"]), "username": "bob"}


async def test_create_user_with_password_on_stdin_stores_an_argon2id_hash(
    env: dict[str, str], db: asyncpg.Connection
) -> None:
    result = rotor("create-user", "--username", "carol", env=env, stdin=PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    stored = await db.fetchval("SELECT password_hash FROM users WHERE username = 'carol'")
    assert (
        stored.startswith("$argon2id$v=19$"),
        PASSWORD in stored,
        argon2.PasswordHasher().verify(stored, PASSWORD),
    ) == (True, False, True)


async def test_create_user_refuses_a_seven_character_password(
    env: dict[str, str], db: asyncpg.Connection
) -> None:
    result = rotor("create-user", "--username", "eve", env={**env, "ROTOR_PASSWORD": "1234567"})
    count = await db.fetchval("SELECT count(*) FROM users")
    assert (result.returncode != 0, result.stdout, count) == (True, "", 0), result.stderr


@pytest.mark.parametrize("username", ["", "tab\there", "x" * 256])
async def test_create_user_refuses_what_the_admin_api_refuses(
    env: dict[str, str], db: asyncpg.Connection, username: str
) -> None:
    result = rotor("create-user", "--username", username, env={**env, "ROTOR_PASSWORD": PASSWORD})
    assert (result.returncode, result.stdout, result.stderr.strip()) == (
        1,
        "",
        "rotor: username must be 1 to 255 printable characters",
    )
    assert await db.fetchval("SELECT count(*) FROM users") == 0


async def test_create_user_refuses_a_taken_username(
    env: dict[str, str], db: asyncpg.Connection
) -> None:
    first = rotor("create-user", "--username", "frank", env={**env, "ROTOR_PASSWORD": PASSWORD})
    assert first.returncode == 0, first.stderr
    second = rotor(
        "create-user", "--username", "frank", env={**env, "ROTOR_PASSWORD": "another password"}
    )
    rows = await db.fetch("SELECT id FROM users WHERE username = 'frank'")
    assert (second.returncode != 0, second.stdout, [str(r["id"]) for r in rows]) == (
        True,
        "",
        [json.loads(first.stdout)["id"]],
    ), second.stderr


# --- openapi, bad configuration ------------------------------------------------------------


def test_openapi_prints_the_committed_document() -> None:
    result = rotor("openapi", env=base_env())
    committed = (ROOT / "openapi" / "openapi.json").read_text()
    assert (result.returncode, json.loads(result.stdout)) == (0, json.loads(committed))


def test_bad_configuration_exits_2_naming_the_variable(env: dict[str, str]) -> None:
    result = rotor(
        "create-client", "--name", "x", "--grant", "password",
        env={**env, "ROTOR_SIGNING_ALG": "HS256"},
    )  # fmt: skip
    assert (result.returncode, "ROTOR_SIGNING_ALG" in result.stderr, result.stdout) == (
        2,
        True,
        "",
    ), result.stderr


def test_a_bad_log_level_stops_serve_naming_the_variable(env: dict[str, str]) -> None:
    result = rotor("serve", "--port", "1", env={**env, "ROTOR_LOG_LEVEL": "loud"})
    assert (result.returncode, result.stdout, result.stderr.strip()) == (
        2,
        "",
        "rotor: configuration error: ROTOR_LOG_LEVEL: must be one of "
        "DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'LOUD'",
    )


# --- the issuer (CONTRACT 1) ---------------------------------------------------------------

ELSEWHERE = "postgresql://rotor@db.invalid:5432/rotor"


def test_serve_with_a_database_url_and_no_issuer_exits_2_naming_it() -> None:
    """Checked before anything starts: the database is not even asked."""
    result = rotor(
        "serve", "--port", "1", env=base_env(DATABASE_URL=ELSEWHERE, ROTOR_SECRET=SECRET)
    )
    assert (result.returncode, result.stdout, result.stderr.strip()) == (
        2,
        "",
        "rotor: configuration error: ROTOR_ISSUER: required with DATABASE_URL: the URL "
        "clients reach Rotor at (the iss of every token), e.g. https://auth.example.com",
    )


@pytest.mark.parametrize(
    "command",
    [
        ["create-client", "--name", "n", "--grant", "password"],
        ["create-user", "--username", "nina"],
        ["rotate-keys", "--force"],
        ["prune"],
        ["migrate"],
    ],
    ids=lambda command: command[0],
)
def test_commands_that_sign_nothing_need_no_issuer(env: dict[str, str], command: list[str]) -> None:
    assert "ROTOR_ISSUER" not in env
    if command[0] == "rotate-keys":
        rotor("rotate-keys", env=env)  # a fresh store has no key: this makes the next one
    result = rotor(*command, env={**env, "ROTOR_PASSWORD": PASSWORD})
    assert (result.returncode, result.stderr) == (0, "")
    assert isinstance(json.loads(result.stdout), dict)


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 8000, "http://127.0.0.1:8000"),
        ("localhost", 8123, "http://localhost:8123"),
        ("0.0.0.0", 80, "http://0.0.0.0:80"),  # noqa: S104 (a URL, not a bind)
        ("::1", 8123, "http://[::1]:8123"),
        ("::", 8000, "http://[::]:8000"),
        ("fe80::1%eth0", 9000, "http://[fe80::1%25eth0]:9000"),
        ("[::1]", 8000, "http://[::1]:8000"),
    ],
)
def test_the_embedded_issuer_is_the_url_serve_listens_on(host: str, port: int, url: str) -> None:
    assert listen_url(host, port) == url


def test_serve_on_port_0_needs_an_issuer(embedded_home: Path) -> None:
    """The system would pick the port: the URL, so the issuer, would be unknown."""
    result = rotor("serve", "--port", "0", env=base_env(), cwd=embedded_home)
    assert (result.returncode, result.stderr.strip(), (embedded_home / ".rotor").exists()) == (
        2,
        "rotor: configuration error: ROTOR_ISSUER: --port 0 lets the system pick the port, "
        "so the issuer (the URL Rotor listens on) is unknown: give a port or ROTOR_ISSUER",
        False,
    )


# --- the embedded default ------------------------------------------------------------------


def _postmasters(pgdata: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(attrs=["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "postgres" and str(pgdata) in cmdline:
            found.append(process)
    return found


def _stop_embedded(pgdata: Path) -> None:
    """Stop a server left behind on `pgdata` (as pgserver runs it: the 'pgserver' user
    when root)."""
    if not _postmasters(pgdata):
        return
    import pgserver

    pg_ctl = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"
    user = "pgserver" if os.geteuid() == 0 else None
    subprocess.run(
        [str(pg_ctl), "-D", str(pgdata), "-w", "-m", "fast", "stop"],
        user=user,
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def embedded_home() -> Iterator[Path]:
    """An empty working directory, not under pytest's basetemp: pgserver runs PostgreSQL as
    another user when root, and a concurrent pytest run may re-restrict that tree."""
    home = Path(tempfile.mkdtemp(prefix="rotor-test-embedded-"))
    home.chmod(0o755)
    try:
        yield home
    finally:
        _stop_embedded((home / ".rotor" / "pgdata").resolve())
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
def test_embedded_default_creates_store_and_secret_once(embedded_home: Path) -> None:
    env = base_env()
    first = rotor("create-client", "--name", "x", "--grant", "password", env=env, cwd=embedded_home)
    assert first.returncode == 0, first.stderr
    home = embedded_home / ".rotor"
    secret_path = home / "secret"
    mode = secret_path.stat().st_mode & 0o777
    secret = secret_path.read_text().strip()
    identity = (secret_path.stat().st_ino, secret_path.stat().st_mtime_ns)
    raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    second = rotor(
        "create-client", "--name", "y", "--grant", "password", env=env, cwd=embedded_home
    )
    assert second.returncode == 0, second.stderr
    pgdata = (home / "pgdata").resolve()
    assert (
        (pgdata / "PG_VERSION").is_file(),
        mode,
        len(raw) >= 32,
        secret_path.read_text().strip(),
        (secret_path.stat().st_ino, secret_path.stat().st_mtime_ns),
        _postmasters(pgdata),
    ) == (True, 0o600, True, secret, identity, [])


@contextmanager
def serving(home: Path, *args: str, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """`rotor serve` in `home`, once /health/ready answers 200; SIGTERM afterwards.
    Its stderr goes to home/serve.err."""
    with (home / "serve.err").open("wb") as err:
        process = subprocess.Popen(
            [str(ROTOR), "serve", *args], env=env, cwd=home, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        port = args[args.index("--port") + 1]
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (home / "serve.err").read_text()
            assert time.monotonic() < deadline, "rotor serve did not become ready"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    claims: dict[str, object] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


@pytest.mark.slow
def test_embedded_serve_issues_for_the_url_it_listens_on(embedded_home: Path) -> None:
    """CONTRACT 1: with the embedded default and no ROTOR_ISSUER, the issuer is
    http://{--host}:{--port}: in the metadata and in the tokens."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    quick = base_env(ROTOR_SHUTDOWN_DELAY="0")
    with serving(embedded_home, "--port", str(port), env=quick):
        served = httpx.get(f"{base}/.well-known/oauth-authorization-server").json()
        created = rotor(
            "create-client", "--name", "svc", "--grant", "client_credentials",
            env=base_env(), cwd=embedded_home,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        client = json.loads(created.stdout)
        answer = httpx.post(
            f"{base}/token",
            data={"grant_type": "client_credentials"},
            auth=(client["client_id"], client["client_secret"]),
        )
    claims = _claims(answer.json()["access_token"])
    assert (served["issuer"], served["token_endpoint"], claims["iss"], claims["aud"]) == (
        base,
        f"{base}/token",
        base,
        base,
    )
    # A ROTOR_ISSUER given explicitly wins over the URL served.
    given = {**quick, "ROTOR_ISSUER": "https://auth.example.com"}
    with serving(embedded_home, "--port", str(port), env=given):
        again = httpx.get(f"{base}/.well-known/oauth-authorization-server").json()
    assert (again["issuer"], again["jwks_uri"]) == (
        "https://auth.example.com",
        "https://auth.example.com/.well-known/jwks.json",
    )


def test_serve_removes_its_metrics_directory_when_it_stops(
    embedded_home: Path, tmp_path: Path
) -> None:
    """Each start makes a fresh PROMETHEUS_MULTIPROC_DIR; it used to stay in
    /tmp after every stop."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = base_env(ROTOR_SHUTDOWN_DELAY="0", TMPDIR=str(scratch))
    with serving(embedded_home, "--port", str(free_port()), env=env):
        during = [path.name for path in scratch.glob("rotor-metrics-*")]
    after = [path.name for path in scratch.glob("rotor-metrics-*")]
    assert (len(during), after) == (1, [])


LOG_FIELDS = {"ts", "level", "logger", "msg"}


def _rotors_own(line: str) -> bool:
    """A line Rotor writes to stderr: a `rotor: ` message of the CLI, or a JSON log
    line of its logging (service/observability/logs.py), whoever the logger is."""
    if line.startswith("rotor: "):
        return True
    try:
        entry = json.loads(line)
    except ValueError:
        return False
    return isinstance(entry, dict) and set(entry) >= LOG_FIELDS


@pytest.mark.slow
def test_every_command_on_the_embedded_database_writes_only_rotors_own_lines(
    embedded_home: Path,
) -> None:
    """Without XDG_RUNTIME_DIR, pgserver's platformdirs warned at every command
    (RuntimeDirWarning and its source line); nothing but Rotor's lines now."""
    home = embedded_home / ".rotor"
    env = {**base_env(ROTOR_HOME=str(home)), "ROTOR_PASSWORD": PASSWORD}
    env.pop("XDG_RUNTIME_DIR", None)
    runs = {
        "migrate": rotor("migrate", env=env, cwd=embedded_home),
        "create-client": rotor("create-client", "--name", "app", "--grant", "password", env=env),
        "create-user": rotor("create-user", "--username", "alice", env=env, cwd=embedded_home),
        "rotate-keys": rotor("rotate-keys", env=env, cwd=embedded_home),
        "rotate-keys --force": rotor("rotate-keys", "--force", env=env, cwd=embedded_home),
        "prune": rotor("prune", env=env, cwd=embedded_home),
        "openapi": rotor("openapi", env=env, cwd=embedded_home),
    }
    port = free_port()
    with serving(embedded_home, "--port", str(port), env={**env, "ROTOR_SHUTDOWN_DELAY": "0"}):
        pass
    served = (embedded_home / "serve.err").read_text()
    banner = _banner(
        f"http://127.0.0.1:{port}",
        Settings(database_url=ELSEWHERE, secret=bytes(32), issuer=f"http://127.0.0.1:{port}"),
        Embedded(home),
    ).splitlines()
    others = {
        name: [line for line in run.stderr.splitlines() if not _rotors_own(line)]
        for name, run in runs.items()
    }
    serve_lines = [line for line in served.splitlines() if not _rotors_own(line)]
    others["serve"] = serve_lines
    assert {name: run.returncode for name, run in runs.items()} == {
        "migrate": 0,
        "create-client": 0,
        "create-user": 0,
        "rotate-keys": 1,  # no next key in a new store: one is made, "rotate again later"
        "rotate-keys --force": 0,
        "prune": 0,
        "openapi": 0,
    }
    assert others == {name: [] for name in runs} | {"serve": banner}
    # The key made by the refused rotation was committed: --force then promoted it.
    assert "rotor: there was no next key; one was made: rotate again later" in (
        runs["rotate-keys"].stderr.splitlines()
    )
