"""Logs: structured JSON lines with a request id; no secret ever reaches a line.

A whole session of use is run through the app as served (behind its access
log), every log record of every logger at DEBUG is collected, and each
secret the run handled is searched for in every line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_asgi
from service.config import Settings
from service.observability.logs import JSONFormatter
from tests.helpers import PASSWORD, Rotor


class Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JSONFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def collected() -> Iterator[Collector]:
    root = logging.getLogger()
    collector, level = Collector(), root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    yield collector
    root.removeHandler(collector)
    root.setLevel(level)


async def test_no_secret_in_any_log_line_of_a_whole_session(
    settings: Settings, db, collected: Collector
) -> None:
    async with AsyncTestClient(create_asgi(settings)) as http:  # type: ignore[arg-type]
        rotor = Rotor(http, settings, db)
        app = await rotor.client()
        gateway = await rotor.client(grants=[], introspect=True)
        admin = await rotor.client(grants=["client_credentials"], scopes=[], admin=True)
        await rotor.user()
        secrets = [app.client_secret, gateway.client_secret, admin.client_secret, PASSWORD]

        login = (await rotor.login(app)).json()
        refreshed = (
            await http.post(
                "/refresh", json={"refresh_token": login["refresh_token"]}, headers=app.auth
            )
        ).json()
        replay = await http.post(
            "/refresh", json={"refresh_token": login["refresh_token"]}, headers=app.auth
        )  # reuse: logs a warning
        assert replay.status_code == 400
        await http.post(
            "/introspect", data={"token": refreshed["access_token"]}, headers=gateway.auth
        )
        await http.post("/revoke", data={"token": refreshed["refresh_token"]}, headers=app.auth)
        bad = await rotor.login(app, password="wrong password, also secret")
        assert bad.status_code == 400
        admin_token = (await rotor.token({"grant_type": "client_credentials"}, admin.auth)).json()[
            "access_token"
        ]
        created = await http.post(
            "/admin/users",
            headers={"Authorization": f"Bearer {admin_token}"},
            json={"username": "bob", "password": "bobs secret password"},
        )
        assert created.status_code == 201
        await http.get("/health/ready?token=query-string-secret")
        secrets += [
            login["access_token"],
            login["refresh_token"],
            refreshed["access_token"],
            refreshed["refresh_token"],
            admin_token,
            "wrong password, also secret",
            "bobs secret password",
            "query-string-secret",
        ]

    # httpx/httpcore lines are the test client's own (the caller side), not Rotor's.
    lines = [
        line
        for line in collected.lines
        if not json.loads(line)["logger"].startswith(("httpx", "httpcore"))
    ]
    assert len(lines) > 10
    leaks = [(secret[:12], line[:200]) for secret in secrets for line in lines if secret in line]
    assert leaks == []


async def test_access_log_lines_are_json_with_request_id_and_no_query(
    settings: Settings, db, collected: Collector
) -> None:
    async with AsyncTestClient(create_asgi(settings)) as http:  # type: ignore[arg-type]
        response = await http.get("/health/live?probe=1", headers={"X-Request-ID": "abc-123"})
        unnamed = await http.get("/health/live")
        missing = await http.get("/nowhere")
        wrong_method = await http.get("/token")

    assert response.headers["x-request-id"] == "abc-123"
    assert len(unnamed.headers["x-request-id"]) == 32  # one made up when none was sent
    assert (missing.status_code, wrong_method.status_code) == (404, 405)
    access = [json.loads(line) for line in collected.lines if '"logger":"rotor.access"' in line]
    assert [(a["path"], a["status"]) for a in access] == [
        ("/health/live", 200),
        ("/health/live", 200),
        ("/nowhere", 404),
        ("/token", 405),
    ]
    assert access[0]["request_id"] == "abc-123"
    assert access[1]["request_id"] == unnamed.headers["x-request-id"]
    assert all(
        set(a) >= {"ts", "level", "msg", "method", "path", "status", "duration_ms"} for a in access
    )
    assert all("probe" not in json.dumps(a) for a in access)


async def test_a_hostile_request_id_is_replaced(settings: Settings, collected: Collector) -> None:
    async with AsyncTestClient(create_asgi(settings)) as http:  # type: ignore[arg-type]
        response = await http.get("/health/live", headers={"X-Request-ID": 'x" injected=1'})
    assert response.headers["x-request-id"] != 'x" injected=1'
    assert len(response.headers["x-request-id"]) == 32


def test_fields_named_like_secrets_are_redacted() -> None:
    record = logging.LogRecord("rotor", logging.INFO, __file__, 1, "event", (), None)
    record.refresh_token = "abc"
    record.client_secret = "def"
    record.family_id = "f-1"
    entry = json.loads(JSONFormatter().format(record))
    assert (entry["refresh_token"], entry["client_secret"], entry["family_id"]) == (
        "[redacted]",
        "[redacted]",
        "f-1",
    )
