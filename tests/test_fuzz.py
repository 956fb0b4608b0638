"""Schema fuzzing (schemathesis) against the committed OpenAPI document.

Schemathesis reads openapi/openapi.json (the document callers are given, not
what the app serves at run time) and generates requests for every operation:
valid ones (positive) and invalid ones (negative: wrong types, unknown or
missing fields, a dropped Authorization header, ...). Each request goes,
authenticated as the operation needs, to Rotor served in-process by litestar's
TestClient (lifespan included) on a fresh database of its own. Checks on every
answer:

- never a 5xx (CONTRACT 5);
- the answer conforms to the document: a documented status, a documented
  content type, a body matching the documented schema;
- what the contract says of every answer: a 4xx body is exactly
  {"error", "error_description"} (strings), OAuth endpoints answer
  Cache-Control: no-store and Pragma: no-cache, a 401 carries WWW-Authenticate,
  a 429 or 503 carries an integer Retry-After.

Every check is strict, with no allow-list of known gaps: a status or body the
document does not describe is a documentation bug that fails the run.

Besides fuzzing, probes provoke each status the contract requires (401, 403,
404, 409, 413, 422 on the operations that can answer them, and 405 on every
path) so every gap shows up here, not only those the fuzzer stumbles on.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import requests
import schemathesis
from argon2 import PasswordHasher as Argon2
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from litestar.testing import TestClient
from schemathesis import APIOperation, GenerationMode
from schemathesis import Case as SchemathesisCase
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.accounts.clients import create_client
from service.accounts.users import create_user
from service.app import MAX_BODY_BYTES, create_app
from service.config import Settings
from tests.helpers import ALL_GRANTS, PASSWORD, basic

Operation = APIOperation[Any, Any, Any, Any]
Case = SchemathesisCase[Any]

DOCUMENT = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"
SCHEMA = schemathesis.openapi.from_path(DOCUMENT)


def _operations() -> dict[str, Operation]:
    found: dict[str, Operation] = {}
    for result in SCHEMA.get_all_operations():
        assert isinstance(result, Ok), result  # the document itself is valid
        operation = result.ok()
        found[operation.definition.raw["operationId"]] = operation
    return found


OPERATIONS = _operations()
BASE_URL = "http://testserver.local"
USERNAME = "fuzz-user"
OAUTH_PATHS = frozenset({"/token", "/refresh", "/introspect", "/revoke"})
CONFORMANCE: tuple[CheckFunction, ...] = (
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)

# 15 examples per operation, half valid and half invalid on average, derandomized
# so that every run sends the same requests; no example database.
FUZZ_SETTINGS = hypothesis_settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@dataclass
class Fuzz:
    http: TestClient[Any]
    caller: dict[str, str]  # Basic of a confidential client with every grant
    gateway: dict[str, str]  # Basic of a client allowed to introspect
    admin: dict[str, str]  # Bearer access token of a client with the admin permission
    not_admin: dict[str, str]  # Bearer access token of a client without it
    user: dict[str, str]  # Bearer access token of a user's session (a password login)

    def auth_for(self, operation_id: str) -> dict[str, str]:
        if operation_id.startswith("admin_"):
            return self.admin
        if operation_id.startswith("sessions_"):
            return self.user
        if operation_id == "introspect":
            return self.gateway
        if operation_id in ("token", "refresh", "revoke"):
            return self.caller
        return {}


CLIENTS: dict[str, dict[str, Any]] = {
    "caller": {"grant_types": ALL_GRANTS, "can_introspect": False, "is_admin": False},
    "gateway": {"grant_types": [], "can_introspect": True, "is_admin": False},
    "admin": {"grant_types": ["client_credentials"], "can_introspect": False, "is_admin": True},
    "not_admin": {
        "grant_types": ["client_credentials"],
        "can_introspect": False,
        "is_admin": False,
    },
}


async def _register_clients(database_url: str) -> dict[str, tuple[str, str]]:
    connection = await asyncpg.connect(database_url)
    made: dict[str, tuple[str, str]] = {}
    try:
        await create_user(
            connection, USERNAME, Argon2(time_cost=1, memory_cost=8192).hash(PASSWORD)
        )
        for name, options in CLIENTS.items():
            client, secret = await create_client(
                connection, name=name, scopes=["read", "write"], public=False, **options
            )
            assert secret is not None
            made[name] = (client.client_id, secret)
    finally:
        await connection.close()
    return made


def _bearer(http: TestClient[Any], client_id: str, secret: str) -> dict[str, str]:
    response = http.post(
        "/token", data={"grant_type": "client_credentials"}, headers=basic(client_id, secret)
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _user_bearer(http: TestClient[Any], client_id: str, secret: str) -> dict[str, str]:
    response = http.post(
        "/token",
        data={"grant_type": "password", "username": USERNAME, "password": PASSWORD},
        headers=basic(client_id, secret),
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
def fuzz(settings: Settings) -> Iterator[Fuzz]:
    made = asyncio.run(_register_clients(settings.database_url))
    with TestClient(create_app(settings), base_url=BASE_URL) as http:
        yield Fuzz(
            http=http,
            caller=basic(*made["caller"]),
            gateway=basic(*made["gateway"]),
            admin=_bearer(http, *made["admin"]),
            not_admin=_bearer(http, *made["not_admin"]),
            user=_user_bearer(http, *made["caller"]),
        )


def send(
    fuzz: Fuzz,
    case: Case,
    headers: dict[str, str],
    *,
    method: str | None = None,
    content: bytes | None = None,
) -> httpx.Response:
    """Send the case through the TestClient byte for byte as schemathesis puts it on the
    wire (its requests transport prepares the request; httpx only carries it)."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
    prepared = requests.Request(
        method=method or kwargs["method"],
        url=kwargs["url"],
        headers=kwargs["headers"],
        params=kwargs.get("params"),
        cookies=kwargs.get("cookies"),
        data=kwargs.get("data"),
        json=kwargs.get("json"),
    ).prepare()
    body = prepared.body if content is None else content
    if isinstance(body, str):
        body = body.encode()
    assert body is None or isinstance(body, bytes), body
    return fuzz.http.request(
        prepared.method or "GET",
        prepared.url or "",
        headers={
            name: value if isinstance(value, str) else value.decode("latin-1")
            for name, value in prepared.headers.items()
            if name.lower() != "content-length"
        },
        content=body,
    )


