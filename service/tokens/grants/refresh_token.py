"""The refresh token grant (RFC 6749 section 6): `/refresh` and
`grant_type=refresh_token` at `/token` are this one grant (CONTRACT 3.2, 3.3).

The hot path. It holds no connection of its own: the client came from memory
(service/accounts/clients.py), and the rotation joins the others of the same
moment (service/tokens/rotation.py); a connection is taken only for what
needs one.
"""

from __future__ import annotations

from collections.abc import Mapping

from service.accounts.clients import Client
from service.events import Caller
from service.tokens.dpop import PresentedProof
from service.tokens.grants.base import TokenResponse, token_type
from service.tokens.rotation import RotationService


class RefreshTokenGrant:
    def __init__(self, rotation: RotationService) -> None:
        self._rotation = rotation

    async def __call__(
        self, client: Client, form: Mapping[str, str], caller: Caller, proof: PresentedProof
    ) -> TokenResponse:
        result = await self._rotation.refresh(
            client, form.get("refresh_token"), form.get("scope"), caller, proof
        )
        return TokenResponse(
            result.access_token,
            result.expires_in,
            result.scope,
            result.refresh_token,
            token_type(result.dpop_jkt),
        )
