"""Lists: newest first, `limit` 1..500 (default 50), opaque string cursors."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from service.errors import InvalidRequest

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


BadRequest = InvalidRequest  # a malformed id, cursor, limit or filter: 400


Row = TypeVar("Row")


def split_page(
    rows: Sequence[Row], size: int, position: Callable[[Row], tuple[Any, ...]]
) -> tuple[list[Row], str | None]:
    """A page of `size` from `size + 1` rows fetched, and the cursor of the next
    page (the last row's position), if there is one."""
    if len(rows) <= size:
        return list(rows), None
    return list(rows[:size]), encode_cursor(*position(rows[size - 1]))


def check_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def parse_id(value: str, what: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadRequest(f"{what} must be a UUID") from None


def encode_cursor(*position: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(list(position))).decode().rstrip("=")


def decode_cursor(cursor: str | None, kinds: tuple[type, ...]) -> list[Any] | None:
    """The position a cursor names; values typed by `kinds` (datetime, uuid.UUID, int, str)."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = msgspec.json.decode(raw)
        if not isinstance(values, list) or len(values) != len(kinds):
            raise ValueError
        return [_typed(value, kind) for value, kind in zip(values, kinds, strict=True)]
    except (binascii.Error, ValueError, TypeError, msgspec.DecodeError):
        raise BadRequest("cursor is not one this server issued") from None


def _typed(value: Any, kind: type) -> Any:
    if kind is datetime:
        return datetime.fromisoformat(str(value))
    if kind is uuid.UUID:
        return uuid.UUID(str(value))
    if kind is int:  # a bigint in the database
        if not isinstance(value, int) or isinstance(value, bool) or abs(value) >= 2**63:
            raise ValueError
        return value
    return str(value)


def parse_time(value: str, what: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{what} must be an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise BadRequest(f"{what} must carry a time zone (RFC 3339)")
    try:  # 9999-12-31T23:59:59-01:00 is in year 10000 in UTC, as PostgreSQL stores it
        return moment.astimezone(UTC)
    except OverflowError:
        raise BadRequest(f"{what} is out of range") from None
