"""`python -m bench --split`: where a hot request's CPU goes, by a command
(issue 16 point 3: which part of a request costs what, against the
framework's own cost).

For the minimal app and for `/refresh`, `/introspect` and `/token`
client_credentials, the same requests are measured twice in one run:

1. **served**: `rotor serve --workers N` (the minimal app: uvicorn as
   `rotor serve` runs it) under the main bench's wrk load; the workers' CPU
   per answer, from /proc, as the main bench's *srv ms*;
2. **in process**: the same application object called through ASGI in this
   process, by as many coroutines as wrk has connections, each awaiting its
   answer before sending the next request, against the same PostgreSQL; this
   process's CPU per answer (`time.process_time`), less what the driver itself
   costs (measured on an ASGI app that answers at once). No HTTP server, no
   socket between client and server: what is left is the application's own
   work (Litestar's routing, Rotor's edge, parsing, client authentication,
   the token logic, asyncpg and its socket to PostgreSQL, signing).

served - in process is what serving over HTTP costs on top: uvicorn and
httptools, the sockets to wrk, and the event loop's share of them. Beside
them, the signature alone (ES256 by default: `service/tokens/access.py`'s
signer, and `service/tokens/verify.py` on a token it has not seen) timed in
a loop. In process there is no access line (the bench process configures no
log) and the Prometheus values live in memory, not in the files of the
served multi-process mode: both are in the served figure only.

Per-request CPU is less noisy than a rate: it hardly moves when another
process takes part of the machine.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

from bench import mint, wrk
from bench.options import Options
from bench.run import TOKEN_MARGIN, log
from bench.seed import SESSION_USER_AGENT
from bench.servers import HOST, Server, start_minimal, start_rotor
from bench.topology import Topology, TopologyRun

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]
# Requests per in-process measurement: enough for a stable mean (a few seconds each).
IN_PROCESS_REQUESTS = 20_000
SIGNATURES = 2_000


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    headers: list[tuple[bytes, bytes]]
    body: bytes


def headers(authorization: str, content_type: str) -> list[tuple[bytes, bytes]]:
    """What bench/lua/common.lua sends."""
    return [
        (b"host", HOST.encode()),
        (b"authorization", authorization.encode()),
        (b"content-type", content_type.encode()),
        (b"user-agent", SESSION_USER_AGENT.encode()),
    ]


def scope_of(request: Request) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": request.headers,
        "server": (HOST, 80),
        "client": (HOST, 40000),
        "state": {},
    }


async def call(app: ASGIApp, request: Request) -> int:
    """One request through `app`; its status."""
    delivered = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:  # nothing more: the client waits for the answer
            await asyncio.Event().wait()
        delivered = True
        return {"type": "http.request", "body": request.body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope_of(request), receive, send)
    return status


async def answer_at_once(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def drive(app: ASGIApp, requests: Iterator[Request], total: int, concurrency: int) -> float:
    """CPU seconds of this process per answer, `concurrency` callers at once;
    every answer must be 200."""
    numbers = count()
    refused: list[int] = []

    async def caller() -> None:
        while next(numbers) < total:
            status = await call(app, next(requests))
            if status != 200:
                refused.append(status)

    started = time.process_time()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    spent = time.process_time() - started
    if refused:
        raise RuntimeError(f"in process: {len(refused)} answers were not 200: {refused[:5]}")
    return spent / total


@dataclass
class Row:
    name: str
    served_us: float
    in_process_us: float
    served_rps: float

    @property
    def http_us(self) -> float:
        return self.served_us - self.in_process_us


@dataclass
class SplitReport:
    settings: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    driver_us: float = 0.0
    sign_us: float = 0.0
    verify_us: float = 0.0
    alg: str = ""
    notes: list[str] = field(default_factory=list)


def timed(work: Callable[[], object], times: int) -> float:
    started = time.process_time()
    for _ in range(times):
        work()
    return (time.process_time() - started) / times


class SplitRun(TopologyRun):
    """The main bench's set-up; each path served, then in process."""

    def served(
        self, server: Server, script: str, data: Path, authorization: str, warm: Path | None = None
    ) -> tuple[float, float]:
        """Worker CPU µs per answer and answers per second, after a warm-up on
        `warm` (refresh tokens are single-use: the warm-up needs its own)."""
        topology = Topology(server.name, server.base_url, server.pids())
        o = self.options
        if o.warmup > 0:
            wrk.run(self.wrk_load(topology, script, warm or data, authorization, o.warmup))
        window = self.window(
            topology, self.wrk_load(topology, script, data, authorization, o.duration)
        )
        if window.result.errors or window.result.wrapped:
            self.notes.append(
                f"{server.name} {script}: {window.result.errors} errors, "
                f"{window.result.wrapped} times out of tokens"
            )
        return window.cpu_ms("server") * 1000, window.result.rps

    def in_process(self, app: ASGIApp, requests: Iterator[Request], total: int) -> float:
        connections = self.options.connections
        return asyncio.run(self._in_process(app, requests, total, connections)) * 1e6

    async def _in_process(
        self, app: ASGIApp, requests: Iterator[Request], total: int, connections: int
    ) -> float:
        lifespan = getattr(app, "lifespan", None)
        if lifespan is None:
            await drive(app, requests, min(total, 1000), connections)  # warm-up
            return await drive(app, requests, total, connections)
        async with lifespan():
            await drive(app, requests, min(total, 1000), connections)
            return await drive(app, requests, total, connections)

    def measure_all(self) -> SplitReport:
        o = self.options
        total = 200 if o.smoke else IN_PROCESS_REQUESTS
        report = SplitReport(
            {
                "workers": o.workers,
                "connections": o.connections,
                "duration": o.duration,
                "in_process_requests": total,
            }
        )
        report.notes = self.notes
        app_auth = self.accounts.app.authorization
        gateway_auth = self.accounts.gateway.authorization
        url = self.pg.url_of(self.stores.main)

        idle = Request("/", [], b"")
        report.driver_us = self.in_process(answer_at_once, iter(lambda: idle, None), total)
        log(f"the in-process driver alone: {report.driver_us:.1f} µs per request")

        # The minimal app (bench/minimal_app.py), both ways.
        log("minimal app: served, then in process")
        from bench import minimal_app

        minimal = start_minimal(o.workers, self.work)
        try:
            data = self.lines("split-minimal", [f"t{i}" for i in range(1000)])
            served_us, rps = self.served(minimal, "minimal", data, app_auth)
        finally:
            minimal.stop()
        plain = Request("/", headers(app_auth, "application/json"), b'{"refresh_token": "t"}')
        report.rows.append(
            Row(
                "minimal app",
                served_us,
                self.in_process(minimal_app.app, iter(lambda: plain, None), total),
                rps,
            )
        )

        # Rotor: every served load first (one server), then the same in process.
        log(f"rotor serve --workers {o.workers}: /refresh, /introspect, client_credentials")
        server = start_rotor(self.env, o.workers, self.work)
        try:
            # Rotor's /refresh is well below the minimal app's rate: tokens for a
            # third of it (the warm-up's own apart).
            expected = max(1000.0, rps / 3)
            warm = self.tokens(url, expected, o.warmup, "split-warm")
            tokens = self.tokens(url, expected, o.duration, "split-refresh")
            refresh_served = self.served(server, "refresh", tokens, app_auth, warm)
            families = self.seed_tokens(url, mint.families_for_mix(o.introspect_tokens))
            mix = mint.introspection_mix(
                server.base_url, self.accounts, families, o.introspect_tokens
            )
            mix_file = self.lines("split-mix", mix.tokens)
            introspect_served = self.served(server, "introspect", mix_file, gateway_auth)
            cc_served = self.served(server, "client_credentials", self.users_file, app_auth)
            issuer = server.base_url
        finally:
            server.stop()

        from service.app import create_app
        from service.config import Settings

        # The served Rotor's issuer: the mix it minted is active here too.
        settings = Settings.from_env({**self.env, "ROTOR_ISSUER": issuer})
        fresh = self.seed_tokens(url, math.ceil((total + 1000) * TOKEN_MARGIN))
        refresh_requests = (
            Request(
                "/refresh",
                headers(app_auth, "application/json"),
                b'{"refresh_token": "' + token.encode() + b'"}',
            )
            for token in fresh
        )
        introspect_requests = (
            Request(
                "/introspect",
                headers(gateway_auth, "application/x-www-form-urlencoded"),
                b"token=" + mix.tokens[i % len(mix.tokens)].encode(),
            )
            for i in count()
        )
        cc = Request(
            "/token",
            headers(app_auth, "application/x-www-form-urlencoded"),
            b"grant_type=client_credentials",
        )
        for name, (served_us, rps), requests in (
            ("/refresh", refresh_served, refresh_requests),
            ("/introspect", introspect_served, introspect_requests),
            ("/token client_credentials", cc_served, iter(lambda: cc, None)),
        ):
            log(f"{name}: in process, {total:,} requests")
            app = create_app(settings)
            report.rows.append(Row(name, served_us, self.in_process(app, requests, total), rps))
        report.alg, report.sign_us, report.verify_us = asyncio.run(self.signatures(settings))
        for row in report.rows:
            row.in_process_us = max(0.0, row.in_process_us - report.driver_us)
        return report

    async def signatures(self, settings: Any) -> tuple[str, float, float]:
        """µs per access-token signature and per verification of a token not seen
        before, with the store's active key, as the hot paths do them."""
        from service.db.pool import Database
        from service.tokens.access import AccessTokenIssuer
        from service.tokens.keys import KeyRing, KeyVault
        from service.tokens.secretbox import SecretBox
        from service.tokens.verify import AccessTokenVerifier

        database = Database(settings.database_url, timeout=settings.db_timeout, max_size=2)
        await database.open()
        vault = KeyVault(SecretBox.for_purpose(settings.secret, b"signing-keys"))
        ring = KeyRing(
            vault,
            database,
            access_ttl=settings.access_token_ttl,
            interval=settings.key_refresh_interval,
        )
        try:
            await ring.start(settings.signing_alg)
            issuer = AccessTokenIssuer(settings, ring)

            def issue() -> str:
                return issuer.issue(subject="u", client_id="c", scope="read", family_id=None).token

            sign_us = timed(issue, SIGNATURES) * 1e6
            made = [issue() for _ in range(SIGNATURES)]
            verifier = AccessTokenVerifier(settings, ring)
            tokens = iter(made)
            verify_us = timed(lambda: verifier.verify(next(tokens)), SIGNATURES) * 1e6
        finally:
            await ring.stop()
            await database.close()
        return settings.signing_alg, sign_us, verify_us


