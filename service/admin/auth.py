"""Who may use the operators' API (CONTRACT 3.6): the bearer of a valid, live
access token of a client with the admin permission.

Live means as `/introspect` would answer now (key, jti, family), and the
client's row is read now too, never from the client cache: taking the
permission away, or revoking the token, takes effect at once.
"""

from __future__ import annotations

import uuid

from service.accounts.clients import Client, get_client
from service.db.pool import Database
from service.errors import Forbidden, InvalidToken
from service.tokens.introspection import access_token_state
from service.tokens.verify import AccessTokenVerifier, verified_bearer


class AdminAuth:
    def __init__(self, database: Database, verifier: AccessTokenVerifier) -> None:
        self._db = database
        self._verifier = verifier

    async def authenticate(self, authorization: str | None) -> Client:
        """The admin client behind an `Authorization: Bearer` header; InvalidToken
        (401) or Forbidden (403) otherwise."""
        verified = verified_bearer(self._verifier, authorization)
        try:  # only a token signed by Rotor's key gets here; Rotor writes a UUID
            client_id = uuid.UUID(str(verified.claims.get("client_id")))
        except ValueError:
            raise InvalidToken("the access token is invalid or expired", presented=True) from None
        async with self._db.connection() as connection:
            active, _username = await access_token_state(connection, verified)
            client = await get_client(connection, client_id)
        if not active or client is None:
            raise InvalidToken("the access token is revoked", presented=True)
        if not client.is_admin:
            raise Forbidden("this client does not have the admin permission")
        return client
