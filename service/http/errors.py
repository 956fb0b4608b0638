"""One place that turns errors into answers: RFC 6749 5.2 bodies, never a 500 body
that says more than "server_error", never a secret."""

from __future__ import annotations

import logging
import re
from typing import Any

import asyncpg
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from service.accounts.passwords import HashingUnavailable
from service.db.pool import DatabaseUnavailable
from service.errors import OAuthError, TemporarilyUnavailable

log = logging.getLogger("rotor.http")

_CODES = {
    400: "invalid_request",
    401: "invalid_client",
    403: "access_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "invalid_request",
    415: "invalid_request",
    422: "invalid_request",
    429: "slow_down",
    503: "temporarily_unavailable",
}

AnyRequest = Request[Any, Any, Any]

# RFC 6749 5.2: error-description = *( %x20-21 / %x23-5B / %x5D-7E ).
_NOT_ALLOWED_IN_DESCRIPTION = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


def clean_description(description: str) -> str:
    """The description with every character RFC 6749 5.2 does not allow (`"`,
    `\\`, controls, anything outside printable ASCII) replaced by `?`. A last
    line of defence: the messages Rotor writes hold none, and never the caller's
    text (CONTRACT section 3)."""
    return _NOT_ALLOWED_IN_DESCRIPTION.sub("?", description)


def error_response(
    status: int, error: str, description: str, headers: dict[str, str] | None = None
) -> Response[dict[str, str]]:
    return Response(
        {"error": error, "error_description": clean_description(description)},
        status_code=status,
        headers=headers,
        media_type=MediaType.JSON,
    )


def oauth_error(_: AnyRequest, exc: OAuthError) -> Response[dict[str, str]]:
    return error_response(exc.status, exc.error, exc.description, exc.headers)


def unavailable(_: AnyRequest, __: DatabaseUnavailable) -> Response[dict[str, str]]:
    exc = TemporarilyUnavailable()
    return error_response(exc.status, exc.error, exc.description, exc.headers)


# Litestar details that quote the request: the caller's Content-Length header,
# the path and query of a request that failed validation. Answered without it.
_ECHOING_DETAILS = {
    "Invalid content-length": "the Content-Length header is not a number",
    "Validation failed for": "the request is not valid",
}


def _litestar_detail(detail: object) -> str:
    if not isinstance(detail, str):
        return "request refused"
    for prefix, replacement in _ECHOING_DETAILS.items():
        if detail.startswith(prefix):
            return replacement
    return detail


def http_exception(_: AnyRequest, exc: HTTPException) -> Response[dict[str, str]]:
    status = exc.status_code
    description = _litestar_detail(exc.detail)
    if status == 400 and isinstance(exc.extra, list) and exc.extra:
        # Validation errors name the field; never echo the value.
        fields = sorted(
            {str(item["key"]) for item in exc.extra if isinstance(item, dict) and item.get("key")}
        )
        if fields:
            description = f"invalid or missing field(s): {', '.join(fields)}"
    if status >= 500:
        log.error("server error answered by an HTTPException", extra={"status": status})
    return error_response(
        status, _CODES.get(status, "invalid_request"), description, dict(exc.headers or {})
    )


def bad_data(_: AnyRequest, exc: asyncpg.DataError) -> Response[dict[str, str]]:
    # Last line of defence: input PostgreSQL cannot store (e.g. NUL in text) is
    # the caller's error, never a 500. Checks at the edge should catch it first,
    # so it is logged for a look.
    log.warning("database refused a value", extra={"sqlstate": exc.sqlstate})
    return error_response(
        400, "invalid_request", "a value in the request is out of range or holds a NUL character"
    )


def hashing_unavailable(_: AnyRequest, exc: HashingUnavailable) -> Response[dict[str, str]]:
    return error_response(503, "temporarily_unavailable", exc.description, {"Retry-After": "1"})


def server_error(_: AnyRequest, exc: Exception) -> Response[dict[str, str]]:
    log.error("unhandled error", exc_info=exc)
    return error_response(
        HTTP_500_INTERNAL_SERVER_ERROR, "server_error", "the server could not answer this request"
    )


EXCEPTION_HANDLERS: dict[int | type[Exception], Any] = {
    OAuthError: oauth_error,
    DatabaseUnavailable: unavailable,
    HTTPException: http_exception,
    asyncpg.DataError: bad_data,
    HashingUnavailable: hashing_unavailable,
    Exception: server_error,
}
