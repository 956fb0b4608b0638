"""What a request presents to authenticate its client (RFC 6749 section 2.3):
HTTP Basic (`client_secret_basic`) or body fields (`client_secret_post`), one
method per request. Checking them is service/accounts/clients.py's job."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote_plus

from litestar import Request

from service.accounts.clients import Client, Credentials
from service.errors import InvalidClient, InvalidRequest
from service.http.forms import check_query, parse_form
from service.http.state import Services


def parse_basic(header: str) -> Credentials:
    """RFC 6749 2.3.1: id and secret are form-encoded, then joined by ':' in Basic."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        raise InvalidClient("unsupported Authorization scheme; use HTTP Basic")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text; UnicodeDecodeError too
        raise InvalidClient("malformed HTTP Basic credentials") from None
    client_id, sep, client_secret = decoded.partition(":")
    if not sep:
        raise InvalidClient("malformed HTTP Basic credentials")
    return Credentials(unquote_plus(client_id) or None, unquote_plus(client_secret) or None)


def presented_credentials(
    authorization: str | None, body_client_id: str | None, body_client_secret: str | None
) -> Credentials:
    """One authentication method per request (RFC 6749 2.3)."""
    if authorization is None:
        return Credentials(body_client_id, body_client_secret)
    basic = parse_basic(authorization)
    if body_client_secret is not None:
        raise InvalidRequest("more than one client authentication method in the request")
    if body_client_id is not None and body_client_id != basic.client_id:
        raise InvalidRequest("client_id in the body does not match the Authorization header")
    return basic


async def authenticated_form(
    request: Request[Any, Any, Any], services: Services, body: bytes
) -> tuple[Client, dict[str, str]]:
    """A form-encoded request of an authenticated client (/introspect, /revoke):
    the client and the form."""
    check_query(request.query_params)
    form = parse_form(body, request.headers.get("content-type"))
    credentials = presented_credentials(
        request.headers.get("authorization"), form.get("client_id"), form.get("client_secret")
    )
    client = await services.tokens.authenticate(credentials)
    return client, form


def token_of(form: dict[str, str]) -> str:
    """The `token` parameter of RFC 7662 and RFC 7009."""
    token = form.get("token")
    if token is None:
        raise InvalidRequest("missing token")
    return token
