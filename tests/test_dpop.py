"""DPoP (RFC 9449, CONTRACT 3.9): binding a family at login, every refresh of a
bound family by the same key, each refusal with its exact answer (nothing
spent, nothing revoked, a dpop_mismatch event), replay within one process and
across two, the race of 20 refreshes, /sessions under the DPoP scheme, and the
verifier's window at its exact edges."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest

from service.config import Settings
from service.db.dpop import record_jtis
from service.errors import InvalidDpopProof
from service.tokens.dpop import NO_PROOF, DpopVerifier, PresentedProof
from tests.dpop_proofs import DROP, ISSUER, DpopKey, hmac_proof, unsigned_proof
from tests.helpers import (
    PASSWORD,
    RegisteredClient,
    Rotor,
    app_and_user,
    assert_error,
    claims_of,
    free_port,
    serve_in_loop,
    start_rotor,
    stop_rotor,
)

WINDOW = 60  # ROTOR_DPOP_WINDOW's default, the tests' setting
CHALLENGE_TOKEN = 'DPoP error="invalid_token", algs="ES256 EdDSA RS256"'
CHALLENGE_PROOF = 'DPoP error="invalid_dpop_proof", algs="ES256 EdDSA RS256"'


def dpop(*proofs: str) -> list[tuple[str, str]]:
    return [("DPoP", proof) for proof in proofs]


async def login(
    rotor: Rotor, client: RegisteredClient, *proofs: str, username: str = "alice"
) -> httpx.Response:
    data = {"grant_type": "password", "username": username, "password": PASSWORD}
    return await rotor.http.post("/token", data=data, headers=[*basic_of(client), *dpop(*proofs)])


def basic_of(client: RegisteredClient) -> list[tuple[str, str]]:
    return list(client.auth.items())


async def refresh(
    rotor: Rotor, client: RegisteredClient, token: str, *proofs: str
) -> httpx.Response:
    return await rotor.http.post(
        "/refresh", json={"refresh_token": token}, headers=[*basic_of(client), *dpop(*proofs)]
    )


async def bound_login(rotor: Rotor, key: DpopKey, **client_options: Any) -> tuple[Any, Any]:
    client = await rotor.client(name="mobile", **client_options)
    await rotor.user()
    response = await login(rotor, client, key.proof("/token"))
    assert response.status_code == 200, response.text
    return client, response.json()


async def events_of(db: asyncpg.Connection, kind: str) -> list[tuple[Any, dict[str, Any]]]:
    rows = await db.fetch(
        "SELECT family_id, detail::text AS detail FROM security_events WHERE type = $1 "
        "ORDER BY seq",
        kind,
    )
    return [(row["family_id"], json.loads(row["detail"])) for row in rows]


async def family_state(db: asyncpg.Connection) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT f.dpop_jkt, f.revoked_reason, count(t.*) AS tokens, count(t.spent_at) AS spent "
        "FROM token_families f JOIN refresh_tokens t ON t.family_id = f.id "
        "GROUP BY f.id ORDER BY f.created_at"
    )
    return [tuple(row) for row in rows]


async def introspect(rotor: Rotor, token: str) -> dict[str, Any]:
    gateway = await rotor.client(grants=[], scopes=[], introspect=True, name="gateway")
    response = await rotor.http.post("/introspect", data={"token": token}, headers=gateway.auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- the positive path, per algorithm ------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256"])
async def test_a_login_with_a_proof_binds_the_family_and_each_refresh_keeps_it(
    rotor: Rotor, alg: str
) -> None:
    key = DpopKey(alg)
    client, body = await bound_login(rotor, key)
    first = await refresh(rotor, client, body["refresh_token"], key.proof())
    assert first.status_code == 200, first.text
    # grant_type=refresh_token at /token is the same grant, its proof for /token.
    second = await rotor.http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"]},
        headers=[*basic_of(client), *dpop(key.proof("/token"))],
    )
    assert second.status_code == 200, second.text
    answers = [body, first.json(), second.json()]
    assert [answer["token_type"] for answer in answers] == ["DPoP"] * 3
    assert [claims_of(answer["access_token"])["cnf"] for answer in answers] == [
        {"jkt": key.jkt}
    ] * 3
    access = await introspect(rotor, second.json()["access_token"])
    refresh_answer = await introspect(rotor, second.json()["refresh_token"])
    assert (access["active"], access["cnf"], refresh_answer["active"], refresh_answer["cnf"]) == (
        True,
        {"jkt": key.jkt},
        True,
        {"jkt": key.jkt},
    )
    assert await family_state(rotor.db) == [(key.jkt, None, 3, 2)]


async def test_an_unbound_family_is_bearer_and_a_proof_at_its_refresh_is_checked_and_ignored(
    rotor: Rotor,
) -> None:
    key = DpopKey()
    client = await rotor.client(name="bff")
    await rotor.user()
    body = (await login(rotor, client)).json()
    with_proof = await refresh(rotor, client, body["refresh_token"], key.proof())
    bad_proof = await refresh(
        rotor, client, with_proof.json()["refresh_token"], key.proof("/token")
    )
    assert (body["token_type"], with_proof.json()["token_type"]) == ("Bearer", "Bearer")
    assert "cnf" not in claims_of(with_proof.json()["access_token"])
    assert "cnf" not in await introspect(rotor, with_proof.json()["refresh_token"])
    assert_error(
        bad_proof, 400, "invalid_dpop_proof", "the DPoP proof's htu is not this endpoint's URL"
    )
    # The refused one spent nothing, and no event: there is no binding to mismatch.
    assert (await family_state(rotor.db), await events_of(rotor.db, "dpop_mismatch")) == (
        [(None, None, 2, 1)],
        [],
    )


@pytest.mark.parametrize("offset", [-(WINDOW - 2), WINDOW - 2], ids=["past", "future"])
async def test_an_iat_just_inside_the_window_is_accepted(rotor: Rotor, offset: int) -> None:
    key = DpopKey()
    client, body = await bound_login(rotor, key)
    response = await refresh(
        rotor, client, body["refresh_token"], key.proof(iat=int(time.time()) + offset)
    )
    assert (response.status_code, response.json()["token_type"]) == (200, "DPoP")


# --- every refusal at the refresh of a bound family -----------------------------------------

MakeProofs = Callable[[DpopKey, DpopKey], list[str]]
REFUSALS: dict[str, tuple[MakeProofs, str, str]] = {
    "no proof": (lambda k, o: [], "this session needs a DPoP proof", "missing"),
    "another key": (
        lambda k, o: [o.proof()],
        "the DPoP proof is not by the key this session is bound to",
        "other_key",
    ),
    "htm GET": (
        lambda k, o: [k.proof(method="GET")],
        "the DPoP proof's htm is not the method of this request",
        "htm",
    ),
    "htu another path": (
        lambda k, o: [k.proof("/token")],
        "the DPoP proof's htu is not this endpoint's URL",
        "htu",
    ),
    "htu another host": (
        lambda k, o: [k.proof(htu="http://rotor.example:8000/refresh")],
        "the DPoP proof's htu is not this endpoint's URL",
        "htu",
    ),
    "htu trailing slash": (
        lambda k, o: [k.proof("/refresh/")],
        "the DPoP proof's htu is not this endpoint's URL",
        "htu",
    ),
    "iat just too old": (
        lambda k, o: [k.proof(iat=int(time.time()) - WINDOW - 2)],
        "the DPoP proof's iat is outside the accepted window",
        "iat",
    ),
    "iat just too new": (
        lambda k, o: [k.proof(iat=int(time.time()) + WINDOW + 2)],
        "the DPoP proof's iat is outside the accepted window",
        "iat",
    ),
    "typ wrong": (
        lambda k, o: [k.proof(header={"typ": "JWT"})],
        "the DPoP proof's typ must be dpop+jwt",
        "typ",
    ),
    "typ missing": (
        lambda k, o: [k.proof(header={"typ": DROP})],
        "the DPoP proof's typ must be dpop+jwt",
        "typ",
    ),
    "alg none": (
        lambda k, o: [unsigned_proof(k)],
        "the DPoP proof's alg must be one of ES256, EdDSA, RS256",
        "alg",
    ),
    "HS256": (
        lambda k, o: [hmac_proof()],
        "the DPoP proof's alg must be one of ES256, EdDSA, RS256",
        "alg",
    ),
    "jwk with private members": (
        lambda k, o: [k.proof(header={"jwk": dict(k.key.as_dict(private=True))})],
        "the DPoP proof's jwk must be a public key",
        "jwk",
    ),
    "jwk that did not sign": (
        lambda k, o: [k.proof(header={"jwk": o.public_jwk})],
        "the DPoP proof's signature does not verify with its jwk",
        "signature",
    ),
    "two DPoP headers": (
        lambda k, o: [k.proof(), k.proof()],
        "exactly one DPoP header is allowed",
        "multiple",
    ),
    "over 8 KiB": (
        lambda k, o: [k.proof(claims={"pad": "x" * 8192})],
        "the DPoP proof is larger than 8 KiB",
        "too_large",
    ),
    "not a JWS": (
        lambda k, o: ["not-a-jws"],
        "the DPoP proof is not a JWS compact serialization",
        "malformed",
    ),
    "no jti": (
        lambda k, o: [k.proof(claims={"jti": DROP})],
        "the DPoP proof needs a jti of 1 to 256 characters",
        "jti",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_a_refused_proof_spends_nothing_revokes_nothing_and_is_recorded(
    rotor: Rotor, case: str
) -> None:
    make, description, reason = REFUSALS[case]
    key, other = DpopKey(), DpopKey()
    client, body = await bound_login(rotor, key)
    refused = await refresh(rotor, client, body["refresh_token"], *make(key, other))
    assert_error(refused, 400, "invalid_dpop_proof", description, case=case)
    family_id = await rotor.db.fetchval("SELECT id FROM token_families")
    assert (await family_state(rotor.db), await events_of(rotor.db, "dpop_mismatch")) == (
        [(key.jkt, None, 1, 0)],
        [(family_id, {"reason": reason})],
    )
    # The token is still the family's live one: the key's holder refreshes with it.
    retried = await refresh(rotor, client, body["refresh_token"], key.proof())
    assert (retried.status_code, retried.json()["token_type"]) == (200, "DPoP")


async def test_the_refresh_grant_at_token_refuses_a_bound_family_without_proof(
    rotor: Rotor,
) -> None:
    key = DpopKey()
    client, body = await bound_login(rotor, key)
    response = await rotor.http.post(
        "/token",
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
        headers=client.auth,
    )
    assert_error(response, 400, "invalid_dpop_proof", "this session needs a DPoP proof")
    assert await family_state(rotor.db) == [(key.jkt, None, 1, 0)]


async def test_a_spent_token_without_the_key_revokes_nothing(rotor: Rotor) -> None:
    """The thief holds a spent token and no key: refused as a DPoP failure, never
    as reuse, so the owner's session lives on (CONTRACT 3.9)."""
    key = DpopKey()
    client, body = await bound_login(rotor, key)
    rotated = await refresh(rotor, client, body["refresh_token"], key.proof())
    stolen = await refresh(rotor, client, body["refresh_token"], DpopKey().proof())
    assert_error(
        stolen,
        400,
        "invalid_dpop_proof",
        "the DPoP proof is not by the key this session is bound to",
    )
    owner = await refresh(rotor, client, rotated.json()["refresh_token"], key.proof())
    assert (owner.status_code, await events_of(rotor.db, "reuse_detected")) == (200, [])


