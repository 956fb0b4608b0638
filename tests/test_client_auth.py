"""Client authentication at /token (CONTRACT 3.1, RFC 6749 section 2.3).

Every refusal is `401 {"error": "invalid_client"}` with `WWW-Authenticate: Basic`
and the no-store headers; two methods at once is `400 invalid_request`.
"""

from __future__ import annotations

import base64
import uuid

import httpx
import pytest

from service.accounts.clients import fingerprint
from tests.helpers import PASSWORD, RegisteredClient, Rotor, basic

CC = {"grant_type": "client_credentials"}


def raw_basic(value: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(value).decode()}


def assert_invalid_client(response: httpx.Response, case: object = "") -> None:
    assert response.status_code == 401, (case, response.text)
    assert response.json()["error"] == "invalid_client", (case, response.text)
    assert response.headers["www-authenticate"].startswith("Basic"), case
    assert response.headers["cache-control"] == "no-store", case
    assert response.headers["pragma"] == "no-cache", case


def assert_invalid_request(response: httpx.Response, case: object = "") -> None:
    assert response.status_code == 400, (case, response.text)
    assert response.json()["error"] == "invalid_request", (case, response.text)
    assert response.headers["cache-control"] == "no-store", case


async def confidential(rotor: Rotor) -> tuple[RegisteredClient, str]:
    client = await rotor.client()
    assert client.client_secret is not None
    return client, client.client_secret


# --- successes -----------------------------------------------------------------------------


# Basic with the same client_id repeated in the body is one method, not two.
@pytest.mark.parametrize("body_client_id", [False, True], ids=["basic", "basic-and-body-client_id"])
async def test_client_secret_basic_authenticates(rotor: Rotor, body_client_id: bool) -> None:
    client, secret = await confidential(rotor)
    data = {**CC, "client_id": client.client_id} if body_client_id else CC

    response = await rotor.token(data, basic(client.client_id, secret))

    assert response.status_code == 200, response.text
    claims = (await rotor.verify(response.json()["access_token"])).claims
    assert claims["client_id"] == client.client_id


async def test_client_secret_post_authenticates(rotor: Rotor) -> None:
    client, secret = await confidential(rotor)

    response = await rotor.token({**CC, "client_id": client.client_id, "client_secret": secret})

    assert response.status_code == 200, response.text
    claims = (await rotor.verify(response.json()["access_token"])).claims
    assert claims["client_id"] == client.client_id
    # The secret is stored as its SHA-256 only.
    row = await rotor.db.fetchrow(
        "SELECT * FROM clients WHERE id = $1", uuid.UUID(client.client_id)
    )
    assert row["secret_hash"] == fingerprint(secret)
    assert secret not in str(dict(row))


async def test_basic_credentials_are_form_urlencoded(rotor: Rotor) -> None:
    # RFC 6749 2.3.1: id and secret are form-urlencoded before Basic joins them;
    # here every character is percent-encoded and must decode to the same client.
    client, secret = await confidential(rotor)

    def encoded(value: str) -> str:
        return "".join(f"%{byte:02X}" for byte in value.encode())

    raw = f"{encoded(client.client_id)}:{encoded(secret)}".encode()
    response = await rotor.token(CC, raw_basic(raw))

    assert response.status_code == 200, response.text


async def test_public_client_logs_in_with_client_id_only(rotor: Rotor) -> None:
    client = await rotor.client(public=True)
    assert client.client_secret is None
    user_id = await rotor.user()

    response = await rotor.login(client)

    assert response.status_code == 200, response.text
    body = response.json()
    claims = (await rotor.verify(body["access_token"])).claims
    assert claims["client_id"] == client.client_id
    assert claims["sub"] == user_id
    assert isinstance(body["refresh_token"], str)


# --- 401 invalid_client --------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [CC, {"grant_type": "password", "username": "alice", "password": PASSWORD}],
    ids=["client_credentials", "password"],
)
async def test_no_credentials_at_all_is_invalid_client(rotor: Rotor, data: dict[str, str]) -> None:
    await rotor.client()
    await rotor.user()

    response = await rotor.token(data)
    assert_invalid_client(response)


@pytest.mark.parametrize(
    "case", ["client_credentials", "empty-client_secret", "password", "basic-empty-secret"]
)
async def test_confidential_client_sending_only_client_id_is_invalid_client(
    rotor: Rotor, case: str
) -> None:
    client, _ = await confidential(rotor)
    await rotor.user()
    login = {"grant_type": "password", "username": "alice", "password": PASSWORD}

    if case == "basic-empty-secret":  # Basic with an empty secret is the same thing.
        response = await rotor.token(CC, raw_basic(f"{client.client_id}:".encode()))
    else:
        data = {
            "client_credentials": {**CC, "client_id": client.client_id},
            "empty-client_secret": {**CC, "client_id": client.client_id, "client_secret": ""},
            "password": {**login, "client_id": client.client_id},
        }[case]
        response = await rotor.token(data)
    assert_invalid_client(response)
    assert await rotor.db.fetchval("SELECT count(*) FROM token_families") == 0


@pytest.mark.parametrize("way", ["post", "basic", "id-only"])
async def test_unknown_client_id_is_invalid_client(rotor: Rotor, way: str) -> None:
    _, secret = await confidential(rotor)
    stranger = str(uuid.uuid4())

    if way == "post":
        response = await rotor.token({**CC, "client_id": stranger, "client_secret": secret})
    elif way == "basic":
        response = await rotor.token(CC, basic(stranger, secret))
    else:
        response = await rotor.token({**CC, "client_id": stranger})

    assert_invalid_client(response)


