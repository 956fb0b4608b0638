"""The token endpoint's grants (RFC 6749 sections 4.3, 4.4 and 6).

Knows no HTTP: it takes the parsed form, the presented client credentials and
the caller, and returns a token response or raises an OAuthError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from service.accounts.clients import (
    PUBLIC_GRANTS,
    Client,
    ClientCache,
    Credentials,
    authenticate,
)
from service.accounts.passwords import MAX_PASSWORD_CHARS, HashQueueFull, PasswordHasher
from service.accounts.throttle import Attempt, LoginThrottle, Subjects
from service.accounts.users import User, UserStore
from service.db.pool import Database
from service.deadline import deadline_paused
from service.errors import (
    InvalidGrant,
    InvalidRequest,
    TooManyAttempts,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from service.events import Caller, record
from service.observability import metrics
from service.tokens.access import AccessTokenIssuer
from service.tokens.families import FamilyStore
from service.tokens.rotation import RotationService
from service.tokens.scopes import grant_scope

log = logging.getLogger("rotor.grants")

# An attempt that finds the limit taken up by attempts in flight looks again
# after IN_FLIGHT_POLL, then twice as long each time up to IN_FLIGHT_POLL_MAX,
# for at most IN_FLIGHT_MAX_WAIT in all (then 503: logins are backed up).
IN_FLIGHT_POLL = 0.05
IN_FLIGHT_POLL_MAX = 0.4
IN_FLIGHT_MAX_WAIT = 10.0


@dataclass(frozen=True, slots=True)
class _Login:
    """One password attempt, from its reservation on."""

    client: Client
    user: User | None
    attempt: Attempt
    subjects: Subjects
    caller: Caller


class LoginFailed(InvalidGrant):
    """A password login that failed and was counted (its reserved row stays)."""


MAX_USERNAME_CHARS = 255


@dataclass(frozen=True, slots=True)
class TokenResponse:
    access_token: str
    expires_in: int
    scope: str
    refresh_token: str | None = None
    token_type: str = "Bearer"  # noqa: S105 - RFC 6750 token type, not a secret


Grant = Callable[[Client, Mapping[str, str], str, Caller], Awaitable[TokenResponse]]


class TokenService:
    def __init__(
        self,
        *,
        database: Database,
        clients: ClientCache,
        users: UserStore,
        hasher: PasswordHasher,
        throttle: LoginThrottle,
        families: FamilyStore,
        issuer: AccessTokenIssuer,
        rotation: RotationService,
    ) -> None:
        self._db = database
        self._clients = clients
        self._users = users
        self._hasher = hasher
        self._throttle = throttle
        self._families = families
        self._issuer = issuer
        self._rotation = rotation
        self._grants: dict[str, Grant] = {
            "password": self._password,
            "client_credentials": self._client_credentials,
            "refresh_token": self._refresh_token,
        }

    async def authenticate(self, credentials: Credentials) -> Client:
        return await authenticate(self._clients, credentials)

    async def token(
        self, form: Mapping[str, str], credentials: Credentials, caller: Caller
    ) -> TokenResponse:
        grant_type = form.get("grant_type")
        if grant_type is None:
            raise InvalidRequest("missing grant_type")
        client = await self.authenticate(credentials)
        grant = self._grants.get(grant_type)
        if grant is None:
            raise UnsupportedGrantType(f"unsupported grant_type {grant_type[:40]!r}")
        if grant_type not in client.grant_types or (
            client.public and grant_type not in PUBLIC_GRANTS
        ):
            raise UnauthorizedClient(f"this client may not use the {grant_type} grant")
        response = await grant(client, form, grant_type, caller)
        metrics.child(metrics.TOKENS_ISSUED, grant_type).inc()
        return response

    async def refresh(
        self, form: Mapping[str, str], credentials: Credentials, caller: Caller
    ) -> TokenResponse:
        """The hot path. It holds no connection of its own: the client comes from
        memory, and the rotation joins the others of the same moment
        (RotationService); a connection is taken only for what needs one."""
        return await self.token(form, credentials, caller)

    async def _client_credentials(
        self, client: Client, form: Mapping[str, str], _: str, __: Caller
    ) -> TokenResponse:
        # RFC 6749 4.4.3: no refresh token for this grant.
        scope = grant_scope(form.get("scope"), client.scopes)
        issued = self._issuer.issue(
            subject=client.client_id, client_id=client.client_id, scope=scope, family_id=None
        )
        return TokenResponse(issued.token, issued.expires_in, scope)

    async def _refresh_token(
        self, client: Client, form: Mapping[str, str], _: str, caller: Caller
    ) -> TokenResponse:
        # /refresh and grant_type=refresh_token at /token share this (CONTRACT 3.2, 3.3).
        result = await self._rotation.refresh(
            client, form.get("refresh_token"), form.get("scope"), caller
        )
        return TokenResponse(
            result.access_token, result.expires_in, result.scope, result.refresh_token
        )

    async def _password(
        self, client: Client, form: Mapping[str, str], _: str, caller: Caller
    ) -> TokenResponse:
        username, password = form.get("username"), form.get("password")
        if username is None or password is None:
            raise InvalidRequest("the password grant needs username and password")
        if len(username) > MAX_USERNAME_CHARS or len(password) > MAX_PASSWORD_CHARS:
            # No stored password can be this long: refused before any hashing.
            raise InvalidRequest("username or password too long")
        scope = grant_scope(form.get("scope"), client.scopes)
        subjects = Subjects(username, caller.ip)
        user, attempt = await self._reserve_attempt(client, subjects, caller)
        login = _Login(client, user, attempt, subjects, caller)
        try:
            return await self._log_in(login, password, scope)
        except LoginFailed:
            raise  # the reserved row stays: it is the failure, counted
        except BaseException:
            # Neither success nor failure (hashing unavailable, the request's
            # deadline, a lost client, the database): not a failure either.
            await asyncio.shield(self._release(attempt))
            raise

    async def _log_in(self, login: _Login, password: str, scope: str) -> TokenResponse:
        client, user, attempt, subjects = login.client, login.user, login.attempt, login.subjects
        if not await self._hasher.verify(user.password_hash if user else None, password):
            await self._login_failed(login, "bad_credentials")
        assert user is not None
        if user.disabled:
            await self._login_failed(login, "user_disabled")
        new_hash = None
        if self._hasher.needs_rehash(user.password_hash):
            new_hash = await self._hasher.hash(password)
        async with self._db.transaction() as connection:
            await self._throttle.succeeded(connection, subjects, attempt)
            if new_hash is not None:
                await self._users.set_password_hash(connection, user.id, new_hash, changed=False)
            family = await self._families.start(
                connection, user_id=user.id, client_id=client.id, scope=scope
            )
        issued = self._issuer.issue(
            subject=str(user.id),
            client_id=client.client_id,
            scope=scope,
            family_id=family.family_id,
        )
        return TokenResponse(issued.token, issued.expires_in, scope, family.refresh_token)

    async def _reserve_attempt(
        self, client: Client, subjects: Subjects, caller: Caller
    ) -> tuple[User | None, Attempt]:
        """Each try is one transaction, committed before any answer: the 429 and
        its event must survive the error response (STYLE.md, unit of work).
        While failures and attempts in flight take up the limit, the attempt
        waits for one of them to end: only failures lock (CONTRACT section 1)."""
        waited, pause = 0.0, IN_FLIGHT_POLL
        with contextlib.ExitStack() as waiting:
            while True:
                async with self._db.transaction() as connection:
                    reserved = await self._throttle.reserve(connection, subjects)
                    if isinstance(reserved, Attempt):
                        user = await self._users.by_username(connection, subjects.username)
                        return user, reserved
                    if isinstance(reserved, int):
                        await record(
                            connection,
                            "login_locked",
                            caller,
                            client_id=client.id,
                            detail={"retry_after": reserved},
                        )
                if isinstance(reserved, int):
                    metrics.LOGIN_LOCKOUTS.inc()
                    raise TooManyAttempts(reserved)
                if waited >= IN_FLIGHT_MAX_WAIT:
                    raise HashQueueFull  # 503 with Retry-After: logins are backed up
                if not waited:
                    # A waiting login holds a place in the hash queue: a flood of
                    # guesses at one account is bounded like any other.
                    waiting.enter_context(self._hasher.queued())
                async with deadline_paused():  # waiting on hashes, as a hash does
                    await asyncio.sleep(pause)
                waited += pause
                pause = min(2 * pause, IN_FLIGHT_POLL_MAX)

    async def _release(self, attempt: Attempt) -> None:
        try:
            async with self._db.transaction() as connection:
                await self._throttle.release(connection, attempt)
        except Exception:
            # The pending row then counts as a failure once STALE_PENDING passes.
            log.warning("a login attempt's reservation could not be released")

    async def _login_failed(self, login: _Login, reason: str) -> None:
        """The reserved username row becomes the failure, the IP failure is added
        and the event recorded, all committed; then the answer."""
        user = login.user
        async with self._db.transaction() as connection:
            await self._throttle.failed(connection, login.subjects, login.attempt)
            await record(
                connection,
                "login_failed",
                login.caller,
                client_id=login.client.id,
                user_id=user.id if user else None,
                detail={"reason": reason if user else "unknown_user"},
            )
        metrics.LOGIN_FAILURES.inc()
        raise LoginFailed("invalid username or password")
