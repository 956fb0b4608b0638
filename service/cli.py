"""The `rotor` command (CONTRACT section 4). Output meant for scripts is JSON on stdout;
messages for people go to stderr."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import shutil
import signal
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from service.config import ConfigError, Settings, db_pooler, log_level

EMBEDDED_HOME = ".rotor"


class Embedded:
    """The embedded PostgreSQL (pgserver) under ./.rotor/, for a machine with nothing else."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._server: Any = None

    def start(self) -> str:
        with warnings.catch_warnings():
            # pgserver asks platformdirs for the user's runtime directory when it
            # is imported (for its lock file and, failing shorter paths, its
            # socket); without XDG_RUNTIME_DIR (a container, a CI job, sudo)
            # platformdirs warns and uses a private directory under /tmp, which
            # is fine for both. Rotor's data is in ROTOR_HOME either way.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
            import pgserver

        self.home.mkdir(parents=True, exist_ok=True)
        self._forget_dead_users()
        self._server = pgserver.get_server(  # type: ignore[attr-defined,unused-ignore]
            self.home / "pgdata", cleanup_mode="stop"
        )
        return str(self._server.get_uri())

    def _forget_dead_users(self) -> None:
        """pgserver stops the server when the last process using it exits, counting
        processes in a pid list; a process that died without cleaning up (SIGKILL)
        would keep the server up forever. Drop pids that no longer run."""
        from pgserver.utils import DiskList

        pids = DiskList(self.home / "pgdata" / ".handle_pids.json")
        alive = [pid for pid in pids.get() if _running(pid)]
        if alive != pids.get():
            pids.put(alive)

    def secret(self) -> str:
        """ROTOR_SECRET generated once into ./.rotor/secret (mode 0600)."""
        path = self.home / "secret"
        if not path.exists():
            value = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(value + "\n")
        return path.read_text().strip()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve_environment(
    env: Mapping[str, str], *, issuer: str | None = None
) -> tuple[dict[str, str], Embedded | None]:
    """DATABASE_URL if set; else the embedded PostgreSQL, migrated, with its secret,
    and `issuer` (the URL `rotor serve` listens on) as ROTOR_ISSUER unless one is
    set. With DATABASE_URL, ROTOR_ISSUER is the operator's to give (CONTRACT 1)."""
    resolved = dict(env)
    if resolved.get("DATABASE_URL", "").strip():
        return resolved, None
    embedded = Embedded(Path(resolved.get("ROTOR_HOME", EMBEDDED_HOME)).resolve())
    resolved["DATABASE_URL"] = embedded.start()
    if not resolved.get("ROTOR_SECRET", "").strip():
        resolved["ROTOR_SECRET"] = embedded.secret()
    if issuer is not None and not resolved.get("ROTOR_ISSUER", "").strip():
        resolved["ROTOR_ISSUER"] = issuer
    from service.db.migrate import upgrade

    upgrade(resolved["DATABASE_URL"])
    return resolved, embedded


def _settings(env: Mapping[str, str]) -> tuple[Settings, Embedded | None]:
    """Settings of a command that signs nothing (create-client, create-user,
    rotate-keys, prune): they need no ROTOR_ISSUER (checked if set)."""
    resolved, embedded = resolve_environment(env)
    return Settings.from_env(resolved, issuer_required=False), embedded


def listen_url(host: str, port: int) -> str:
    """The URL `rotor serve --host H --port P` listens on, an IPv6 address in
    brackets (RFC 3986 section 3.2.2; a zone's `%` as `%25`, RFC 6874)."""
    if ":" in host and not host.startswith("["):
        host = "[" + host.replace("%", "%25") + "]"
    return f"http://{host}:{port}"


