"""Refresh-token rotation with reuse detection (RFC 6749 section 6, RFC 9700 4.14).

How it is done in SQL (service/db/families.py), with the database's clock
throughout:

1. One compare-and-set statement (its own implicit transaction, one round
   trip, shared by the rotations of the same moment): spend the presented
   token if it is live, unexpired, issued to this client, of a live family
   whose user is enabled and whose scope covers the request, and insert its
   successor. Of any number of concurrent requests with the same token,
   exactly one matches: in another statement, the others wait for its row
   lock and then see `spent_at` set (READ COMMITTED re-checks the WHERE
   clause); in the same statement, the row is updated by one of them only.
2. Zero rows means "look closer" (one more statement): unknown, another
   client's, expired, revoked, narrower scope refused, a retry within the
   grace window, or reuse.
3. Reuse revokes the family and records the events in one statement, which
   has committed before `invalid_grant` is answered (the write must survive
   the error answer).

DPoP (RFC 9449 §5, CONTRACT 3.9): a proof is verified before any statement,
and its jti recorded (one statement) before the compare-and-set, which then
spends a bound family's token only for a proof by the family's key. A bound
family's token presented without such a proof is refused before reuse is
considered: nothing is spent, nothing revoked (holding the token without the
key gains nothing), and a `dpop_mismatch` event is recorded. A request with
no DPoP header costs nothing more than before.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import asyncpg

from service.accounts.clients import Client
from service.db import dpop as dpop_store
from service.db import events, families
from service.db.batch import Batcher
from service.db.pool import Connection, Database
from service.errors import InvalidDpopProof, InvalidGrant, InvalidRequest, InvalidScope
from service.events import Caller
from service.observability import metrics
from service.tokens import dpop
from service.tokens.access import AccessTokenIssuer
from service.tokens.families import new_refresh_token, session_user_agent, token_fingerprint
from service.tokens.scopes import requested_scopes
from service.tokens.secretbox import BoxOpenError, SecretBox

log = logging.getLogger("rotor.rotation")

MAX_ATTEMPTS = 3
MAX_TOKEN_CHARS = 512


class _ChangedUnderfoot(Exception):
    """The token changed between the two statements of one rotation."""


RETRYABLE = (
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.UniqueViolationError,
    _ChangedUnderfoot,
)


@dataclass(frozen=True, slots=True)
class Presented:
    """One rotation to attempt: the presented token's hash, by whom, and its
    successor (hash, and sealed for a grace retry when there is a window); the
    caller's IP and user agent become the family's last use (CONTRACT 3.8)."""

    token_hash: bytes
    client_id: uuid.UUID
    box: bytes | None
    successor_hash: bytes
    requested: str | None
    ip: str | None
    user_agent: str | None
    jkt: str | None  # the thumbprint of the request's verified DPoP proof


@dataclass(frozen=True, slots=True)
class Rotated:
    family_id: uuid.UUID
    user_id: uuid.UUID
    refresh_token: str
    scope: str
    dpop_jkt: str | None  # the key the family is bound to


@dataclass(frozen=True, slots=True)
class RotationResult:
    access_token: str
    expires_in: int
    refresh_token: str
    scope: str
    dpop_jkt: str | None


def successor_box(parent_token: str) -> SecretBox:
    """The key that guards a successor is derived from its parent token, which
    only the parent's holder can present: the store alone cannot open it."""
    return SecretBox.for_purpose(parent_token.encode(), b"successor")


