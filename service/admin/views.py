"""The operators' answers (CONTRACT 3.6), typed: each is a msgspec Struct, so
the OpenAPI document describes every body. Times are RFC 3339 UTC strings
(`null` for an absent time); ids are UUID strings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from service.accounts.clients import Client
from service.accounts.users import User


def rfc3339(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a Z; null for an absent time."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def moment(value: datetime) -> str:
    """RFC 3339 in UTC with a Z, of a time that is always there."""
    text = rfc3339(value)
    assert text is not None
    return text


def optional_text(value: Any) -> str | None:
    """str() of a value that may be absent (a UUID, an inet)."""
    return None if value is None else str(value)


class NewUserView(msgspec.Struct):
    id: str
    username: str


class UserView(msgspec.Struct):
    id: str
    username: str
    disabled: bool
    created_at: str

    @classmethod
    def of(cls, user: User) -> UserView:
        return cls(str(user.id), user.username, user.disabled, moment(user.created_at))


class ClientView(msgspec.Struct):
    client_id: str
    name: str
    grant_types: list[str]
    scopes: list[str]
    public: bool
    can_introspect: bool
    is_admin: bool
    created_at: str
    require_dpop: bool  # CONTRACT 3.9: no login or refresh without a DPoP proof

    @classmethod
    def of(cls, client: Client) -> ClientView:
        return cls(
            client.client_id,
            client.name,
            list(client.grant_types),
            list(client.scopes),
            client.public,
            client.can_introspect,
            client.is_admin,
            moment(client.created_at),
            client.require_dpop,
        )


class NewClientView(ClientView, kw_only=True):
    """The client as created; `client_secret` is shown this once (null for a
    public client) and stored only as a hash."""

    client_secret: str | None


class FamilyView(msgspec.Struct):
    id: str
    user_id: str
    client_id: str
    scope: str
    created_at: str
    last_rotated_at: str | None
    expires_at: str
    revoked_at: str | None
    status: str  # active | revoked | expired
    revoked_reason: str | None

    @classmethod
    def of(cls, row: asyncpg.Record) -> FamilyView:
        return cls(**cls._fields(row))

    @staticmethod
    def _fields(row: asyncpg.Record) -> dict[str, Any]:
        return {
            "id": str(row["id"]),
            "user_id": str(row["user_id"]),
            "client_id": str(row["client_id"]),
            "scope": row["scope"],
            "created_at": moment(row["created_at"]),
            "last_rotated_at": rfc3339(row["last_rotated_at"]),
            "expires_at": moment(row["expires_at"]),
            "revoked_at": rfc3339(row["revoked_at"]),
            "status": row["status"],
            "revoked_reason": row["revoked_reason"],
        }


class ChainLink(msgspec.Struct):
    """One refresh token of a family (never the token itself)."""

    generation: int
    issued_at: str
    spent_at: str | None
    expires_at: str

    @classmethod
    def of(cls, row: asyncpg.Record) -> ChainLink:
        return cls(
            row["generation"],
            moment(row["issued_at"]),
            rfc3339(row["spent_at"]),
            moment(row["expires_at"]),
        )


class FamilyDetail(FamilyView, kw_only=True):
    chain: list[ChainLink]

    @classmethod
    def with_chain(cls, row: asyncpg.Record, links: list[asyncpg.Record]) -> FamilyDetail:
        return cls(**FamilyView._fields(row), chain=[ChainLink.of(link) for link in links])


class EventView(msgspec.Struct):
    id: str
    type: str
    at: str
    user_id: str | None
    client_id: str | None
    family_id: str | None
    ip: str | None
    user_agent: str | None
    detail: dict[str, Any]

    @classmethod
    def of(cls, row: asyncpg.Record) -> EventView:
        return cls(
            str(row["id"]),
            row["type"],
            moment(row["at"]),
            optional_text(row["user_id"]),
            optional_text(row["client_id"]),
            optional_text(row["family_id"]),
            optional_text(row["ip"]),
            row["user_agent"],
            row["detail"],
        )


class KeyView(msgspec.Struct):
    """A signing key as listed (never private material)."""

    kid: str
    alg: str
    state: str
    created_at: str
    activated_at: str | None
    retired_at: str | None

    @classmethod
    def of(cls, row: asyncpg.Record) -> KeyView:
        return cls(
            row["kid"],
            row["alg"],
            row["state"],
            moment(row["created_at"]),
            rfc3339(row["activated_at"]),
            rfc3339(row["retired_at"]),
        )


class Revoked(msgspec.Struct):
    revoked: int  # families newly revoked


class FamilyPage(msgspec.Struct):
    items: list[FamilyView]
    next: str | None  # the cursor of the next page


class EventPage(msgspec.Struct):
    items: list[EventView]
    next: str | None


class KeyPage(msgspec.Struct):
    items: list[KeyView]
    next: str | None
