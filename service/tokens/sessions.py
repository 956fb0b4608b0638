"""The user's own sessions (CONTRACT 3.8): "your devices", for a first-party
app or BFF acting for the user.

A session is a token family, so this lives beside the token use cases whose
pieces it composes: the access token is verified as `/introspect` verifies it
(service/tokens/verify.py) and then checked live, exactly as `/introspect`
checks it (service/tokens/introspection.py: key state, revoked jti, the
family live, its user enabled), so a revocation or a disabled user takes
effect at once; revocations are revocation.py's. Nothing of accounts/ is read:
the user is the token's `sub`, and the live-family predicate has already
checked that the user is enabled. The lists page as the operators' do
(service/admin/paging.py), and times are written as theirs.

RFC 6750 3: a missing token is a challenge without an error; a presented
token that is not valid or not active is `invalid_token` (401); a valid token
that speaks for no user (client_credentials: no `sid`) is
`insufficient_scope` (403). A family that is not the caller's, unknown,
malformed or already dead is one and the same 404, so nothing about another
user's sessions shows.

DPoP (RFC 9449 §7, CONTRACT 3.9): a bound token is accepted only under the
`DPoP` scheme, with a proof by its key for this request (`htm`, `htu`) and
this token (`ath`), whose jti is then recorded as seen at this path; anything
less is 401 with a `DPoP` challenge.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import msgspec

from service.admin.paging import check_limit, decode_cursor, split_page
from service.admin.views import Revoked, moment, optional_text, rfc3339
from service.db import families
from service.db.pool import Database
from service.errors import (
    InsufficientScope,
    InvalidDpopProof,
    InvalidDpopToken,
    InvalidToken,
    NotFound,
)
from service.events import Caller
from service.tokens import dpop
from service.tokens.introspection import access_token_state
from service.tokens.revocation import revoke_own_families
from service.tokens.verify import (
    AccessTokenVerifier,
    VerifiedAccessToken,
    bound_key,
    presented_token,
    verified_bearer,
)


class SessionView(msgspec.Struct):
    """One of the user's active sessions (families). `last_*` describe the
    latest rotation, and equal `login_*` before the first; null where the
    caller had no address or user agent, and for families older than the
    migration that began recording them."""

    id: str
    client_id: str
    client_name: str
    created_at: str
    last_rotated_at: str | None
    expires_at: str  # the family's absolute limit (ROTOR_FAMILY_MAX_TTL from login)
    login_ip: str | None
    login_user_agent: str | None
    last_ip: str | None
    last_user_agent: str | None
    current: bool  # the family of the access token presented

    @classmethod
    def of(cls, row: asyncpg.Record, current: uuid.UUID) -> SessionView:
        return cls(
            str(row["id"]),
            str(row["client_id"]),
            row["client_name"],
            moment(row["created_at"]),
            rfc3339(row["last_rotated_at"]),
            moment(row["expires_at"]),
            optional_text(row["login_ip"]),
            row["login_user_agent"],
            optional_text(row["last_ip"]),
            row["last_user_agent"],
            row["id"] == current,
        )


class SessionPage(msgspec.Struct):
    items: list[SessionView]
    next: str | None  # the cursor of the next page


class SessionHolder:
    """Whom an accepted access token speaks for: a user, through one of their
    sessions. A plain class: Litestar checks a dependency's value with
    isinstance alone (service/http/state.py)."""

    __slots__ = ("family_id", "user_id")

    def __init__(self, user_id: uuid.UUID, family_id: uuid.UUID) -> None:
        self.user_id = user_id
        self.family_id = family_id


class UserSessions:
    def __init__(
        self, database: Database, verifier: AccessTokenVerifier, proofs: dpop.DpopVerifier
    ) -> None:
        self._db = database
        self._verifier = verifier
        self._proofs = proofs

    async def authenticate(
        self, authorization: str | None, proof: dpop.PresentedProof = dpop.NO_PROOF
    ) -> SessionHolder:
        """The holder of a live user's access token, else InvalidToken or
        InvalidDpopToken (401) or InsufficientScope (403)."""
        verified, checked = self._verified(authorization, proof)
        async with self._db.connection() as connection:
            if checked is not None:
                try:
                    await dpop.spend(connection, checked)
                except InvalidDpopProof:
                    raise InvalidDpopToken(
                        "the DPoP proof was already used", proof_at_fault=True
                    ) from None
            active, _username = await access_token_state(connection, verified)
        if not active:
            raise InvalidToken("the access token is no longer active", presented=True)
        if verified.family_id is None:
            raise InsufficientScope("the access token is not a user's: it has no session")
        try:  # only a token signed by Rotor's key gets here; Rotor writes a UUID
            user_id = uuid.UUID(str(verified.claims["sub"]))
        except ValueError:
            raise InvalidToken("the access token is invalid or expired", presented=True) from None
        return SessionHolder(user_id, verified.family_id)

    def _verified(
        self, authorization: str | None, proof: dpop.PresentedProof
    ) -> tuple[VerifiedAccessToken, dpop.Proof | None]:
        """The verified token and, for a DPoP-bound one, its verified proof."""
        presented = presented_token(authorization)
        if presented is None or presented[0] == "bearer":
            return verified_bearer(self._verifier, authorization), None
        token = presented[1]
        verified = self._verifier.verify(token)
        if verified is None:
            raise InvalidDpopToken("the access token is invalid or expired", proof_at_fault=False)
        jkt = bound_key(verified)
        if jkt is None:
            # RFC 9449 7.1: the DPoP scheme is for DPoP-bound tokens.
            raise InvalidToken(
                "the access token is not DPoP-bound: present it as Bearer", presented=True
            )
        try:
            checked = self._proofs.verify(proof, access_token=token)
        except InvalidDpopProof:
            raise InvalidDpopToken("the DPoP proof is invalid", proof_at_fault=True) from None
        if checked is None:
            raise InvalidDpopToken("a DPoP proof is required", proof_at_fault=True)
        if checked.jkt != jkt:
            raise InvalidDpopToken(
                "the DPoP proof is not by the key the token is bound to", proof_at_fault=True
            )
        return verified, checked

    async def list(
        self, holder: SessionHolder, limit: int | None, cursor: str | None
    ) -> SessionPage:
        """The user's active sessions, newest first."""
        size = check_limit(limit)
        position = decode_cursor(cursor, (datetime, uuid.UUID))
        async with self._db.connection() as connection:
            rows = await families.live_families_of_user(
                connection,
                holder.user_id,
                after=(position[0], position[1]) if position else None,
                limit=size + 1,
            )
        items, next_cursor = split_page(
            rows, size, lambda row: (row["created_at"].isoformat(), str(row["id"]))
        )
        return SessionPage([SessionView.of(row, holder.family_id) for row in items], next_cursor)

    async def revoke(self, holder: SessionHolder, session_id: str, caller: Caller) -> None:
        """Sign out one of the user's sessions (the current one too)."""
        try:
            family_id = uuid.UUID(session_id)
        except ValueError:
            raise NotFound("no such session") from None  # as an unknown id: no 400 here
        async with self._db.transaction() as connection:
            revoked = await revoke_own_families(
                connection, "one", holder.user_id, family_id, caller
            )
        if revoked == 0:
            raise NotFound("no such session")

    async def revoke_others(self, holder: SessionHolder, caller: Caller) -> Revoked:
        """Sign out every session of the user but the current one."""
        async with self._db.transaction() as connection:
            revoked = await revoke_own_families(
                connection, "others", holder.user_id, holder.family_id, caller
            )
        return Revoked(revoked)
