"""The services of one process, built once at start-up and kept on the app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Request

from service.accounts.clients import ClientStore
from service.accounts.passwords import PasswordHasher
from service.accounts.users import UserStore
from service.config import Settings
from service.db.pool import Database
from service.tokens.grants import TokenService
from service.tokens.introspection import IntrospectionService
from service.tokens.revocation import RevocationService
from service.tokens.verify import AccessTokenVerifier
from service.tokens.keys import KeyRing


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


def services_of(request: Request[Any, Any, Any]) -> Services:
    services: Services = request.app.state.services
    return services
