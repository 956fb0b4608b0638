"""`python -m bench --dpop`: what binding a family to a key costs a refresh
(issue 17).

One `rotor serve --workers N`, two loads at the same connections, in turn:
/refresh of unbound families (the main bench's load), then /refresh of
families bound to a DPoP key, each request with its own proof (made with
joserfc before the load, as a client would: a fresh jti, htu this server's
/refresh, iat now). The proofs must be used within ROTOR_DPOP_WINDOW of
their making, so each load is sized and signed just before it runs. The ratio
bound ÷ unbound is the cost, beside the CPU per request of the server and of
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import asyncpg

from bench import wrk
from bench.options import Options
from bench.run import TOKEN_MARGIN, log
from bench.servers import Server, start_rotor
from bench.topology import Topology, TopologyReport, TopologyRun, Window, run_and_report
from tests.dpop_proofs import DpopKey

UNBOUND = "unbound"
BOUND = "bound (DPoP)"
TITLE = (
    "/refresh of DPoP-bound families (a proof each) against unbound ones, one server,\n"
    "the same run; CPU per request in ms"
)


async def bind(url: str, tokens: list[str], jkt: str) -> int:
    """Bind the families of `tokens` to the key `jkt`, as a login with a proof would."""
    connection = await asyncpg.connect(url)
    try:
        status = await connection.execute(
            "UPDATE token_families f SET dpop_jkt = $2 FROM refresh_tokens t "
            "WHERE t.family_id = f.id AND t.token_hash = ANY("
            "SELECT sha256(convert_to(x, 'UTF8')) FROM unnest($1::text[]) AS x)",
            tokens,
            jkt,
        )
    finally:
        await connection.close()
    return int(status.split()[-1])


class DpopRun(TopologyRun):
    def bound_file(self, server: Server, url: str, key: DpopKey, count: int) -> Path:
        tokens = self.seed_tokens(url, count)
        bound = asyncio.run(bind(url, tokens, key.jkt))
        if bound != count:
            self.notes.append(f"only {bound} of {count} families were bound")
        htu = f"{server.base_url}/refresh"
        lines = [f"{token} {key.proof(htu=htu)}" for token in tokens]
        return self.lines("refresh-dpop", lines)

    def measure_all(self) -> TopologyReport:
        o = self.options
        report = TopologyReport(
            {"workers": o.workers, "connections": o.connections, "duration": o.duration},
            baseline_topology=UNBOUND,
            title=TITLE,
        )
        report.notes = self.notes
        url = self.pg.url_of(self.stores.main)
        key = DpopKey("ES256")
        app = self.accounts.app.authorization
        log(f"one rotor serve --workers {o.workers}")
        server = start_rotor(self.env, o.workers, self.work)
        try:
            plain = Topology(UNBOUND, server.base_url, server.pids())
            bound = Topology(BOUND, server.base_url, server.pids())
            rate = 1000.0
            if o.warmup > 0:
                warm = self.tokens(url, rate, o.warmup)
                rate = max(
                    rate,
                    1.5
                    * wrk.run(self.wrk_load(plain, "refresh", warm, app, o.warmup)).response_rps,
                )
                warm = self.bound_file(server, url, key, self.count(rate, o.warmup))
                wrk.run(self.wrk_load(bound, "refresh_dpop", warm, app, o.warmup))
            data = self.tokens(url, rate, o.duration)
            report.windows.append(
                self.named(
                    self.window(plain, self.wrk_load(plain, "refresh", data, app, o.duration)),
                    "refresh",
                )
            )
            log("signing a proof for each bound family's token")
            data = self.bound_file(server, url, key, self.count(rate, o.duration))
            measured = self.window(
                bound, self.wrk_load(bound, "refresh_dpop", data, app, o.duration)
            )
            report.windows.append(self.named(measured, "refresh"))
        finally:
            server.stop()
        return report

    def count(self, rate: float, seconds: int) -> int:
        return max(math.ceil(rate * seconds * TOKEN_MARGIN), self.options.connections * 4)

    @staticmethod
    def named(window: Window, load: str) -> Window:
        return Window(window.topology, load, window.result, window.cost)


def main(options: Options) -> int:
    return run_and_report(options, DpopRun, "dpop")