def render(report: SplitReport) -> str:
    header = (
        f"{'µs of worker CPU per answer':<27} {'served':>8} {'in process':>11} "
        f"{'HTTP serving':>13} {'served req/s':>13}"
    )
    lines = [
        "Where a request's CPU goes: served by uvicorn under wrk, and the same application",
        f"called through ASGI in this process ({report.settings['connections']} at once); "
        "served - in process = HTTP serving.",
        "",
        header,
        "-" * len(header),
    ]
    for row in report.rows:
        lines.append(
            f"{row.name:<27} {row.served_us:>8.0f} {row.in_process_us:>11.0f} "
            f"{row.http_us:>13.0f} {row.served_rps:>13,.0f}"
        )
    lines += [
        "",
        f"{report.alg} alone: {report.sign_us:.0f} µs per access token signed "
        f"(service/tokens/access.py), {report.verify_us:.0f} µs per new token verified "
        "(service/tokens/verify.py)",
        f"the in-process driver's own cost, taken off: {report.driver_us:.1f} µs per request",
    ]
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


def to_json(report: SplitReport) -> dict[str, Any]:
    return {
        "settings": report.settings,
        "rows": [
            {
                "name": row.name,
                "served_us": row.served_us,
                "in_process_us": row.in_process_us,
                "http_serving_us": row.http_us,
                "served_rps": row.served_rps,
            }
            for row in report.rows
        ],
        "signing_alg": report.alg,
        "sign_us": report.sign_us,
        "verify_us": report.verify_us,
        "driver_us": report.driver_us,
        "notes": report.notes,
    }


def main(options: Options) -> int:
    wrk.require_wrk()
    import shutil
    import tempfile

    from bench.database import Postgres

    pg = Postgres.start()
    work = Path(tempfile.mkdtemp(prefix="rotor-bench-"))
    run: SplitRun | None = None
    try:
        run = SplitRun(options, pg, work)
        report = run.measure_all()
    finally:
        if run is not None:
            run.drop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(render(report), flush=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    options.results.mkdir(parents=True, exist_ok=True)
    path = options.results / f"split-{stamp}{'-smoke' if options.smoke else ''}.json"
    path.write_text(json.dumps(to_json(report), indent=2) + "\n")
    print(f"\nResults: {path}")
    return 0
