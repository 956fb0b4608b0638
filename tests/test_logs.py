"""Logs: structured JSON lines with a request id; no secret ever reaches a line.

A whole session of use is run through the app as served (behind its access
log), every log record of every logger at DEBUG is collected, and each
secret the run handled is searched for in every line.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_asgi
from service.config import Settings
from service.observability import logs
from service.observability.logs import ACCESS_DELAY, JSONFormatter, configure_logging
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


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Logging as `rotor serve` sets it up (configure_logging), onto a buffer;
    the test client's own request lines (httpx) left out."""
    root, client_log = logging.getLogger(), logging.getLogger("httpx")
    handlers, level, configured = root.handlers[:], root.level, logs._handler
    client_level = client_log.level
    buffer = io.StringIO()
    configure_logging("INFO", stream=buffer)
    client_log.setLevel(logging.WARNING)
    yield buffer
    root.handlers[:] = handlers
    root.setLevel(level)
    client_log.setLevel(client_level)
    logs._handler = configured


def only_rotors_handler() -> None:
    """pytest adds its capturing handlers to the root logger for each phase of
    a test: take them off again, as in `rotor serve`, where Rotor's is alone."""
    assert logs._handler is not None
    logging.getLogger().handlers[:] = [logs._handler]


def entries(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


async def test_access_lines_skip_the_record_but_keep_shape_order_and_time(
    settings: Settings, stream: io.StringIO
) -> None:
    only_rotors_handler()
    async with AsyncTestClient(create_asgi(settings)) as http:  # type: ignore[arg-type]
        await http.get("/health/live?probe=1", headers={"X-Request-ID": "abc-123"})
        await http.get("/nowhere")
        # Written before any later record, whenever they were held back.
        logging.getLogger("rotor.test").warning("after the requests")
        written = [e for e in entries(stream) if e["logger"] != "rotor.keys"]  # start-up
        assert [(e["logger"], e.get("path")) for e in written] == [
            ("rotor.access", "/health/live"),
            ("rotor.access", "/nowhere"),
            ("rotor.test", None),
        ]
        assert written[0] | {"ts": 0, "duration_ms": 0} == {
            "ts": 0,
            "level": "info",
            "logger": "rotor.access",
            "msg": "request",
            "request_id": "abc-123",
            "method": "GET",
            "path": "/health/live",
            "status": 200,
            "duration_ms": 0,
        }
        assert written[1]["status"] == 404
        assert "probe" not in stream.getvalue()

        # With nothing else logged, the line is written within ACCESS_DELAY.
        await http.get("/health/live")
        await asyncio.sleep(ACCESS_DELAY + 0.3)
        assert [e.get("path") for e in entries(stream)][-1] == "/health/live"


async def test_access_lines_go_through_logging_when_another_handler_listens(
    settings: Settings, stream: io.StringIO
) -> None:
    only_rotors_handler()
    collector = Collector()
    logging.getLogger().addHandler(collector)
    try:
        async with AsyncTestClient(create_asgi(settings)) as http:  # type: ignore[arg-type]
            await http.get("/health/live")
    finally:
        logging.getLogger().removeHandler(collector)
    seen = [json.loads(line) for line in collector.lines]
    assert [(e["logger"], e["path"]) for e in seen if e["logger"] == "rotor.access"] == [
        ("rotor.access", "/health/live")
    ]
    assert [e["path"] for e in entries(stream) if e["logger"] == "rotor.access"] == ["/health/live"]


async def test_an_access_log_cut_off_from_the_root_logger_writes_nothing(
    settings: Settings, stream: io.StringIO
) -> None:
    """An operator who stops rotor.access from propagating (and gives it no
    handler of its own) gets no access lines, by either way of writing them."""
    only_rotors_handler()
    logs.access_log.propagate = False
    try:
        async with AsyncTestClient(create_asgi(settings)) as http:  # type: ignore[arg-type]
            assert (await http.get("/health/live")).status_code == 200
        logging.getLogger("rotor.test").warning("after the request")
    finally:
        logs.access_log.propagate = True
    assert [e["logger"] for e in entries(stream) if e["logger"] != "rotor.keys"] == ["rotor.test"]


def test_a_broken_stream_never_fails_the_request(capsys: pytest.CaptureFixture[str]) -> None:
    class Broken(io.StringIO):
        def write(self, _: str) -> int:
            raise OSError("pipe closed")

    handler = logs.JSONLinesHandler(Broken())
    handler.access('{"msg":"request"}\n')  # outside an event loop: written at once
    assert "--- Logging error ---" in capsys.readouterr().err


def test_a_logged_exception_shows_where_and_what_but_never_its_message() -> None:
    secret = "SECRET" + "-TOKEN"  # so that no source line quoted in the trace holds it
    try:
        try:
            raise ValueError(f"invalid input for query argument $1: {secret!r}")
        except ValueError as inner:
            raise RuntimeError(f"{secret} again") from inner
    except RuntimeError:
        record = logging.LogRecord(
            "rotor", logging.ERROR, __file__, 1, "unhandled", (), sys.exc_info()
        )
    written = JSONFormatter().format(record)
    exc = json.loads(written)["exc"]
    assert "SECRET-TOKEN" not in written
    assert "builtins.ValueError: [withheld]" in exc
    assert "builtins.RuntimeError: [withheld]" in exc
    assert "test_a_logged_exception_shows_where_and_what_but_never_its_message" in exc


async def test_a_500_answers_generically_and_logs_no_secret(
    rotor: Rotor, collected: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.tokens.rotation import RotationService

    hidden = "SECRET" + "-IN-A-MESSAGE"  # no source line quoted in the trace holds it

    async def broken(*_: object) -> None:
        raise RuntimeError(f"refresh_token={hidden}")

    monkeypatch.setattr(RotationService, "refresh", broken)
    client = await rotor.client()
    response = await rotor.http.post(
        "/refresh", json={"refresh_token": "SECRET-IN-THE-BODY"}, headers=client.auth
    )
    assert (response.status_code, response.json()) == (
        500,
        {"error": "server_error", "error_description": "the server could not answer this request"},
    )
    logged = "\n".join(collected.lines)
    assert "builtins.RuntimeError: [withheld]" in logged
    assert (hidden in logged, "SECRET-IN-THE-BODY" in logged) == (False, False)