@pytest.mark.parametrize(
    "client_id",
    ["not-a-uuid", "1", "' OR 1=1 --", "x" * 300, "\u00e9"],
    ids=["word", "1", "sql", "300-characters", "non-ascii"],
)
async def test_malformed_client_id_is_invalid_client(rotor: Rotor, client_id: str) -> None:
    _, secret = await confidential(rotor)

    via_post = await rotor.token({**CC, "client_id": client_id, "client_secret": secret})
    via_basic = await rotor.token(CC, basic(client_id, secret))
    assert_invalid_client(via_post, "post")
    assert_invalid_client(via_basic, "basic")


@pytest.mark.parametrize(
    "candidate", ["truncated", "extended", "upper-cased", "another-clients", "x"]
)
async def test_wrong_secret_is_invalid_client(rotor: Rotor, candidate: str) -> None:
    client, secret = await confidential(rotor)
    other, other_secret = await confidential(rotor)
    wrong = {
        "truncated": secret[:-1],
        "extended": secret + "x",
        "upper-cased": secret.upper(),
        "another-clients": other_secret,
        "x": "x",
    }[candidate]

    via_basic = await rotor.token(CC, basic(client.client_id, wrong))
    via_post = await rotor.token({**CC, "client_id": client.client_id, "client_secret": wrong})
    assert_invalid_client(via_basic, "basic")
    assert_invalid_client(via_post, "post")
    assert other.client_id != client.client_id


async def test_wrong_secret_refuses_the_password_grant_before_the_password(rotor: Rotor) -> None:
    client, _ = await confidential(rotor)
    await rotor.user()

    response = await rotor.token(
        {"grant_type": "password", "username": "alice", "password": PASSWORD},
        basic(client.client_id, "wrong"),
    )

    assert_invalid_client(response)
    assert await rotor.db.fetchval("SELECT count(*) FROM login_failures") == 0
    assert await rotor.db.fetchval("SELECT count(*) FROM token_families") == 0


MALFORMED_BASIC = [
    "not base64",
    "no colon",
    "empty value",
    "scheme only",
    "not utf-8",
    "truncated base64",
    "bearer scheme",
    "digest scheme",
    "empty",
]


@pytest.mark.parametrize("case", MALFORMED_BASIC)
async def test_malformed_basic_header_is_invalid_client(rotor: Rotor, case: str) -> None:
    client, secret = await confidential(rotor)
    pair = f"{client.client_id}:{secret}".encode()
    headers = {
        "not base64": {"Authorization": "Basic !!!not-base64!!!"},
        "no colon": raw_basic(f"{client.client_id}{secret}".encode()),
        "empty value": {"Authorization": "Basic "},
        "scheme only": {"Authorization": "Basic"},
        "not utf-8": raw_basic(b"\xff\xfe:" + secret.encode()),
        "truncated base64": {"Authorization": "Basic " + base64.b64encode(pair).decode()[:-3]},
        "bearer scheme": {"Authorization": f"Bearer {secret}"},
        "digest scheme": {"Authorization": "Digest username=x"},
        "empty": {"Authorization": ""},
    }
    assert list(headers) == MALFORMED_BASIC

    response = await rotor.token(CC, headers[case])
    assert_invalid_client(response)


async def test_public_client_sending_a_secret_is_invalid_client(rotor: Rotor) -> None:
    client = await rotor.client(public=True)
    await rotor.user()
    login = {"grant_type": "password", "username": "alice", "password": PASSWORD}

    via_post = await rotor.token(
        {**login, "client_id": client.client_id, "client_secret": "anything"}
    )
    via_basic = await rotor.token(login, basic(client.client_id, "anything"))

    assert_invalid_client(via_post, "post")
    assert_invalid_client(via_basic, "basic")
    assert await rotor.db.fetchval("SELECT count(*) FROM login_failures") == 0


async def test_public_client_id_in_basic_without_secret_is_accepted(rotor: Rotor) -> None:
    # RFC 6749 2.3.1 form: "client_id:" with an empty password is the same as
    # presenting only the id.
    client = await rotor.client(public=True)
    await rotor.user()

    response = await rotor.token(
        {"grant_type": "password", "username": "alice", "password": PASSWORD},
        raw_basic(f"{client.client_id}:".encode()),
    )

    assert response.status_code == 200, response.text


# --- 400 invalid_request: two methods ------------------------------------------------------


async def test_basic_and_client_secret_in_body_is_invalid_request(rotor: Rotor) -> None:
    client, secret = await confidential(rotor)

    both = await rotor.token(
        {**CC, "client_id": client.client_id, "client_secret": secret},
        basic(client.client_id, secret),
    )
    secret_only = await rotor.token(
        {**CC, "client_secret": secret}, basic(client.client_id, secret)
    )

    assert_invalid_request(both, "basic + id + secret")
    assert_invalid_request(secret_only, "basic + secret")


async def test_basic_and_different_client_id_in_body_is_invalid_request(rotor: Rotor) -> None:
    client, secret = await confidential(rotor)
    other, _ = await confidential(rotor)

    response = await rotor.token(
        {**CC, "client_id": other.client_id}, basic(client.client_id, secret)
    )

    assert_invalid_request(response)
