"""The resource owner password credentials grant (RFC 6749 section 4.3).

For first-party clients only, enabled per client (RFC 9700 section 2.4). A
login starts a new family. Its limits (service/accounts/throttle.py): an
attempt is reserved before its password is hashed, and it ends as exactly
one of a success (the reservation and the username's failures are cleared in
the login's transaction), a counted failure, or neither (released).

DPoP (RFC 9449 §5, CONTRACT 3.9): a proof is verified before the attempt is
reserved (a bad one costs no password hash), and a valid one binds the new
family to its key; its jti is recorded in the login's transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from service.accounts.clients import Client
from service.accounts.passwords import MAX_PASSWORD_CHARS, PasswordHasher
from service.accounts.throttle import Attempt, LoginFailed, LoginThrottle, Subjects
from service.accounts.users import User
from service.db import accounts
from service.db.pool import Database
from service.errors import InvalidDpopProof, InvalidRequest
from service.events import Caller
from service.tokens import dpop
from service.tokens.access import AccessTokenIssuer
from service.tokens.families import FamilyLimits, start_family
from service.tokens.grants.base import TokenResponse, token_type
from service.tokens.scopes import grant_scope

MAX_USERNAME_CHARS = 255


@dataclass(frozen=True, slots=True)
class _Login:
    """One password attempt, from its reservation on."""

    client: Client
    user: User | None
    attempt: Attempt
    subjects: Subjects
    caller: Caller
    proof: dpop.Proof | None


class PasswordGrant:
    def __init__(
        self,
        *,
        database: Database,
        hasher: PasswordHasher,
        throttle: LoginThrottle,
        limits: FamilyLimits,
        issuer: AccessTokenIssuer,
        proofs: dpop.DpopVerifier,
    ) -> None:
        self._proofs = proofs
        self._db = database
        self._hasher = hasher
        self._throttle = throttle
        self._limits = limits
        self._issuer = issuer

    async def __call__(
        self, client: Client, form: Mapping[str, str], caller: Caller, proof: dpop.PresentedProof
    ) -> TokenResponse:
        username, password = form.get("username"), form.get("password")
        if username is None or password is None:
            raise InvalidRequest("the password grant needs username and password")
        if len(username) > MAX_USERNAME_CHARS or len(password) > MAX_PASSWORD_CHARS:
            # No stored password can be this long: refused before any hashing.
            raise InvalidRequest("username or password too long")
        scope = grant_scope(form.get("scope"), client.scopes)
        verified = self._proofs.verify(proof)
        if verified is None and client.require_dpop:
            raise InvalidDpopProof("this client must send a DPoP proof", reason="missing")
        subjects = Subjects(username, caller.ip)
        user, attempt = await self._throttle.reserve(subjects, caller, client.id)
        login = _Login(client, user, attempt, subjects, caller, verified)
        try:
            return await self._log_in(login, password, scope)
        except LoginFailed:
            raise  # the reserved row stays: it is the failure, counted
        except BaseException:
            # Neither success nor failure (hashing unavailable, the request's
            # deadline, a lost client, the database): not a failure either.
            await asyncio.shield(self._throttle.release(attempt))
            raise

    async def _log_in(self, login: _Login, password: str, scope: str) -> TokenResponse:
        user = login.user
        if not await self._hasher.verify(user.password_hash if user else None, password):
            raise await self._failed(login, "bad_credentials")
        assert user is not None
        if user.disabled:
            raise await self._failed(login, "user_disabled")
        new_hash = None
        if self._hasher.needs_rehash(user.password_hash):
            new_hash = await self._hasher.hash(password)
        jkt = None if login.proof is None else login.proof.jkt
        async with self._db.transaction() as connection:
            if login.proof is not None:
                await dpop.spend(connection, login.proof)
            await self._throttle.succeeded(connection, login.subjects, login.attempt)
            if new_hash is not None:
                await accounts.set_password_hash(connection, user.id, new_hash, changed=False)
            family = await start_family(
                connection,
                self._limits,
                user_id=user.id,
                client_id=login.client.id,
                scope=scope,
                caller=login.caller,
                dpop_jkt=jkt,
            )
        issued = self._issuer.issue(
            subject=str(user.id),
            client_id=login.client.client_id,
            scope=scope,
            family_id=family.family_id,
            jkt=jkt,
        )
        return TokenResponse(
            issued.token, issued.expires_in, scope, family.refresh_token, token_type(jkt)
        )

    async def _failed(self, login: _Login, reason: str) -> LoginFailed:
        return await self._throttle.fail(
            login.subjects,
            login.attempt,
            caller=login.caller,
            client_id=login.client.id,
            user=login.user,
            reason=reason,
        )
