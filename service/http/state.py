"""The services of one process, built once at start-up and kept on the app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Request

from service.accounts.clients import ClientStore
from service.accounts.passwords import PasswordHasher
from service.accounts.users import UserStore
from service.admin.accounts import AccountAdmin
from service.admin.events import EventAdmin
from service.admin.keys import KeyAdmin
from service.admin.sessions import SessionAdmin
from service.config import Settings
from service.db.pool import Database
from service.observability.shutdown import Drain
from service.tokens.grants import TokenService
from service.tokens.introspection import IntrospectionService
from service.tokens.keys import KeyRing
from service.tokens.pruning import Pruner
from service.tokens.revocation import RevocationService
from service.tokens.verify import AccessTokenVerifier


@dataclass(slots=True)
class Services:
    settings: Settings
    database: Database
    hasher: PasswordHasher
    keys: KeyRing
    clients: ClientStore
    users: UserStore
    tokens: TokenService
    verifier: AccessTokenVerifier
    introspection: IntrospectionService
    revocation: RevocationService
    account_admin: AccountAdmin
    session_admin: SessionAdmin
    event_admin: EventAdmin
    key_admin: KeyAdmin
    pruner: Pruner
    drain: Drain


def services_of(request: Request[Any, Any, Any]) -> Services:
    services: Services = request.app.state.services
    return services