async def test_a_replayed_proof_is_refused_at_the_same_endpoint(rotor: Rotor) -> None:
    key = DpopKey()
    client, body = await bound_login(rotor, key)
    proof = key.proof()
    first = await refresh(rotor, client, body["refresh_token"], proof)
    replayed = await refresh(rotor, client, first.json()["refresh_token"], proof)
    assert first.status_code == 200, first.text
    assert_error(replayed, 400, "invalid_dpop_proof", "the DPoP proof was already used")
    family_id = await rotor.db.fetchval("SELECT id FROM token_families")
    assert (await family_state(rotor.db), await events_of(rotor.db, "dpop_mismatch")) == (
        [(key.jkt, None, 2, 1)],
        [(family_id, {"reason": "replayed"})],
    )
    seen = await rotor.db.fetch("SELECT endpoint FROM dpop_proof_jtis ORDER BY endpoint")
    assert [row["endpoint"] for row in seen] == ["/refresh", "/token"]


async def test_one_batch_of_jtis_takes_the_first_of_a_repeated_one_and_refuses_the_rest(
    rotor: Rotor,
) -> None:
    later = time.time() + 120
    await record_jtis(rotor.db, [("/refresh", "seen", later)])
    answers = await record_jtis(
        rotor.db,
        [
            ("/refresh", "a", later),
            ("/refresh", "a", later),
            ("/token", "a", later),
            ("/refresh", "seen", later),
            ("/refresh", "b", later),
        ],
    )
    assert answers == [True, False, True, False, True]


