"""Settings: typed, validated once at the entry point, passed down.

Nothing here reads the environment at import time: `Settings.from_env` is
called by the CLI (or the app factory of a worker process) with a mapping.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

SIGNING_ALGS = ("ES256", "EdDSA", "RS256")
DB_POOLERS = ("none", "transaction")
MIN_SECRET_BYTES = 32
TEN_YEARS = 10 * 365 * 86400
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_INTEGER = re.compile(r"-?[0-9]+")


class ConfigError(ValueError):
    """A bad configuration value; the message names the variable."""


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Argon2Params:
    """argon2id parameters (RFC 9106 section 4, second recommended option)."""

    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 4


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    secret: bytes
    issuer: str = "http://localhost:8000"
    audience: tuple[str, ...] = ("http://localhost:8000",)
    access_token_ttl: int = 300
    refresh_idle_ttl: int = 604800
    family_max_ttl: int = 2592000
    reuse_grace: int = 0
    signing_alg: str = "ES256"
    login_max_failures: int = 10
    login_window: int = 900
    trusted_proxies: tuple[IPNetwork, ...] = ()
    jwks_max_age: int = 300
    db_timeout: float = 5.0
    argon2: Argon2Params = field(default_factory=Argon2Params)
    hash_concurrency: int = 2
    db_pool_size: int = 10
    key_refresh_interval: float = 2.0
    prune_interval: int = 3600
    prune_retention: int = 604800
    shutdown_delay: int = 2
    client_cache_ttl: int = 5
    db_pooler: str = "none"
    dpop_window: int = 60

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, issuer_required: bool = True) -> Settings:
        """Build settings from environment variables (CONTRACT section 1).

        ROTOR_ISSUER is required: a store's tokens need one stable issuer, so
        nothing falls back to a guess (the CLI puts the embedded default's, the
        URL `rotor serve` listens on, into `env` itself). `issuer_required=False`
        is for the commands that sign nothing (create-client, create-user,
        rotate-keys, prune): a set ROTOR_ISSUER is still checked; an unset one
        leaves `issuer` empty and `audience` empty, which they never read."""
        database_url = _check_database_url(_required(env, "DATABASE_URL"))
        secret = parse_secret(_required(env, "ROTOR_SECRET"))
        issuer = env.get("ROTOR_ISSUER", "").strip()
        if issuer:
            _check_url("ROTOR_ISSUER", issuer)
        elif issuer_required:
            raise ConfigError(
                "ROTOR_ISSUER: required with DATABASE_URL: the URL clients reach Rotor at "
                "(the iss of every token), e.g. https://auth.example.com"
            )
        audience_raw = env.get("ROTOR_AUDIENCE", "").split()
        return cls(
            database_url=database_url,
            secret=secret,
            issuer=issuer,
            audience=tuple(audience_raw) or ((issuer,) if issuer else ()),
            access_token_ttl=_integer(env, "ROTOR_ACCESS_TOKEN_TTL", 300, minimum=1),
            refresh_idle_ttl=_integer(env, "ROTOR_REFRESH_IDLE_TTL", 604800, minimum=1),
            family_max_ttl=_integer(env, "ROTOR_FAMILY_MAX_TTL", 2592000, minimum=1),
            reuse_grace=_integer(env, "ROTOR_REUSE_GRACE", 0, minimum=0),
            signing_alg=_choice(env, "ROTOR_SIGNING_ALG", "ES256", SIGNING_ALGS),
            login_max_failures=_integer(env, "ROTOR_LOGIN_MAX_FAILURES", 10, minimum=1),
            login_window=_integer(env, "ROTOR_LOGIN_WINDOW", 900, minimum=1),
            trusted_proxies=_networks(env, "ROTOR_TRUSTED_PROXIES"),
            jwks_max_age=_integer(env, "ROTOR_JWKS_MAX_AGE", 300, minimum=0),
            db_timeout=float(_integer(env, "ROTOR_DB_TIMEOUT", 5, minimum=1, maximum=300)),
            argon2=Argon2Params(
                time_cost=_integer(env, "ROTOR_ARGON2_TIME_COST", 3, minimum=1, maximum=100),
                memory_kib=_integer(
                    env, "ROTOR_ARGON2_MEMORY_KIB", 65536, minimum=8192, maximum=4194304
                ),
                parallelism=_integer(env, "ROTOR_ARGON2_PARALLELISM", 4, minimum=1, maximum=64),
            ),
            hash_concurrency=_integer(env, "ROTOR_HASH_CONCURRENCY", 2, minimum=1, maximum=64),
            db_pool_size=_integer(env, "ROTOR_DB_POOL_SIZE", 10, minimum=1, maximum=1000),
            prune_interval=_integer(env, "ROTOR_PRUNE_INTERVAL", 3600, minimum=0),
            prune_retention=_integer(env, "ROTOR_PRUNE_RETENTION", 604800, minimum=0),
            shutdown_delay=_integer(env, "ROTOR_SHUTDOWN_DELAY", 2, minimum=0, maximum=300),
            client_cache_ttl=_integer(env, "ROTOR_CLIENT_CACHE_TTL", 5, minimum=0, maximum=3600),
            db_pooler=db_pooler(env),
            dpop_window=_integer(env, "ROTOR_DPOP_WINDOW", 60, minimum=1, maximum=3600),
        )

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def parse_secret(value: str) -> bytes:
    """ROTOR_SECRET: base64url of at least 32 random bytes."""
    text = value.strip()
    if not _BASE64URL.fullmatch(text):
        raise ConfigError("ROTOR_SECRET: not valid base64url (A-Z a-z 0-9 - _)")
    try:
        raw = base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("ROTOR_SECRET: not valid base64url") from exc
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"ROTOR_SECRET: must decode to at least {MIN_SECRET_BYTES} bytes, got {len(raw)}"
        )
    return raw


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name}: required but not set")
    return value


def _integer(
    env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int = TEN_YEARS
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not _INTEGER.fullmatch(raw):
        raise ConfigError(f"{name}: must be an integer, got {raw[:40]!r}")
    value = int(raw, 10)
    if value < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}, got {value}")
    if value > maximum:
        raise ConfigError(f"{name}: must be at most {maximum}, got {value}")
    return value


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def db_pooler(env: Mapping[str, str]) -> str:
    """ROTOR_DB_POOLER: `transaction` when DATABASE_URL is a transaction pooler."""
    return _choice(env, "ROTOR_DB_POOLER", "none", DB_POOLERS)


def log_level(env: Mapping[str, str]) -> str:
    """ROTOR_LOG_LEVEL, in any letter case; read before the rest of the settings
    (logging starts first), and checked as strictly."""
    level = env.get("ROTOR_LOG_LEVEL", "").upper()
    return _choice({"ROTOR_LOG_LEVEL": level}, "ROTOR_LOG_LEVEL", "INFO", LOG_LEVELS)


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip() or default
    if raw not in allowed:
        raise ConfigError(f"{name}: must be one of {', '.join(allowed)}, got {raw!r}")
    return raw


def _networks(env: Mapping[str, str], name: str) -> tuple[IPNetwork, ...]:
    items = [item.strip() for item in env.get(name, "").split(",") if item.strip()]
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in items)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _check_url(name: str, value: str) -> None:
    """RFC 8414 section 2: an https URL (http for local use) with a host and no
    query or fragment."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"{name}: must be an http(s) URL with a host, got {value!r}")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ConfigError(f"{name}: must have no query or fragment, got {value!r}")


def _check_database_url(value: str) -> str:
    if not value.startswith(("postgresql://", "postgres://", "postgresql+asyncpg://")):
        raise ConfigError("DATABASE_URL: must be a postgresql:// URL")
    return value


def asyncpg_dsn(url: str) -> str:
    """The DSN asyncpg accepts (it knows no SQLAlchemy driver suffix)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url