def check_contract(case: Case, response: httpx.Response) -> None:
    """What CONTRACT 3 says of every answer, documented or not."""
    status, where = response.status_code, f"{case.operation.label} -> {response.status_code}"
    if 400 <= status < 500:
        assert response.headers.get("content-type", "").startswith("application/json"), where
        body = msgspec.json.decode(response.content)
        assert isinstance(body, dict), where
        assert set(body) == {"error", "error_description"}, (where, body)
        assert isinstance(body["error"], str), (where, body)
        assert isinstance(body["error_description"], str), (where, body)
    if case.operation.path in OAUTH_PATHS:
        assert response.headers.get("cache-control") == "no-store", where
        assert response.headers.get("pragma") == "no-cache", where
    if status == 401:
        scheme = "Basic" if case.operation.path in OAUTH_PATHS else "Bearer"
        assert response.headers.get("www-authenticate", "").startswith(scheme), where
    if status in (429, 503):
        assert response.headers.get("retry-after", "").isdigit(), where


def _validate(case: Case, response: httpx.Response, checks: tuple[CheckFunction, ...]) -> None:
    """Schemathesis checks; a failure becomes an AssertionError (schemathesis raises a
    BaseExceptionGroup, which hypothesis would not shrink and report as an example)."""
    try:
        case.validate_response(response, checks=list(checks))
    except BaseExceptionGroup as failures:
        raise AssertionError(str(failures)) from None


def verify(case: Case, response: httpx.Response) -> None:
    """Never a 5xx; the contract's checks; conformance to the document."""
    _validate(case, response, (not_a_server_error,))
    check_contract(case, response)
    _validate(case, response, CONFORMANCE)


def cases(operation: Operation) -> st.SearchStrategy[Case]:
    return st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )


@pytest.mark.parametrize("operation_id", sorted(OPERATIONS))
def test_operation_never_fails_and_conforms(fuzz: Fuzz, operation_id: str) -> None:
    operation = OPERATIONS[operation_id]
    headers = fuzz.auth_for(operation_id)

    @FUZZ_SETTINGS
    @given(case=cases(operation))
    def fuzz_operation(case: Case) -> None:
        verify(case, send(fuzz, case, headers))

    fuzz_operation()