async def test_the_same_proof_sent_twice_at_once_is_taken_once(rotor: Rotor) -> None:
    key = DpopKey()
    client, first = await bound_login(rotor, key)
    again = await login(rotor, client, key.proof("/token"))
    assert again.status_code == 200, again.text
    second = again.json()
    proof = key.proof()
    answers = await asyncio.gather(
        refresh(rotor, client, first["refresh_token"], proof),
        refresh(rotor, client, second["refresh_token"], proof),
    )
    assert sorted(answer.status_code for answer in answers) == [200, 400]
    refused = next(answer for answer in answers if answer.status_code == 400)
    assert_error(refused, 400, "invalid_dpop_proof", "the DPoP proof was already used")


async def test_a_replayed_login_proof_is_refused(rotor: Rotor) -> None:
    key = DpopKey()
    client = await rotor.client(name="mobile")
    await rotor.user()
    proof = key.proof("/token")
    first = await login(rotor, client, proof)
    again = await login(rotor, client, proof)
    assert first.status_code == 200, first.text
    assert_error(again, 400, "invalid_dpop_proof", "the DPoP proof was already used")
    assert len(await family_state(rotor.db)) == 1


# --- require_dpop --------------------------------------------------------------------------


async def test_a_client_that_requires_dpop_cannot_log_in_or_refresh_without_a_proof(
    rotor: Rotor,
) -> None:
    key = DpopKey()
    client, body = await bound_login(rotor, key, require_dpop=True)
    no_login = await login(rotor, client)
    no_refresh = await refresh(rotor, client, body["refresh_token"])
    assert_error(no_login, 400, "invalid_dpop_proof", "this client must send a DPoP proof")
    assert_error(no_refresh, 400, "invalid_dpop_proof", "this client must send a DPoP proof")
    family_id = await rotor.db.fetchval("SELECT id FROM token_families")
    assert (await family_state(rotor.db), await events_of(rotor.db, "dpop_mismatch")) == (
        [(key.jkt, None, 1, 0)],
        [(family_id, {"reason": "missing"})],
    )


