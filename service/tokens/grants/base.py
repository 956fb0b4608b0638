"""What every grant of the token endpoint shares: its answer, and its shape."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from service.accounts.clients import Client
from service.events import Caller
from service.tokens.dpop import PresentedProof


@dataclass(frozen=True, slots=True)
class TokenResponse:
    """RFC 6749 section 5.1."""

    access_token: str
    expires_in: int
    scope: str
    refresh_token: str | None = None
    token_type: str = "Bearer"  # noqa: S105 - RFC 6750 token type, not a secret


def token_type(dpop_jkt: str | None) -> str:
    """RFC 9449 §5: `DPoP` for a token bound to a key, else RFC 6750's `Bearer`."""
    return "Bearer" if dpop_jkt is None else "DPoP"


class Grant(Protocol):
    """One grant type: the authenticated client, the parsed form, the caller,
    and the request's DPoP proof, if any (RFC 9449; not every grant reads it)."""

    async def __call__(
        self, client: Client, form: Mapping[str, str], caller: Caller, proof: PresentedProof
    ) -> TokenResponse: ...
