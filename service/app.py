"""create_app(settings): the one place that wires Rotor together."""

from __future__ import annotations

import gc
import logging
import os
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from joserfc.errors import SecurityWarning
from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusController
from litestar.types import (
    ASGIApp,
    LifeSpanReceive,
    LifeSpanScope,
    LifeSpanSend,
    Receive,
    Scope,
    Send,
)

from service import __version__
from service.accounts.clients import ClientCache, ClientStore
from service.accounts.passwords import PasswordHasher
from service.accounts.throttle import LoginThrottle
from service.accounts.users import UserStore
from service.admin.accounts import AccountAdmin
from service.admin.events import EventAdmin
from service.admin.keys import KeyAdmin
from service.admin.sessions import SessionAdmin
from service.config import Settings, log_level
from service.db.migrate import head_revision
from service.db.pool import Database
from service.http.admin import AdminController
from service.http.discovery import jwks, metadata
from service.http.edge import Edge
from service.http.errors import EXCEPTION_HANDLERS
from service.http.gateway import INTROSPECT_PATH, introspect_endpoint, revoke
from service.http.health import live, ready
from service.http.raw import MAX_BODY_BYTES, document
from service.http.refresh import REFRESH_PATH, refresh_endpoint
from service.http.state import Services
from service.http.token import token
from service.observability.logs import configure_logging
from service.observability.shutdown import Drain
from service.tokens.access import AccessTokenIssuer
from service.tokens.families import FamilyStore
from service.tokens.grants import TokenService
from service.tokens.introspection import IntrospectionService
from service.tokens.keys import KeyRing, KeyStore
from service.tokens.pruning import Pruner
from service.tokens.revocation import RevocationService
from service.tokens.rotation import RotationService
from service.tokens.secretbox import SecretBox
from service.tokens.verify import AccessTokenVerifier

log = logging.getLogger("rotor")


class MetricsController(PrometheusController):
    path = "/metrics"
    include_in_schema = False


class SchemaNotReady(RuntimeError):
    pass


class RotorApp(Litestar):
    """Litestar with Rotor's edge (service/http/edge.py) around every request,
    the ones answered before routing (404, 405) included."""

    def __init__(self, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._edge = Edge(super().__call__, deadline=deadline)

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        await self._edge(scope, receive, send)


def quiet_known_warnings() -> None:
    # CONTRACT section 1 names the algorithm "EdDSA" (RFC 8037); joserfc warns
    # that RFC 9864 prefers "Ed25519". The name is the contract's to choose.
    warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)


def build_services(
    settings: Settings, database: Database, *, isolate_hashing: bool = False
) -> Services:
    box = SecretBox.for_purpose(settings.secret, b"signing-keys")
    key_store = KeyStore(box)
    keys = KeyRing(
        key_store,
        database,
        access_ttl=settings.access_token_ttl,
        interval=settings.key_refresh_interval,
    )
    hasher = PasswordHasher(settings.argon2, settings.hash_concurrency, isolated=isolate_hashing)
    clients, users = ClientStore(), UserStore()
    issuer = AccessTokenIssuer(settings, keys)
    rotation = RotationService(
        database=database,
        issuer=issuer,
        idle_ttl=settings.refresh_idle_ttl,
        reuse_grace=settings.reuse_grace,
    )
    tokens = TokenService(
        database=database,
        clients=ClientCache(clients, database, settings.client_cache_ttl),
        users=users,
        hasher=hasher,
        throttle=LoginThrottle(settings.login_max_failures, settings.login_window),
        families=FamilyStore(idle_ttl=settings.refresh_idle_ttl, max_ttl=settings.family_max_ttl),
        issuer=issuer,
        rotation=rotation,
    )
    verifier = AccessTokenVerifier(settings, keys)
    return Services(
        settings=settings,
        database=database,
        hasher=hasher,
        keys=keys,
        clients=clients,
        users=users,
        tokens=tokens,
        verifier=verifier,
        introspection=IntrospectionService(database, verifier),
        revocation=RevocationService(database, verifier),
        account_admin=AccountAdmin(database, hasher, users, clients),
        session_admin=SessionAdmin(database),
        event_admin=EventAdmin(database),
        key_admin=KeyAdmin(
            database, key_store, alg=settings.signing_alg, min_age=settings.jwks_max_age
        ),
        drain=Drain(settings.shutdown_delay),
        pruner=Pruner(
            database,
            interval=settings.prune_interval,
            retention=settings.prune_retention,
            access_ttl=settings.access_token_ttl,
            login_window=settings.login_window,
        ),
    )


async def check_schema(database: Database) -> None:
    async with database.connection() as connection:
        exists = await connection.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
        current = (
            await connection.fetchval("SELECT version_num FROM alembic_version") if exists else None
        )
    if current != head_revision():
        raise SchemaNotReady(
            f"database schema is at {current or 'nothing'}, not {head_revision()}: "
            "run `rotor migrate` (DATABASE_URL) first"
        )


def create_app(
    settings: Settings,
    *,
    drain_on_sigterm: bool = False,
    freeze_gc: bool = False,
    isolate_hashing: bool = False,
) -> RotorApp:
    quiet_known_warnings()
    database = Database(
        settings.database_url, timeout=settings.db_timeout, max_size=settings.db_pool_size
    )
    services = build_services(settings, database, isolate_hashing=isolate_hashing)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await database.open()
        try:
            await check_schema(database)
            await services.keys.start(settings.signing_alg)
            services.pruner.start()
            services.hasher.start()
            app.state.services = services
            if drain_on_sigterm:
                services.drain.install()
            if freeze_gc:
                # Everything made at start-up lives as long as the process: out of
                # the collector's sight, a full collection scans only what requests
                # made. Measured in a worker under /refresh load: full collections
                # of 55 to 70 ms, each a pause for every request in flight, before;
                # none over 5 ms after (the gc module's docs advise this for servers).
                gc.freeze()
            yield
        finally:
            services.drain.uninstall()
            await services.pruner.stop()
            await services.keys.stop()
            services.hasher.close()
            await database.close()

    app = RotorApp(
        route_handlers=[
            token,
            refresh_endpoint,
            introspect_endpoint,
            revoke,
            AdminController,
            MetricsController,
            jwks,
            metadata,
            live,
            ready,
        ],
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        deadline=settings.db_timeout,
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=openapi_config(),
        debug=False,
        logging_config=None,
    )
    document(app, {"/refresh": REFRESH_PATH, "/introspect": INTROSPECT_PATH})
    return app


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Rotor",
        version=__version__,
        description="Short-lived access JWTs and rotating single-use refresh tokens.",
        path="/schema",
        render_plugins=[ScalarRenderPlugin()],
        components=Components(
            security_schemes={
                "client_secret_basic": SecurityScheme(type="http", scheme="basic"),
                "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT"),
            }
        ),
        use_handler_docstrings=False,
    )


def create_asgi(settings: Settings, *, served: bool = False) -> ASGIApp:
    """The application as served (draining on SIGTERM); `served` for a server's
    worker process: start-up objects frozen for the collector, and passwords
    hashed in processes of their own (service/accounts/passwords.py)."""
    return create_app(settings, drain_on_sigterm=True, freeze_gc=served, isolate_hashing=served)


def app_from_env() -> ASGIApp:
    """Factory for server worker processes: reads the environment when called."""
    configure_logging(log_level(os.environ))
    return create_asgi(Settings.from_env(os.environ), served=True)