async def test_admin_creates_a_client_that_requires_dpop(rotor: Rotor) -> None:
    from tests.helpers import operator

    ops = await operator(rotor)
    created = await rotor.http.post(
        "/admin/clients",
        json={
            "name": "mobile",
            "grant_types": ["password", "refresh_token"],
            "public": True,
            "require_dpop": True,
        },
        headers=ops.headers,
    )
    assert created.status_code == 201, created.text
    client = RegisteredClient(created.json()["client_id"], None)
    shown = await rotor.http.get(f"/admin/clients/{client.client_id}", headers=ops.headers)
    await rotor.user()
    refused = await rotor.http.post(
        "/token",
        data={
            "grant_type": "password",
            "username": "alice",
            "password": PASSWORD,
            "client_id": client.client_id,
        },
    )
    assert (created.json()["require_dpop"], shown.json()["require_dpop"]) == (True, True)
    assert_error(refused, 400, "invalid_dpop_proof", "this client must send a DPoP proof")


# --- concurrency: exactly once holds for bound families --------------------------------------


@pytest.mark.parametrize("grace", [0, 30])
async def test_twenty_simultaneous_refreshes_each_with_its_own_proof(
    settings: Settings, db: asyncpg.Connection, grace: int
) -> None:
    async with serve_in_loop(settings, db, reuse_grace=grace) as rotor:
        key = DpopKey()
        client, body = await bound_login(rotor, key)
        proofs = [key.proof() for _ in range(20)]
        responses = await asyncio.gather(
            *(refresh(rotor, client, body["refresh_token"], proof) for proof in proofs)
        )
    statuses = Counter(response.status_code for response in responses)
    successors = {r.json()["refresh_token"] for r in responses if r.status_code == 200}
    reasons = await db.fetch("SELECT revoked_reason FROM token_families")
    if grace == 0:
        # One rotates; the others present a spent token: reuse, the family revoked.
        assert (statuses, len(successors), [row[0] for row in reasons]) == (
            Counter({200: 1, 400: 19}),
            1,
            ["reuse_detected"],
        )
        errors = {r.json()["error"] for r in responses if r.status_code == 400}
        assert errors == {"invalid_grant"}
    else:
        assert (statuses, len(successors), [row[0] for row in reasons]) == (
            Counter({200: 20}),
            1,
            [None],
        )


