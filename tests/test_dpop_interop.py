"""Interop (CONTRACT 3.9): DPoP proofs made as a client makes them, with npm's
`jose` (the example's own dependency), are accepted at login and refresh.

Needs Node.js 20+ and examples/nextjs/node_modules; without them the module is
skipped with the one line naming the install commands, and under
ROTOR_BROWSER_TEST=required (.ci/run, which installs both) it fails instead, as
tests/test_browser.py does.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests import browser
from tests.dpop_proofs import ISSUER
from tests.helpers import Rotor, claims_of

MISSING = browser.missing_node("DPoP interop test (tests/test_dpop_interop.py)")
if MISSING:
    if os.environ.get("ROTOR_BROWSER_TEST") == "required":
        pytest.fail(MISSING, pytrace=False)
    pytest.skip(MISSING, allow_module_level=True)

# A client's code: a fresh key pair, its public JWK in the header, iat and jti set.
SCRIPT = """
import { generateKeyPair, exportJWK, SignJWT, calculateJwkThumbprint } from "jose";
const [alg, ...targets] = process.argv.slice(1);
const { publicKey, privateKey } = await generateKeyPair(alg);
const jwk = await exportJWK(publicKey);
const proofs = [];
for (const target of targets) {
  const [htm, htu] = target.split(" ");
  proofs.push(
    await new SignJWT({ htm, htu })
      .setProtectedHeader({ alg, typ: "dpop+jwt", jwk })
      .setIssuedAt()
      .setJti(crypto.randomUUID())
      .sign(privateKey),
  );
}
console.log(JSON.stringify({ jkt: await calculateJwkThumbprint(jwk), proofs }));
"""


def jose_proofs(alg: str, *targets: str) -> tuple[str, list[str]]:
    done = subprocess.run(
        [browser.node() or "node", "--input-type=module", "-e", SCRIPT, alg, *targets],
        cwd=browser.EXAMPLE,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    printed = json.loads(done.stdout)
    return printed["jkt"], printed["proofs"]


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
async def test_proofs_made_with_npm_jose_are_accepted(rotor: Rotor, alg: str) -> None:
    jkt, (for_login, for_refresh) = jose_proofs(
        alg, f"POST {ISSUER}/token", f"POST {ISSUER}/refresh"
    )
    client = await rotor.client(name="spa", public=True, grants=["password", "refresh_token"])
    await rotor.user()
    logged_in = await rotor.http.post(
        "/token",
        data={
            "grant_type": "password",
            "username": "alice",
            "password": "correct horse battery staple",
            "client_id": client.client_id,
        },
        headers={"DPoP": for_login},
    )
    assert logged_in.status_code == 200, logged_in.text
    refreshed = await rotor.http.post(
        "/refresh",
        json={"refresh_token": logged_in.json()["refresh_token"], "client_id": client.client_id},
        headers={"DPoP": for_refresh},
    )
    assert refreshed.status_code == 200, refreshed.text
    assert [
        (answer["token_type"], claims_of(answer["access_token"])["cnf"])
        for answer in (logged_in.json(), refreshed.json())
    ] == [("DPoP", {"jkt": jkt})] * 2
