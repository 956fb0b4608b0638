"""create_app(settings): the one place that wires Rotor together."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

from joserfc.errors import SecurityWarning
from litestar import Litestar
from litestar.types import (
    ASGIApp,
    LifeSpanReceive,
    LifeSpanScope,
    LifeSpanSend,
    Receive,
    Scope,
    Send,
)

from service.accounts.clients import ClientCache
from service.accounts.passwords import PasswordHasher
from service.accounts.throttle import LoginThrottle
from service.admin.accounts import AccountAdmin
from service.admin.auth import AdminAuth
from service.admin.events import EventAdmin
from service.admin.keys import KeyAdmin
from service.admin.sessions import SessionAdmin
from service.config import Settings, log_level
from service.db.pool import Database
from service.http.edge import Edge
from service.http.plugin import RAW_PATHS, RAW_SCHEMAS, RotorPlugin
from service.http.raw import MAX_BODY_BYTES, document
from service.http.state import Services
from service.observability.logs import configure_logging
from service.observability.shutdown import Drain
from service.tokens.access import AccessTokenIssuer
from service.tokens.dpop import DpopVerifier
from service.tokens.families import FamilyLimits
from service.tokens.grants import TokenEndpoint
from service.tokens.grants.client_credentials import ClientCredentialsGrant
from service.tokens.grants.password import PasswordGrant
from service.tokens.grants.refresh_token import RefreshTokenGrant
from service.tokens.introspection import IntrospectionService
from service.tokens.keys import KeyRing, KeyVault
from service.tokens.pruning import Pruner
from service.tokens.revocation import RevocationService
from service.tokens.rotation import RotationService
from service.tokens.secretbox import SecretBox
from service.tokens.sessions import UserSessions
from service.tokens.verify import AccessTokenVerifier

__all__ = ["MAX_BODY_BYTES", "RotorApp", "create_app", "create_asgi", "quiet_known_warnings"]

log = logging.getLogger("rotor")


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
    vault = KeyVault(SecretBox.for_purpose(settings.secret, b"signing-keys"))
    keys = KeyRing(
        vault,
        database,
        access_ttl=settings.access_token_ttl,
        interval=settings.key_refresh_interval,
    )
    hasher = PasswordHasher(settings.argon2, settings.hash_concurrency, isolated=isolate_hashing)
    issuer = AccessTokenIssuer(settings, keys)
    proofs = DpopVerifier(issuer=settings.issuer, window=settings.dpop_window)
    rotation = RotationService(
        database=database,
        issuer=issuer,
        idle_ttl=settings.refresh_idle_ttl,
        reuse_grace=settings.reuse_grace,
        proofs=proofs,
    )
    throttle = LoginThrottle(
        database,
        hasher,
        max_failures=settings.login_max_failures,
        window=settings.login_window,
    )
    password = PasswordGrant(
        database=database,
        hasher=hasher,
        throttle=throttle,
        limits=FamilyLimits(idle_ttl=settings.refresh_idle_ttl, max_ttl=settings.family_max_ttl),
        issuer=issuer,
        proofs=proofs,
    )
    tokens = TokenEndpoint(
        ClientCache(database, settings.client_cache_ttl),
        {
            "password": password,
            "client_credentials": ClientCredentialsGrant(issuer),
            "refresh_token": RefreshTokenGrant(rotation),
        },
    )
    verifier = AccessTokenVerifier(settings, keys)
    return Services(
        settings=settings,
        database=database,
        hasher=hasher,
        keys=keys,
        tokens=tokens,
        verifier=verifier,
        introspection=IntrospectionService(database, verifier),
        revocation=RevocationService(database, verifier),
        sessions=UserSessions(database, verifier, proofs),
        admin_auth=AdminAuth(database, verifier),
        account_admin=AccountAdmin(database, hasher),
        session_admin=SessionAdmin(database),
        event_admin=EventAdmin(database),
        key_admin=KeyAdmin(
            database, vault, alg=settings.signing_alg, min_age=settings.jwks_max_age
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


def create_app(
    settings: Settings,
    *,
    drain_on_sigterm: bool = False,
    freeze_gc: bool = False,
    isolate_hashing: bool = False,
) -> RotorApp:
    quiet_known_warnings()
    database = Database(
        settings.database_url,
        timeout=settings.db_timeout,
        max_size=settings.db_pool_size,
        pooler=settings.db_pooler,
    )
    services = build_services(settings, database, isolate_hashing=isolate_hashing)
    plugin = RotorPlugin(services, drain_on_sigterm=drain_on_sigterm, freeze_gc=freeze_gc)
    # Litestar 2.25 takes the router's body limit from its constructor, not from
    # the AppConfig a plugin returns: given here as well.
    app = RotorApp(
        plugins=[plugin], deadline=settings.db_timeout, request_max_body_size=MAX_BODY_BYTES
    )
    document(app, RAW_PATHS, RAW_SCHEMAS)
    return app


def create_asgi(settings: Settings, *, served: bool = False) -> ASGIApp:
    """The application as served (draining on SIGTERM); `served` for a server's
    worker process: start-up objects frozen for the collector, and passwords
    hashed in processes of their own (service/accounts/passwords.py)."""
    return create_app(settings, drain_on_sigterm=True, freeze_gc=served, isolate_hashing=served)


def app_from_env() -> ASGIApp:
    """Factory for server worker processes: reads the environment when called."""
    configure_logging(log_level(os.environ))
    return create_asgi(Settings.from_env(os.environ), served=True)
