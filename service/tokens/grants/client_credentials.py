"""The client credentials grant (RFC 6749 section 4.4)."""

from __future__ import annotations

from collections.abc import Mapping

from service.accounts.clients import Client
from service.events import Caller
from service.tokens.access import AccessTokenIssuer
from service.tokens.dpop import PresentedProof
from service.tokens.grants.base import TokenResponse
from service.tokens.scopes import grant_scope


class ClientCredentialsGrant:
    def __init__(self, issuer: AccessTokenIssuer) -> None:
        self._issuer = issuer

    async def __call__(
        self, client: Client, form: Mapping[str, str], caller: Caller, proof: PresentedProof
    ) -> TokenResponse:
        # CONTRACT 3.9 binds families; a client_credentials token has none.
        del caller, proof
        # RFC 6749 4.4.3: "A refresh token SHOULD NOT be included."
        scope = grant_scope(form.get("scope"), client.scopes)
        issued = self._issuer.issue(
            subject=client.client_id, client_id=client.client_id, scope=scope, family_id=None
        )
        return TokenResponse(issued.token, issued.expires_in, scope)
