"""Strict parsing of form-encoded OAuth requests (RFC 6749 section 3.2).

RFC 6749 3.1/3.2: "Request and response parameters MUST NOT be included more
than once"; parameters sent without a value MUST be treated as if omitted.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

from service.errors import InvalidRequest

FORM_TYPE = "application/x-www-form-urlencoded"
# Secrets in a URL end up in access logs and browser histories.
SECRETS_IN_QUERY = ("client_secret", "password", "refresh_token", "token")


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def parse_form(body: bytes, content_type: str | None) -> dict[str, str]:
    if media_type(content_type) != FORM_TYPE:
        raise InvalidRequest(f"the body must be {FORM_TYPE}")
    return parse_pairs(body)


NAMED_PARAMETERS = frozenset(
    {
        "grant_type",
        "username",
        "password",
        "scope",
        "refresh_token",
        "client_id",
        "client_secret",
        "token",
        "token_type_hint",
    }
)


def parse_pairs(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=False, errors="strict", max_num_fields=100
        )
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not valid UTF-8") from None
    except ValueError:
        raise InvalidRequest("the body is not a valid form") from None
    form: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            raise InvalidRequest("parameters must not contain NUL characters")
        if name in seen:
            # Only a parameter of the protocol is named: any other name is the
            # caller's text, and may be a secret sent as a bare field.
            shown = f"parameter {name!r}" if name in NAMED_PARAMETERS else "a parameter"
            raise InvalidRequest(f"{shown} is repeated")
        seen.add(name)
        if value != "":
            form[name] = value
    return form


def check_query(query: Mapping[str, object]) -> None:
    for name in SECRETS_IN_QUERY:
        if name in query:
            raise InvalidRequest(f"{name} must not be sent in the query string")
