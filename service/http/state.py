"""The services of one process, built once at start-up and kept on the app."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection

from service.accounts.passwords import PasswordHasher
from service.admin.accounts import AccountAdmin
from service.admin.auth import AdminAuth
from service.admin.events import EventAdmin
from service.admin.keys import KeyAdmin
from service.admin.sessions import SessionAdmin
from service.config import Settings
from service.db.pool import Database
from service.observability.shutdown import Drain
from service.tokens.grants import TokenEndpoint
from service.tokens.introspection import IntrospectionService
from service.tokens.keys import KeyRing
from service.tokens.pruning import Pruner
from service.tokens.revocation import RevocationService
from service.tokens.sessions import UserSessions
from service.tokens.verify import AccessTokenVerifier


class Services:
    """A plain class, not a dataclass: Litestar checks a dependency's value
    against its type on every request, and for a dataclass it would build a
    converter for every field down to the settings; a plain class is checked
    with isinstance alone."""

    __slots__ = (
        "account_admin",
        "admin_auth",
        "database",
        "drain",
        "event_admin",
        "hasher",
        "introspection",
        "key_admin",
        "keys",
        "pruner",
        "revocation",
        "session_admin",
        "sessions",
        "settings",
        "tokens",
        "verifier",
    )

    def __init__(
        self,
        *,
        settings: Settings,
        database: Database,
        hasher: PasswordHasher,
        keys: KeyRing,
        tokens: TokenEndpoint,
        verifier: AccessTokenVerifier,
        introspection: IntrospectionService,
        revocation: RevocationService,
        sessions: UserSessions,
        admin_auth: AdminAuth,
        account_admin: AccountAdmin,
        session_admin: SessionAdmin,
        event_admin: EventAdmin,
        key_admin: KeyAdmin,
        pruner: Pruner,
        drain: Drain,
    ) -> None:
        self.settings = settings
        self.database = database
        self.hasher = hasher
        self.keys = keys
        self.tokens = tokens
        self.verifier = verifier
        self.introspection = introspection
        self.revocation = revocation
        self.sessions = sessions
        self.admin_auth = admin_auth
        self.account_admin = account_admin
        self.session_admin = session_admin
        self.event_admin = event_admin
        self.key_admin = key_admin
        self.pruner = pruner
        self.drain = drain


def services_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Services:
    services: Services = connection.app.state.services
    return services
