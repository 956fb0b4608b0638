"""Typed errors carrying the RFC 6749 section 5.2 error code.

Logic raises these; one exception handler (service.http.errors) turns them
into status, body and headers. Messages never carry a token or a secret.
"""

from __future__ import annotations


class OAuthError(Exception):
    error = "invalid_request"
    status = 400

    def __init__(self, description: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.headers = headers or {}


class InvalidRequest(OAuthError):
    error = "invalid_request"


class InvalidClient(OAuthError):
    """RFC 6749 5.2: 401 with WWW-Authenticate when authentication failed."""

    error = "invalid_client"
    status = 401

    def __init__(self, description: str = "client authentication failed") -> None:
        super().__init__(description, headers={"WWW-Authenticate": 'Basic realm="rotor"'})


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class TooManyAttempts(OAuthError):
    """Login throttling (CONTRACT section 1): 429 with Retry-After."""

    error = "slow_down"
    status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "too many failed login attempts; retry later",
            headers={"Retry-After": str(retry_after)},
        )


class TemporarilyUnavailable(OAuthError):
    error = "temporarily_unavailable"
    status = 503

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__(
            "the database did not answer in time", headers={"Retry-After": str(retry_after)}
        )


class NotFound(OAuthError):
    error = "not_found"
    status = 404


class Conflict(OAuthError):
    error = "conflict"
    status = 409


class Unprocessable(OAuthError):
    error = "invalid_request"
    status = 422


class InvalidToken(OAuthError):
    """RFC 6750 3.1: a missing, malformed, expired, revoked or forged bearer token."""

    error = "invalid_token"
    status = 401

    def __init__(
        self,
        description: str = "a valid admin access token is required",
        *,
        presented: bool = False,
    ) -> None:
        # RFC 6750 3.1: no error attribute when the request carried no token.
        challenge = (
            'Bearer realm="rotor", error="invalid_token"' if presented else 'Bearer realm="rotor"'
        )
        super().__init__(description, headers={"WWW-Authenticate": challenge})


class InsufficientScope(OAuthError):
    """RFC 6750 3.1: the token is valid but does not allow this request (403),
    with the Bearer challenge naming the error (RFC 6750 3)."""

    error = "insufficient_scope"
    status = 403

    def __init__(self, description: str) -> None:
        super().__init__(
            description,
            headers={"WWW-Authenticate": 'Bearer realm="rotor", error="insufficient_scope"'},
        )


class Forbidden(OAuthError):
    error = "access_denied"
    status = 403


class InvalidDpopProof(OAuthError):
    """RFC 9449 §5 and §12.2: a missing or invalid DPoP proof at the token
    endpoint (400 `invalid_dpop_proof`). `reason` names what failed, from a
    fixed list (service/tokens/dpop.py): the `detail` of a `dpop_mismatch`
    event, never the proof."""

    error = "invalid_dpop_proof"

    def __init__(self, description: str, *, reason: str) -> None:
        super().__init__(description)
        self.reason = reason


# RFC 9449 §7.1: the algorithms a DPoP challenge names (CONTRACT 3.9).
DPOP_CHALLENGE_ALGS = 'algs="ES256 EdDSA RS256"'


class InvalidDpopToken(OAuthError):
    """RFC 9449 §7.1 at a protected resource (/sessions): 401 `invalid_token`,
    with a `DPoP` challenge whose error is `invalid_dpop_proof` where the proof
    is at fault and `invalid_token` where the token is (a bound token presented
    as Bearer: RFC 9449 §7.2)."""

    error = "invalid_token"
    status = 401

    def __init__(self, description: str, *, proof_at_fault: bool) -> None:
        error = "invalid_dpop_proof" if proof_at_fault else "invalid_token"
        super().__init__(
            description,
            headers={"WWW-Authenticate": f'DPoP error="{error}", {DPOP_CHALLENGE_ALGS}'},
        )