# --- Probes: the statuses the contract requires --------------------------------

ADMIN_IDS = {"user_id", "client_id", "family_id"}
# A valid request body per admin operation, so that only the probed thing is wrong.
ADMIN_BODIES: dict[str, Any] = {
    "admin_create_user": {"username": "probe", "password": PASSWORD},
    "admin_patch_user": {"disabled": True},
    "admin_set_password": {"password": PASSWORD},
    "admin_create_client": {"name": "probe", "grant_types": ["client_credentials"]},
    "admin_rotate_keys": {"force": True},
}
ADMIN_OPERATIONS = sorted(name for name in OPERATIONS if name.startswith("admin_"))


def probe_case(operation_id: str, ids: str | None = None, body: Any = None) -> Case:
    operation = OPERATIONS[operation_id]
    names = [p.name for p in operation.path_parameters]
    path_parameters = {name: ids or str(uuid.uuid4()) for name in names}
    body = ADMIN_BODIES.get(operation_id) if body is None else body
    if body is None:
        return operation.Case(path_parameters=path_parameters)
    return operation.Case(path_parameters=path_parameters, body=body, media_type="application/json")


def error_of(response: httpx.Response) -> str:
    return str(response.json()["error"])


@pytest.mark.parametrize("operation_id", ADMIN_OPERATIONS)
def test_admin_operations_refuse_other_callers(fuzz: Fuzz, operation_id: str) -> None:
    # The callers stay a loop on one fixture: parametrized, each of the 60 pairs
    # would set up a database, four clients and two tokens for a request of a few ms.
    for caller, headers, status, error in [
        ("no-authorization", {}, 401, "invalid_token"),
        ("not-a-token", {"Authorization": "Bearer not.a.token"}, 401, "invalid_token"),
        ("basic", fuzz.caller, 401, "invalid_token"),  # Basic is not a Bearer token
        ("not-admin", fuzz.not_admin, 403, "access_denied"),
    ]:
        case = probe_case(operation_id)
        response = send(fuzz, case, headers)
        assert (response.status_code, error_of(response)) == (status, error), caller
        verify(case, response)


@pytest.mark.parametrize(
    "operation_id",
    [name for name in ADMIN_OPERATIONS if OPERATIONS[name].path_parameters],
)
def test_unknown_ids_are_404(fuzz: Fuzz, operation_id: str) -> None:
    names = {p.name for p in OPERATIONS[operation_id].path_parameters}
    case = probe_case(operation_id, "no-such-kid" if names == {"kid"} else None)
    response = send(fuzz, case, fuzz.admin)
    assert (response.status_code, error_of(response)) == (404, "not_found")
    verify(case, response)


CREATED_USER = "<the id of the user created first>"


@pytest.mark.parametrize(
    ("operation_id", "body", "ids", "status", "error"),
    [
        pytest.param(
            "admin_create_user",
            {"username": "taken", "password": PASSWORD},
            None,
            409,
            "conflict",
            id="create-user-taken",
        ),
        pytest.param(
            "admin_create_user",
            {"username": "u1", "password": "7 chars"},
            None,
            422,
            None,
            id="create-user-short-password",
        ),
        pytest.param(
            "admin_create_user",
            {"username": "u2", "password": "p" * 1025},
            None,
            422,
            None,
            id="create-user-long-password",
        ),
        pytest.param(
            "admin_set_password",
            {"password": "7 chars"},
            CREATED_USER,
            422,
            None,
            id="set-password-short",
        ),
        pytest.param(
            "admin_set_password",
            {"password": "p" * 1025},
            CREATED_USER,
            422,
            None,
            id="set-password-long",
        ),
        # The next key is younger than ROTOR_JWKS_MAX_AGE.
        pytest.param(
            "admin_rotate_keys", {"force": False}, None, 409, "conflict", id="rotate-keys-early"
        ),
    ],
)
def test_admin_conflicts_and_unprocessable_passwords(
    fuzz: Fuzz,
    operation_id: str,
    body: dict[str, Any],
    ids: str | None,
    status: int,
    error: str | None,
) -> None:
    created = probe_case("admin_create_user", body={"username": "taken", "password": PASSWORD})
    response = send(fuzz, created, fuzz.admin)
    assert response.status_code == 201
    verify(created, response)
    user_id = response.json()["id"]

    case = probe_case(operation_id, user_id if ids == CREATED_USER else ids, body)
    response = send(fuzz, case, fuzz.admin)
    assert response.status_code == status, response.text
    if error is not None:
        assert error_of(response) == error
    verify(case, response)


