"""The token endpoint's grants (RFC 6749 sections 4.3, 4.4 and 6), one module
each, and their dispatch.

Knows no HTTP: it takes the parsed form, the presented client credentials and
the caller, and returns a token response or raises an OAuthError.
"""

from __future__ import annotations

from collections.abc import Mapping

from service.accounts.clients import PUBLIC_GRANTS, Client, ClientCache, Credentials, authenticate
from service.errors import InvalidRequest, UnauthorizedClient, UnsupportedGrantType
from service.events import Caller
from service.observability import metrics
from service.tokens.dpop import NO_PROOF, PresentedProof
from service.tokens.grants.base import Grant, TokenResponse

__all__ = ["Grant", "TokenEndpoint", "TokenResponse"]


class TokenEndpoint:
    def __init__(self, clients: ClientCache, grants: Mapping[str, Grant]) -> None:
        self._clients = clients
        self._grants = dict(grants)

    async def authenticate(self, credentials: Credentials) -> Client:
        return await authenticate(self._clients, credentials)

    async def token(
        self,
        form: Mapping[str, str],
        credentials: Credentials,
        caller: Caller,
        proof: PresentedProof = NO_PROOF,
    ) -> TokenResponse:
        grant_type = form.get("grant_type")
        if grant_type is None:
            raise InvalidRequest("missing grant_type")
        client = await self.authenticate(credentials)
        grant = self._grants.get(grant_type)
        if grant is None:
            # CONTRACT 3: the description never repeats what the caller sent.
            raise UnsupportedGrantType("unsupported grant_type")
        if grant_type not in client.grant_types or (
            client.public and grant_type not in PUBLIC_GRANTS
        ):
            raise UnauthorizedClient(f"this client may not use the {grant_type} grant")
        response = await grant(client, form, caller, proof)
        metrics.child(metrics.TOKENS_ISSUED, grant_type).inc()
        return response
