"""A public client (a mobile or desktop app) that logs in to Rotor and refreshes
with DPoP (RFC 9449): the session is bound to a key that never leaves the
device, so a stolen refresh token is refused outright.

    python examples/dpop_client.py --issuer http://127.0.0.1:8000 \\
        --client-id <public client id> --username alice   # password: ROTOR_PASSWORD or stdin

Needs joserfc and httpx. Prints what it got, never a token.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid

import httpx
from joserfc import jws
from joserfc.jwk import ECKey


class DpopSigner:
    """One key pair for the life of the session (keep it in the platform's key
    store: whoever has it can use the session). Each request gets a fresh proof."""

    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256", private=True)
        self.public_jwk = self.key.as_dict(private=False)

    def proof(self, method: str, url: str) -> str:
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.public_jwk}
        claims = {"jti": str(uuid.uuid4()), "htm": method, "htu": url, "iat": int(time.time())}
        return jws.serialize_compact(header, json.dumps(claims), self.key, algorithms=["ES256"])


def log_in(
    http: httpx.Client, signer: DpopSigner, issuer: str, client_id: str, user: str, password: str
) -> dict[str, str]:
    url = f"{issuer}/token"
    response = http.post(
        url,
        data={
            "grant_type": "password",
            "username": user,
            "password": password,
            "client_id": client_id,
        },
        headers={"DPoP": signer.proof("POST", url)},
    )
    response.raise_for_status()
    tokens: dict[str, str] = response.json()
    return tokens


def refresh(
    http: httpx.Client, signer: DpopSigner, issuer: str, client_id: str, refresh_token: str
) -> dict[str, str]:
    url = f"{issuer}/refresh"
    response = http.post(
        url,
        json={"refresh_token": refresh_token, "client_id": client_id},
        headers={"DPoP": signer.proof("POST", url)},
    )
    response.raise_for_status()
    tokens: dict[str, str] = response.json()
    return tokens


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--issuer", required=True, help="ROTOR_ISSUER, e.g. http://127.0.0.1:8000")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--refreshes", type=int, default=2)
    args = parser.parse_args(argv)
    password = os.environ.get("ROTOR_PASSWORD") or sys.stdin.readline().rstrip("\n")
    issuer = args.issuer.rstrip("/")
    signer = DpopSigner()
    with httpx.Client(timeout=10) as http:
        tokens = log_in(http, signer, issuer, args.client_id, args.username, password)
        token_types = [tokens["token_type"]]
        for _ in range(args.refreshes):
            tokens = refresh(http, signer, issuer, args.client_id, tokens["refresh_token"])
            token_types.append(tokens["token_type"])
    print(json.dumps({"jkt": signer.key.thumbprint(), "token_types": token_types}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