# --- replay across two Rotor processes -----------------------------------------------------


async def test_a_proof_used_at_one_process_is_refused_by_another(
    database_url: str, db: asyncpg.Connection
) -> None:
    _, basic_auth = await app_and_user(db, name="mobile")
    auth = list(basic_auth.items())
    key = DpopKey()
    started = [await start_rotor(database_url), await start_rotor(database_url)]
    try:
        (_, first), (_, second) = started
        async with httpx.AsyncClient(timeout=30) as http:
            login_proof = key.proof("/token")
            form = {"grant_type": "password", "username": "alice", "password": PASSWORD}
            logged_in = await http.post(
                f"{first}/token", data=form, headers=[*auth, *dpop(login_proof)]
            )
            login_again = await http.post(
                f"{second}/token", data=form, headers=[*auth, *dpop(login_proof)]
            )
            proof = key.proof()
            token = logged_in.json()["refresh_token"]
            rotated = await http.post(
                f"{first}/refresh", json={"refresh_token": token}, headers=[*auth, *dpop(proof)]
            )
            replayed = await http.post(
                f"{second}/refresh",
                json={"refresh_token": rotated.json()["refresh_token"]},
                headers=[*auth, *dpop(proof)],
            )
    finally:
        for process, _url in started:
            stop_rotor(process)
    assert (logged_in.status_code, rotated.status_code) == (200, 200)
    assert_error(login_again, 400, "invalid_dpop_proof", "the DPoP proof was already used")
    assert_error(replayed, 400, "invalid_dpop_proof", "the DPoP proof was already used")


# --- /sessions (CONTRACT 3.8) --------------------------------------------------------------


async def sessions(rotor: Rotor, authorization: str, *proofs: str) -> httpx.Response:
    return await rotor.http.get(
        "/sessions", headers=[("Authorization", authorization), *dpop(*proofs)]
    )


async def test_sessions_accept_a_bound_token_under_dpop_with_its_proof(rotor: Rotor) -> None:
    key = DpopKey("EdDSA")
    _client, body = await bound_login(rotor, key)
    token = body["access_token"]
    response = await sessions(
        rotor, f"DPoP {token}", key.proof("/sessions", "GET", access_token=token)
    )
    assert response.status_code == 200, response.text
    assert [item["current"] for item in response.json()["items"]] == [True]


SESSION_REFUSALS: dict[str, tuple[Callable[[DpopKey, str], tuple[str, list[str]]], str, str]] = {
    "as Bearer": (
        lambda k, t: (f"Bearer {t}", []),
        "a DPoP-bound access token needs the DPoP scheme and a proof",
        CHALLENGE_TOKEN,
    ),
    "as Bearer with a proof": (
        lambda k, t: (f"Bearer {t}", [k.proof("/sessions", "GET", access_token=t)]),
        "a DPoP-bound access token needs the DPoP scheme and a proof",
        CHALLENGE_TOKEN,
    ),
    "no proof": (lambda k, t: (f"DPoP {t}", []), "a DPoP proof is required", CHALLENGE_PROOF),
    "no ath": (
        lambda k, t: (f"DPoP {t}", [k.proof("/sessions", "GET")]),
        "the DPoP proof is invalid",
        CHALLENGE_PROOF,
    ),
    "ath of another token": (
        lambda k, t: (f"DPoP {t}", [k.proof("/sessions", "GET", access_token=t + "x")]),
        "the DPoP proof is invalid",
        CHALLENGE_PROOF,
    ),
    "htm POST": (
        lambda k, t: (f"DPoP {t}", [k.proof("/sessions", "POST", access_token=t)]),
        "the DPoP proof is invalid",
        CHALLENGE_PROOF,
    ),
    "htu of /refresh": (
        lambda k, t: (f"DPoP {t}", [k.proof("/refresh", "GET", access_token=t)]),
        "the DPoP proof is invalid",
        CHALLENGE_PROOF,
    ),
    "another key": (
        lambda k, t: (f"DPoP {t}", [DpopKey().proof("/sessions", "GET", access_token=t)]),
        "the DPoP proof is not by the key the token is bound to",
        CHALLENGE_PROOF,
    ),
}