@pytest.mark.parametrize(
    "operation_id", [name for name, operation in sorted(OPERATIONS.items()) if operation.body]
)
def test_oversized_body_is_413(fuzz: Fuzz, operation_id: str) -> None:
    """Every operation that reads a body refuses one over MAX_BODY_BYTES. (Operations
    without a body never read it, so they answer as if it were absent.)"""
    operation = OPERATIONS[operation_id]
    media_type = next(iter(operation.body)).media_type
    case = probe_case(operation_id, body={"x": "y"})
    headers = {**fuzz.auth_for(operation_id), "Content-Type": media_type}
    response = send(fuzz, case, headers, content=b"x" * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413, response.text
    verify(case, response)


NESTED = b"[" * 5000 + b"]" * 5000  # 10 KB, well under MAX_BODY_BYTES
JSON_OPERATIONS = sorted(
    name
    for name, operation in OPERATIONS.items()
    if "application/json" in {body.media_type for body in operation.body}
)


@pytest.mark.parametrize(
    "operation_id",
    [pytest.param(name) for name in JSON_OPERATIONS],
)
@pytest.mark.parametrize(
    "content", [NESTED, b'{"unknown": ' + NESTED + b"}"], ids=["top-level", "member"]
)
def test_deeply_nested_json_is_400(fuzz: Fuzz, operation_id: str, content: bytes) -> None:
    """msgspec raises RecursionError, not DecodeError, on deep nesting."""
    headers = {**fuzz.auth_for(operation_id), "Content-Type": "application/json"}
    case = probe_case(operation_id, body={"x": "y"})
    response = send(fuzz, case, headers, content=content)
    assert (response.status_code, error_of(response)) == (400, "invalid_request"), response.text
    verify(case, response)


@pytest.mark.parametrize("path", sorted({op.path for op in OPERATIONS.values()}))
def test_wrong_method_is_405_with_allow(fuzz: Fuzz, path: str) -> None:
    """405 answers a method the document has no operation for, so there are no declared
    statuses to check it against; the contract checks apply."""
    documented = {op.method.upper() for op in OPERATIONS.values() if op.path == path}
    operation = next(op for op in OPERATIONS.values() if op.path == path)
    ids = {p.name: str(uuid.uuid4()) for p in operation.path_parameters}
    case = operation.Case(path_parameters=ids)
    headers = fuzz.auth_for(operation.definition.raw["operationId"])
    # The 2 or 3 undocumented methods of a path stay a loop on one fixture.
    for method in sorted({"PUT", "DELETE", "GET", "POST"} - documented):
        response = send(fuzz, case, headers, method=method)
        assert response.status_code == 405, (method, response.text)
        allowed = {m.strip() for m in response.headers.get("allow", "").split(",")}
        assert documented <= allowed, (method, response.headers.get("allow"))
        check_contract(case, response)


@pytest.mark.parametrize(
    ("operation_id", "caller"),
    [
        ("token", None),
        ("refresh", None),
        ("introspect", None),
        ("revoke", None),
        ("introspect", "caller"),  # a client not allowed to introspect
    ],
    ids=["token", "refresh", "introspect", "revoke", "introspect-by-a-client-not-allowed"],
)
def test_oauth_operations_without_client_authentication_are_401(
    fuzz: Fuzz, operation_id: str, caller: str | None
) -> None:
    body: dict[str, Any] = {"grant_type": "client_credentials", "refresh_token": "x", "token": "x"}
    headers = fuzz.caller if caller == "caller" else {}
    case = OPERATIONS[operation_id].Case(body=body, media_type="application/x-www-form-urlencoded")
    response = send(fuzz, case, headers)
    assert (response.status_code, error_of(response)) == (401, "invalid_client")
    verify(case, response)
