"""Scopes (RFC 6749 section 3.3): space-delimited, case-sensitive scope tokens."""

from __future__ import annotations

import re

from service.errors import InvalidScope

# scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def requested_scopes(requested: str | None) -> list[str] | None:
    """The requested scope tokens in order, without repeats; None when absent."""
    if requested is None:
        return None
    items = requested.split(" ")
    if any(not _SCOPE_TOKEN.fullmatch(item) for item in items):
        raise InvalidScope("scope must be space-separated scope tokens (RFC 6749 section 3.3)")
    return list(dict.fromkeys(items))


def is_scope_token(value: str) -> bool:
    return _SCOPE_TOKEN.fullmatch(value) is not None


def grant_scope(requested: str | None, allowed: tuple[str, ...]) -> str:
    """Without `scope` the client's allowed scopes are granted; a requested
    scope must lie within them."""
    items = requested_scopes(requested)
    if items is None:
        return " ".join(allowed)
    if not set(items) <= set(allowed):
        raise InvalidScope("requested scope exceeds what this client may be granted")
    return " ".join(items)