@pytest.mark.parametrize("case", list(SESSION_REFUSALS))
async def test_sessions_refuse_a_bound_token_without_its_proof(rotor: Rotor, case: str) -> None:
    make, description, challenge = SESSION_REFUSALS[case]
    key = DpopKey()
    _client, body = await bound_login(rotor, key)
    authorization, proofs = make(key, body["access_token"])
    response = await sessions(rotor, authorization, *proofs)
    assert_error(response, 401, "invalid_token", description, www_authenticate=challenge)


async def test_sessions_refuse_a_replayed_proof(rotor: Rotor) -> None:
    key = DpopKey()
    _client, body = await bound_login(rotor, key)
    token = body["access_token"]
    proof = key.proof("/sessions", "GET", access_token=token)
    first = await sessions(rotor, f"DPoP {token}", proof)
    again = await sessions(rotor, f"DPoP {token}", proof)
    assert first.status_code == 200, first.text
    assert_error(
        again,
        401,
        "invalid_token",
        "the DPoP proof was already used",
        www_authenticate=CHALLENGE_PROOF,
    )


# --- the verifier alone: the window's exact edges, and the thumbprint -------------------------


def _presented(proof: str) -> PresentedProof:
    return PresentedProof((proof,), "POST", "/refresh")


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-WINDOW, True), (-WINDOW - 1, False), (WINDOW, True), (WINDOW + 1, False)],
)
def test_the_window_is_inclusive_at_its_edges(offset: int, accepted: bool) -> None:
    now = 1_800_000_000
    verifier = DpopVerifier(issuer=ISSUER, window=WINDOW, clock=lambda: float(now))
    proof = DpopKey().proof(iat=now + offset)
    try:
        verifier.verify(_presented(proof))
        outcome = True
    except InvalidDpopProof as refused:
        outcome = refused.reason != "iat"
    assert outcome is accepted


def test_the_thumbprint_is_rfc_7638s() -> None:
    """RFC 7638 section 3.1's example key and its thumbprint."""
    from joserfc.jwk import RSAKey

    example = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6"
        "tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-6"
        "5YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrd"
        "kt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
    }
    assert RSAKey.import_key(example).thumbprint() == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_no_header_is_no_proof() -> None:
    verifier = DpopVerifier(issuer=ISSUER, window=WINDOW)
    assert verifier.verify(NO_PROOF) is None


# --- the caller's example (docs/clients.md) ------------------------------------------------


async def test_the_python_example_logs_in_and_refreshes_with_dpop(
    database_url: str, db: asyncpg.Connection
) -> None:
    import subprocess
    import sys
    from pathlib import Path

    client, _ = await app_and_user(db, public=True, require_dpop=True)
    port = free_port()
    # The example's URLs are ROTOR_ISSUER's: the server's own address here.
    process, url = await start_rotor(
        database_url, port=port, ROTOR_ISSUER=f"http://127.0.0.1:{port}"
    )
    try:
        example = Path(__file__).resolve().parents[1] / "examples" / "dpop_client.py"
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(example), "--issuer", url, "--client-id", client.client_id,
             "--username", "alice"],
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )  # fmt: skip
    finally:
        stop_rotor(process)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    bound = await db.fetchval("SELECT dpop_jkt FROM token_families")
    assert (printed["token_types"], printed["jkt"]) == (["DPoP"] * 3, bound)