class RotationService:
    def __init__(
        self,
        *,
        database: Database,
        issuer: AccessTokenIssuer,
        idle_ttl: int,
        reuse_grace: int,
        proofs: dpop.DpopVerifier,
    ) -> None:
        self._db = database
        self._issuer = issuer
        self._proofs = proofs
        self._idle_ttl = idle_ttl
        self._grace = reuse_grace
        self._rotations = Batcher(database, self._rotate_all)
        self._spent_proofs = Batcher(database, self._spend_all)

    async def _spend_all(self, connection: Connection, batch: list[dpop.Proof]) -> list[bool]:
        return await dpop_store.record_jtis(
            connection, [(p.endpoint, p.jti, p.expires_at) for p in batch]
        )

    async def _rotate_all(
        self, connection: Connection, batch: list[Presented]
    ) -> list[asyncpg.Record | None]:
        return await families.rotate(
            connection,
            token_hashes=[p.token_hash for p in batch],
            client_ids=[p.client_id for p in batch],
            boxes=[p.box for p in batch],
            successor_hashes=[p.successor_hash for p in batch],
            requested=[p.requested for p in batch],
            idle_ttl=self._idle_ttl,
            ips=[p.ip for p in batch],
            user_agents=[p.user_agent for p in batch],
            jkts=[p.jkt for p in batch],
        )

    async def refresh(
        self,
        client: Client,
        token: str | None,
        scope: str | None,
        caller: Caller,
        presented: dpop.PresentedProof = dpop.NO_PROOF,
    ) -> RotationResult:
        if token is None:
            raise InvalidRequest("missing refresh_token")
        requested = requested_scopes(scope)
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidGrant("refresh token is invalid, expired or revoked")
        try:
            jkt = await self._proof(client, presented)
        except InvalidDpopProof as refused:
            await self._refused_proof(client, token, refused, caller)
            raise
        rotated = await self._rotate_with_retries(client, token, requested, caller, jkt)
        granted = rotated.scope if requested is None else " ".join(requested)
        issued = self._issuer.issue(
            subject=str(rotated.user_id),
            client_id=client.client_id,
            scope=granted,
            family_id=rotated.family_id,
            jkt=rotated.dpop_jkt,
        )
        return RotationResult(
            issued.token, issued.expires_in, rotated.refresh_token, granted, rotated.dpop_jkt
        )

    async def _proof(self, client: Client, presented: dpop.PresentedProof) -> str | None:
        """The thumbprint of the request's valid, unreplayed proof; None without one."""
        proof = self._proofs.verify(presented)
        if proof is None:
            if client.require_dpop:
                raise InvalidDpopProof("this client must send a DPoP proof", reason="missing")
            return None
        # RFC 9449 §11.1: the jti once per endpoint, recorded with the other
        # bound refreshes of the moment in one statement.
        dpop.unseen(await self._spent_proofs.get(proof))
        return proof.jkt

    async def _refused_proof(
        self, client: Client, token: str, refused: InvalidDpopProof, caller: Caller
    ) -> None:
        """A refused proof with a bound family's token: the dpop_mismatch event."""
        async with self._db.connection() as connection:
            row = await families.inspect(connection, token_fingerprint(token))
            if row is not None and row["client_id"] == client.id and row["dpop_jkt"] is not None:
                await self._record_mismatch(connection, client, row, refused.reason, caller)

    async def _record_mismatch(
        self,
        connection: Connection,
        client: Client,
        row: asyncpg.Record,
        reason: str,
        caller: Caller,
    ) -> None:
        await events.record(
            connection,
            "dpop_mismatch",
            caller,
            user_id=row["user_id"],
            client_id=client.id,
            family_id=row["family_id"],
            detail={"reason": reason},
        )
        log.warning(
            "refresh of a DPoP-bound family refused",
            extra={"family_id": str(row["family_id"]), "reason": reason},
        )

    async def _rotate_with_retries(
        self,
        client: Client,
        token: str,
        requested: list[str] | None,
        caller: Caller,
        jkt: str | None,
    ) -> Rotated:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await self._rotate(client, token, requested, caller, jkt)
            except RETRYABLE:
                # Serialization failures and deadlocks between concurrent
                # requests with the same token: retry, bounded; never a 500.
                if attempt == MAX_ATTEMPTS:
                    log.warning("rotation gave up after concurrent conflicts")
                    raise InvalidGrant("concurrent requests with the same refresh token") from None
        raise AssertionError("unreachable")

    async def _rotate(
        self,
        client: Client,
        token: str,
        requested: list[str] | None,
        caller: Caller,
        jkt: str | None,
    ) -> Rotated:
        token_hash = token_fingerprint(token)
        successor = new_refresh_token()
        box = successor_box(token).seal(successor.encode(), token_hash) if self._grace > 0 else None
        presented = Presented(
            token_hash,
            client.id,
            box,
            token_fingerprint(successor),
            None if requested is None else " ".join(requested),
            caller.ip,
            session_user_agent(caller),
            jkt,
        )
        row = await self._rotations.get(presented)
        if row is not None:
            metrics.ROTATIONS.inc()
            return Rotated(
                row["family_id"], row["user_id"], successor, row["scope"], row["dpop_jkt"]
            )
        async with self._db.connection() as connection:
            return await self._look_closer(connection, client, token, presented, requested, caller)

    async def _look_closer(
        self,
        connection: Connection,
        client: Client,
        token: str,
        presented: Presented,
        requested: list[str] | None,
        caller: Caller,
    ) -> Rotated:
        token_hash = presented.token_hash
        row = await families.inspect(connection, token_hash)
        # RFC 6749 10.4 / CONTRACT 3.3: another client's token changes nothing.
        if row is None or row["client_id"] != client.id:
            raise InvalidGrant("refresh token is invalid, expired or revoked")
        if row["dpop_jkt"] is not None and row["dpop_jkt"] != presented.jkt:
            # RFC 9449 §5: a bound family's token needs a proof by its key;
            # without one it is refused before reuse is even considered.
            refused = _mismatch(presented.jkt)
            await self._record_mismatch(connection, client, row, refused.reason, caller)
            raise refused
        if row["spent"]:
            retried = self._grace_retry(row, token, token_hash) if row["family_open"] else None
            if retried is not None:
                self._check_scope(row["scope"], requested)
                metrics.GRACE_RETRIES.inc()
                return Rotated(
                    row["family_id"], row["user_id"], retried, row["scope"], row["dpop_jkt"]
                )
            await self._revoke_for_reuse(connection, client, row, caller)
            raise InvalidGrant("refresh token was already used; the session is revoked")
        if not row["family_open"] or not row["unexpired"]:
            raise InvalidGrant("refresh token is invalid, expired or revoked")
        self._check_scope(row["scope"], requested)
        # Live and in scope, yet not rotated: it changed between the two
        # statements (a concurrent rotation); the caller retries.
        raise _ChangedUnderfoot

    def _grace_retry(self, row: asyncpg.Record, token: str, token_hash: bytes) -> str | None:
        """CONTRACT 3.3: the immediate parent, re-presented within the grace
        window, receives the same successor, while that successor is live."""
        if self._grace <= 0 or row["successor_box"] is None or not row["child_live"]:
            return None
        if row["seconds_since_spent"] >= self._grace:
            return None
        try:
            successor = successor_box(token).open(row["successor_box"], token_hash).decode()
        except BoxOpenError:
            return None
        if token_fingerprint(successor) != row["child_hash"]:
            return None
        return successor

    @staticmethod
    def _check_scope(family_scope: str, requested: list[str] | None) -> None:
        # RFC 6749 6: the new scope MUST NOT include any scope not originally granted.
        if requested is not None and not set(requested) <= set(family_scope.split()):
            raise InvalidScope("a refresh may narrow the scope, never widen it")

    async def _revoke_for_reuse(
        self, connection: Connection, client: Client, row: asyncpg.Record, caller: Caller
    ) -> None:
        detail = {
            "generation": row["generation"],
            "seconds_since_spent": round(row["seconds_since_spent"], 3),
        }
        newly_revoked = await families.revoke_for_reuse(
            connection,
            family_id=row["family_id"],
            user_id=row["user_id"],
            client_id=client.id,
            caller=caller,
            detail=detail,
        )
        metrics.REUSE_DETECTED.inc()
        metrics.child(metrics.FAMILIES_REVOKED, "reuse_detected").inc(newly_revoked)
        log.warning(
            "refresh token reuse detected; family revoked",
            extra={"family_id": str(row["family_id"]), "generation": row["generation"]},
        )


def _mismatch(jkt: str | None) -> InvalidDpopProof:
    if jkt is None:
        return InvalidDpopProof("this session needs a DPoP proof", reason="missing")
    return InvalidDpopProof(
        "the DPoP proof is not by the key this session is bound to", reason="other_key"
    )