def cmd_serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import uvicorn

    from service.observability.logs import configure_logging

    configure_logging(log_level(env))
    url = listen_url(args.host, args.port)
    derived = not env.get("DATABASE_URL", "").strip() and not env.get("ROTOR_ISSUER", "").strip()
    if derived and args.port == 0:
        raise ConfigError(
            "ROTOR_ISSUER: --port 0 lets the system pick the port, so the issuer "
            "(the URL Rotor listens on) is unknown: give a port or ROTOR_ISSUER"
        )
    resolved, embedded = resolve_environment(env, issuer=url)
    settings = Settings.from_env(resolved)  # a bad value stops here, before any worker starts
    # Workers build their settings from the environment (service.app.app_from_env).
    os.environ.update(
        {
            "DATABASE_URL": resolved["DATABASE_URL"],
            "ROTOR_SECRET": resolved["ROTOR_SECRET"],
            "ROTOR_ISSUER": resolved["ROTOR_ISSUER"],
        }
    )
    metrics_dir = _metrics_directory()
    if not env.get("ROTOR_HASH_CONCURRENCY"):
        # One hash at a time per core across all workers.
        per_worker = max(1, (os.cpu_count() or 1) // max(1, args.workers))
        os.environ["ROTOR_HASH_CONCURRENCY"] = str(per_worker)
    print(_banner(url, settings, embedded), file=sys.stderr, flush=True)
    # uvicorn re-raises SIGTERM after its graceful shutdown; as SystemExit it
    # lets the embedded PostgreSQL stop with the last process that uses it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        _run_uvicorn(uvicorn, args)
    finally:
        if metrics_dir is not None:  # made for this start: gone with it
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _run_uvicorn(uvicorn: Any, args: argparse.Namespace) -> None:
    uvicorn.run(
        "service.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=10,
        proxy_headers=False,
        server_header=False,
        loop="auto",
        http="auto",
    )


def _metrics_directory() -> str | None:
    """Prometheus multiprocess mode, so /metrics adds up every worker; a fresh
    directory per start (stale files from an earlier run would count twice),
    which serve removes when it stops. None when the operator chose one."""
    import tempfile

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    made = tempfile.mkdtemp(prefix="rotor-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
    return made


def _banner(url: str, settings: Settings, embedded: Embedded | None) -> str:
    where = f"embedded PostgreSQL in {embedded.home / 'pgdata'}" if embedded else "DATABASE_URL"
    return "\n".join(
        [
            f"Rotor listening on {url} (issuer {settings.issuer}; store: {where})",
            "First client and user, from another terminal in this folder:",
            "  .venv/bin/rotor create-client --name my-app --grant password --grant refresh_token",
            "  ROTOR_PASSWORD='a long password' .venv/bin/rotor create-user --username alice",
            f"Then: curl -u CLIENT_ID:CLIENT_SECRET -d grant_type=password -d username=alice "
            f"--data-urlencode password='a long password' {url}/token",
        ]
    )


def cmd_migrate(_: argparse.Namespace, env: Mapping[str, str]) -> int:
    from service.db.migrate import head_revision, upgrade

    if db_pooler(env) == "transaction":
        # An upgrade is one transaction under one lock, through SQLAlchemy's
        # statement cache: it needs PostgreSQL itself, never a pooler's
        # changing server connections. Refused before anything is applied.
        raise ConfigError(
            "ROTOR_DB_POOLER: rotor migrate needs a direct connection to PostgreSQL, "
            "not a transaction pooler: run it with DATABASE_URL pointing at PostgreSQL "
            "and ROTOR_DB_POOLER unset (or none)"
        )
    resolved, _embedded = resolve_environment(env)
    upgrade(resolved["DATABASE_URL"])
    print(json.dumps({"revision": head_revision()}))
    return 0


async def _with_connection(settings: Settings, work: Any, *, transaction: bool = True) -> Any:
    from service.db.pool import Database

    database = Database(
        settings.database_url, timeout=settings.db_timeout, max_size=2, pooler=settings.db_pooler
    )
    await database.open()
    try:
        opened = database.transaction() if transaction else database.connection()
        async with opened as connection:
            return await work(connection)
    finally:
        await database.close()


def cmd_create_client(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from service.accounts.clients import create_client
    from service.admin.accounts import check_client
    from service.errors import OAuthError

    grants = list(dict.fromkeys(args.grant or []))
    scopes = list(dict.fromkeys(args.scope or []))
    try:
        check_client(
            args.name,
            grants,
            scopes,
            args.public,
            can_introspect=args.introspect,
            is_admin=args.admin,
        )
    except OAuthError as exc:
        return _fail(exc.description)
    settings, _embedded = _settings(env)

    async def work(connection: Any) -> Any:
        return await create_client(
            connection,
            name=args.name,
            grant_types=grants,
            scopes=scopes,
            public=args.public,
            can_introspect=args.introspect,
            is_admin=args.admin,
            require_dpop=args.require_dpop,
        )

    client, secret = asyncio.run(_with_connection(settings, work))
    print(json.dumps({"client_id": client.client_id, "client_secret": secret}))
    return 0


def cmd_create_user(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from service.accounts.passwords import PasswordHasher, password_problem
    from service.accounts.users import UsernameTaken, create_user
    from service.admin.accounts import check_username
    from service.errors import OAuthError

    password = env.get("ROTOR_PASSWORD")
    if password is None:
        password = sys.stdin.readline().rstrip("\r\n")
    problem = password_problem(password)
    if problem:
        return _fail(problem)
    try:
        check_username(args.username)  # as POST /admin/users checks it
    except OAuthError as exc:
        return _fail(exc.description)
    settings, _embedded = _settings(env)

    async def work(connection: Any) -> Any:
        hasher = PasswordHasher(settings.argon2, 1)
        try:
            password_hash = await hasher.hash(password)
        finally:
            hasher.close()
        return await create_user(connection, args.username, password_hash)

    try:
        user = asyncio.run(_with_connection(settings, work))
    except UsernameTaken:
        return _fail(f"username {args.username!r} is taken")
    print(json.dumps({"id": str(user.id), "username": user.username}))
    return 0


def cmd_rotate_keys(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    import msgspec

    from service.admin.keys import NO_NEXT_KEY, rotate_keys
    from service.errors import Conflict
    from service.tokens.keys import KeyVault
    from service.tokens.secretbox import SecretBox

    settings, _embedded = _settings(env)
    vault = KeyVault(SecretBox.for_purpose(settings.secret, b"signing-keys"))

    async def work(connection: Any) -> Any:
        return await rotate_keys(
            connection,
            vault,
            alg=settings.signing_alg,
            min_age=settings.jwks_max_age,
            force=args.force,
        )

    try:
        key = asyncio.run(_with_connection(settings, work))
    except Conflict as exc:
        return _fail(exc.description)
    if key is None:  # a next key was made and committed: rotate again later
        return _fail(NO_NEXT_KEY)
    print(msgspec.json.encode(key).decode())
    return 0


def cmd_prune(_: argparse.Namespace, env: Mapping[str, str]) -> int:
    from dataclasses import asdict

    from service.tokens.pruning import prune

    settings, _embedded = _settings(env)

    async def work(connection: Any) -> Any:
        return await prune(
            connection,
            retention=settings.prune_retention,
            access_ttl=settings.access_token_ttl,
            login_window=settings.login_window,
        )

    report = asyncio.run(_with_connection(settings, work, transaction=False))
    print(json.dumps(asdict(report)))
    return 0


def cmd_openapi(_: argparse.Namespace, __: Mapping[str, str]) -> int:
    from service.openapi import document

    sys.stdout.write(document())
    return 0


def _fail(message: str) -> int:
    print(f"rotor: {message}", file=sys.stderr)
    return 1


def parser() -> argparse.ArgumentParser:
    from service.accounts.clients import GRANT_TYPES

    top = argparse.ArgumentParser(prog="rotor", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve HTTP (migrates an embedded database)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(run=cmd_serve)
    commands.add_parser("migrate", help="apply the migrations").set_defaults(run=cmd_migrate)
    client = commands.add_parser("create-client", help="register a client; prints its secret once")
    client.add_argument("--name", required=True)
    client.add_argument("--grant", action="append", choices=GRANT_TYPES)
    client.add_argument("--scope", action="append")
    client.add_argument("--public", action="store_true")
    client.add_argument("--introspect", action="store_true")
    client.add_argument("--admin", action="store_true")
    client.add_argument(
        "--require-dpop", action="store_true", help="no login or refresh without a DPoP proof"
    )
    client.set_defaults(run=cmd_create_client)
    user = commands.add_parser("create-user", help="password from ROTOR_PASSWORD or stdin")
    user.add_argument("--username", required=True)
    user.set_defaults(run=cmd_create_user)
    rotate = commands.add_parser("rotate-keys", help="promote the next signing key")
    rotate.add_argument(
        "--force",
        action="store_true",
        help="even if the next key is younger than ROTOR_JWKS_MAX_AGE",
    )
    rotate.set_defaults(run=cmd_rotate_keys)
    commands.add_parser("prune", help="delete long-dead families and expired rows").set_defaults(
        run=cmd_prune
    )
    commands.add_parser("openapi", help="print the OpenAPI document").set_defaults(run=cmd_openapi)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args, os.environ)
    except ConfigError as exc:
        print(f"rotor: configuration error: {exc}", file=sys.stderr)
        return 2
    return code
