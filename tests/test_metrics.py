"""GET /metrics (CONTRACT 3.7): Prometheus text with requests by route and
status, latency histograms, and the domain counters.

The counters are process-global (every app built in this process adds to
them), so each test reads a value before and after what it does and checks
the exact difference.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.config import Settings
from tests.helpers import RegisteredClient, Rotor

Reading = Callable[..., float]


# --------------------------------------------------------------------------- helpers


def b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def sid_of(token: str) -> str:
    return str(json.loads(b64decode(token.split(".")[1]))["sid"])


def samples(text: str) -> list[Any]:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


async def scrape(rotor: Rotor) -> Reading:
    """A reader of one scrape: the sum of the samples of `name` whose labels match."""
    response = await rotor.http.get("/metrics")
    assert response.status_code == 200, response.text
    parsed = samples(response.text)

    def value(name: str, **labels: str) -> float:
        return sum(
            sample.value
            for sample in parsed
            if sample.name == name
            and all(sample.labels.get(key) == wanted for key, wanted in labels.items())
        )

    return value


class Delta:
    """Values before and after, for the metrics a test names."""

    def __init__(self, rotor: Rotor) -> None:
        self._rotor = rotor
        self._before: Reading | None = None

    async def __aenter__(self) -> Delta:
        self._before = await scrape(self._rotor)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.after = await scrape(self._rotor)

    def __call__(self, name: str, **labels: str) -> float:
        assert self._before is not None
        return self.after(name, **labels) - self._before(name, **labels)


@pytest.fixture
async def app(rotor: Rotor) -> RegisteredClient:
    await rotor.user()
    return await rotor.client(name="app")


async def login(rotor: Rotor, client: RegisteredClient) -> dict[str, Any]:
    response = await rotor.login(client)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def refresh(rotor: Rotor, client: RegisteredClient, token: str) -> Any:
    return await rotor.http.post("/refresh", json={"refresh_token": token}, headers=client.auth)


async def admin_headers(rotor: Rotor) -> dict[str, str]:
    ops = await rotor.client(grants=["client_credentials"], scopes=[], admin=True, name="ops")
    response = await rotor.token({"grant_type": "client_credentials"}, ops.auth)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


# --------------------------------------------------------------------------- the format


async def test_metrics_are_prometheus_text(rotor: Rotor, app: RegisteredClient) -> None:
    await login(rotor, app)
    response = await rotor.http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "rotor_tokens_issued",
        "rotor_rotations",
        "rotor_reuse_detected",
        "rotor_families_revoked",
        "rotor_login_failures",
        "rotor_login_lockouts",
        "rotor_http_requests",
        "rotor_http_request_duration_seconds",
    } <= names


# --------------------------------------------------------------------------- domain counters


async def test_tokens_issued_count_by_grant(rotor: Rotor, app: RegisteredClient) -> None:
    machine = await rotor.client(grants=["client_credentials"], name="m2m")
    async with Delta(rotor) as delta:
        await login(rotor, app)
        await login(rotor, app)
        issued = await rotor.token({"grant_type": "client_credentials"}, machine.auth)
        assert issued.status_code == 200, issued.text
    assert delta("rotor_tokens_issued_total", grant="password") == 2
    assert delta("rotor_tokens_issued_total", grant="client_credentials") == 1
    assert delta("rotor_tokens_issued_total", grant="refresh_token") == 0
    assert delta("rotor_rotations_total") == 0


async def test_refused_requests_issue_nothing(rotor: Rotor, app: RegisteredClient) -> None:
    async with Delta(rotor) as delta:
        wrong_scope = await rotor.login(app, scope="admin")
        assert wrong_scope.status_code == 400, wrong_scope.text
        not_allowed = await rotor.token(
            {"grant_type": "client_credentials"},
            (await rotor.client(grants=["password"], name="web")).auth,
        )
        assert not_allowed.status_code == 400, not_allowed.text
    assert delta("rotor_tokens_issued_total") == 0


async def test_rotations_count(rotor: Rotor, app: RegisteredClient) -> None:
    async with Delta(rotor) as delta:
        token = (await login(rotor, app))["refresh_token"]
        for _ in range(2):
            rotated = await refresh(rotor, app, token)
            assert rotated.status_code == 200, rotated.text
            token = rotated.json()["refresh_token"]
    assert delta("rotor_rotations_total") == 2
    assert delta("rotor_tokens_issued_total", grant="refresh_token") == 2
    assert delta("rotor_tokens_issued_total", grant="password") == 1
    assert delta("rotor_reuse_detected_total") == 0


async def test_reuse_detection_counts_once_and_revokes_one_family(
    rotor: Rotor, app: RegisteredClient
) -> None:
    async with Delta(rotor) as delta:
        first = (await login(rotor, app))["refresh_token"]
        assert (await refresh(rotor, app, first)).status_code == 200
        replay = await refresh(rotor, app, first)
        assert replay.status_code == 400, replay.text
        assert replay.json()["error"] == "invalid_grant"
    assert delta("rotor_reuse_detected_total") == 1
    assert delta("rotor_families_revoked_total", reason="reuse_detected") == 1
    assert delta("rotor_families_revoked_total") == 1
    assert delta("rotor_rotations_total") == 1


async def test_failed_logins_count(rotor: Rotor, app: RegisteredClient) -> None:
    async with Delta(rotor) as delta:
        for username in ("alice", "nobody"):
            failed = await rotor.login(app, username, "not the password")
            assert failed.status_code == 400, failed.text
    assert delta("rotor_login_failures_total") == 2
    assert delta("rotor_login_lockouts_total") == 0
    assert delta("rotor_tokens_issued_total") == 0


async def test_lockouts_count_separately_from_failures(
    settings: Settings, db: asyncpg.Connection
) -> None:
    configured = settings.with_overrides(login_max_failures=1)
    async with AsyncTestClient(create_app(configured)) as http:
        rotor = Rotor(http, configured, db)
        await rotor.user()
        client = await rotor.client(name="app")
        async with Delta(rotor) as delta:
            failed = await rotor.login(client, password="not the password")
            assert failed.status_code == 400, failed.text
            for _ in range(2):
                locked = await rotor.login(client)  # even the right password
                assert locked.status_code == 429, locked.text
        assert delta("rotor_login_failures_total") == 1
        assert delta("rotor_login_lockouts_total") == 2
        assert delta("rotor_tokens_issued_total", grant="password") == 0


async def test_revocations_count_by_reason(rotor: Rotor, app: RegisteredClient) -> None:
    user_id = str(await rotor.db.fetchval("SELECT id FROM users WHERE username = 'alice'"))
    headers = await admin_headers(rotor)
    sessions = [await login(rotor, app) for _ in range(4)]
    async with Delta(rotor) as delta:
        logout = await rotor.http.post(
            "/revoke", data={"token": sessions[0]["refresh_token"]}, headers=app.auth
        )
        assert logout.status_code == 200, logout.text
        one = await rotor.http.post(
            f"/admin/families/{sid_of(sessions[1]['access_token'])}/revoke", headers=headers
        )
        assert one.json() == {"revoked": 1}
        rest = await rotor.http.post(f"/admin/users/{user_id}/revoke", headers=headers)
        assert rest.json() == {"revoked": 2}
        again = await rotor.http.post(f"/admin/users/{user_id}/revoke", headers=headers)
        assert again.json() == {"revoked": 0}
    assert delta("rotor_families_revoked_total", reason="logout") == 1
    assert delta("rotor_families_revoked_total", reason="admin") == 3
    assert delta("rotor_families_revoked_total") == 4


async def test_client_and_account_revocations_count_by_reason(
    rotor: Rotor, app: RegisteredClient
) -> None:
    user_id = str(await rotor.db.fetchval("SELECT id FROM users WHERE username = 'alice'"))
    headers = await admin_headers(rotor)
    for _ in range(2):
        await login(rotor, app)
    async with Delta(rotor) as by_client:
        revoked = await rotor.http.post(f"/admin/clients/{app.client_id}/revoke", headers=headers)
        assert revoked.json() == {"revoked": 2}
    assert by_client("rotor_families_revoked_total", reason="client_revoked") == 2

    await login(rotor, app)
    async with Delta(rotor) as by_password:
        changed = await rotor.http.post(
            f"/admin/users/{user_id}/password",
            json={"password": "another long password"},
            headers=headers,
        )
        assert changed.status_code == 204, changed.text
    assert by_password("rotor_families_revoked_total", reason="password_changed") == 1

    relogin = await rotor.login(app, password="another long password")
    assert relogin.status_code == 200, relogin.text
    async with Delta(rotor) as by_disable:
        disabled = await rotor.http.patch(
            f"/admin/users/{user_id}", json={"disabled": True}, headers=headers
        )
        assert disabled.status_code == 200, disabled.text
    assert by_disable("rotor_families_revoked_total", reason="user_disabled") == 1
    assert by_disable("rotor_families_revoked_total") == 1


# --------------------------------------------------------------------------- HTTP metrics


async def test_requests_count_by_route_template_and_status(
    rotor: Rotor, app: RegisteredClient
) -> None:
    machine = await rotor.client(grants=["client_credentials"], name="m2m")
    async with Delta(rotor) as delta:
        ok = await rotor.token({"grant_type": "client_credentials"}, machine.auth)
        assert ok.status_code == 200, ok.text
        bad = await rotor.token({"grant_type": "nope"}, machine.auth)
        assert bad.status_code == 400, bad.text
        unauthenticated = await rotor.token({"grant_type": "client_credentials"})
        assert unauthenticated.status_code == 401, unauthenticated.text
    requests = "rotor_http_requests_total"
    assert delta(requests, path="/token", status_code="200") == 1
    assert delta(requests, path="/token", status_code="400") == 1
    assert delta(requests, path="/token", status_code="401") == 1
    assert delta(requests, path="/token") == 3


async def test_paths_with_ids_are_counted_under_their_template(rotor: Rotor) -> None:
    headers = await admin_headers(rotor)
    unknown = str(uuid.uuid4())
    async with Delta(rotor) as delta:
        response = await rotor.http.get(f"/admin/users/{unknown}", headers=headers)
        assert response.status_code == 404, response.text
    # The route template, never the raw path: ids would make a series per user.
    assert unknown not in (await rotor.http.get("/metrics")).text
    assert delta("rotor_http_requests_total", path="/admin/users/{user_id}", status_code="404") == 1


async def test_latency_is_a_histogram_per_route(rotor: Rotor, app: RegisteredClient) -> None:
    async with Delta(rotor) as delta:
        await login(rotor, app)
    histogram = "rotor_http_request_duration_seconds"
    assert delta(f"{histogram}_count", path="/token") == 1
    assert delta(f"{histogram}_bucket", path="/token", le="+Inf") == 1
    assert delta(f"{histogram}_sum", path="/token") > 0
    buckets = [
        sample
        for sample in samples((await rotor.http.get("/metrics")).text)
        if sample.name == f"{histogram}_bucket" and sample.labels.get("path") == "/token"
    ]
    assert len({sample.labels["le"] for sample in buckets}) > 1
