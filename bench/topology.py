"""`python -m bench --topology`: what HAProxy and PgBouncer cost (issue 15).

/refresh (distinct families) and /introspect, the loads of the main bench at
the same connections, sent:

1. straight at one `rotor serve --workers N` on PostgreSQL: the baseline;
   then the same with ROTOR_DB_POOLER=transaction, which tells the cost of
   going without a statement cache from the cost of the two proxies;
2. one replica through PgBouncer alone, and through HAProxy alone;
3. through HAProxy to 1, 2 and 3 such replicas, all through PgBouncer in
   transaction mode (ROTOR_DB_POOLER=transaction), run with deploy/'s
   haproxy.cfg and pgbouncer.ini (tests/scaleout.py starts them).

Each figure is a ratio to the baseline measured in the same run, beside the
CPU per request of the replicas, of the two proxies and of PostgreSQL. On a
2-core machine more replicas cannot add throughput: the point is the cost of
the pooler and the balancer, and that no request fails.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import mint, procs, wrk
from bench.measure import CPUS, Cost, cost_of
from bench.options import Options
from bench.run import TOKEN_MARGIN, Run, log
from bench.servers import start_rotor
from tests import scaleout

REPLICAS = (1, 2, 3)


@dataclass(frozen=True, slots=True)
class Window:
    """One measured load against one topology."""

    topology: str
    load: str
    result: wrk.WrkResult
    cost: Cost

    def cpu_ms(self, group: str) -> float:
        return self.cost.per_request_ms(group, self.result.requests)


@dataclass
class Topology:
    """What a load is sent to, and whose CPU counts as what."""

    name: str
    base_url: str
    server: procs.PidSource
    proxies: procs.PidSource = field(default=lambda: [])

    def everything(self) -> list[int]:
        return [*self.server(), *self.proxies()]


TITLE = (
    "Rotor behind HAProxy and PgBouncer (transaction mode), against one replica straight\n"
    "at PostgreSQL in the same run; CPU per request in ms"
)


@dataclass
class TopologyReport:
    settings: dict[str, Any]
    windows: list[Window] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The windows every other one of the same load is a ratio to.
    baseline_topology: str = "direct"
    title: str = TITLE

    def baseline(self, load: str) -> Window:
        return next(
            w for w in self.windows if w.load == load and w.topology == self.baseline_topology
        )

    def ratio(self, window: Window) -> float:
        base = self.baseline(window.load).result.rps
        return window.result.rps / base if base else 0.0


def tree_of(processes: list[int]) -> procs.PidSource:
    sources = [procs.tree(pid) for pid in processes]
    return lambda: [pid for source in sources for pid in source()]


class TopologyRun(Run):
    """The main bench's set-up (database, accounts, seeding), other loads."""

    def __init__(self, options: Options, pg: Any, work: Path) -> None:
        super().__init__(options, pg, work)
        self.pg.drop_database(self.stores.pgbench)  # no database ceiling here
        # PgBouncer may run as another user (root is refused): a folder it can read.
        self.parts = Path(tempfile.mkdtemp(prefix="rotor-bench-topology-"))
        self.parts.chmod(0o755)

    def window(self, topology: Topology, load: wrk.Load) -> Window:
        refused = self.pg.checkpoint()
        if refused and refused not in self.notes:
            self.notes.append(refused)
        log(f"measuring {load.script} against {topology.name} ({load.duration} s)")
        sampler = procs.Sampler(
            {"server": topology.server, "proxies": topology.proxies, "database": self.db_pids}
        ).start()
        result = wrk.run(load)
        usage = sampler.stop()
        if result.wrapped:
            self.notes.append(f"{topology.name} {load.script}: wrk ran out of tokens")
        procs.settle(topology.everything)
        return Window(topology.name, load.script, result, cost_of(usage))

    def wrk_load(
        self, topology: Topology, script: str, data: Path, authorization: str, duration: int
    ) -> wrk.Load:
        return wrk.Load(
            url=topology.base_url,
            script=script,
            data=data,
            authorization=authorization,
            duration=duration,
            connections=self.options.connections,
            threads=self.options.threads,
        )

    def tokens(self, url: str, rps: float, seconds: int, name: str = "topology-refresh") -> Path:
        count = max(math.ceil(rps * seconds * TOKEN_MARGIN), self.options.connections * 4)
        return self.lines(name, self.seed_tokens(url, count))

    def loads(self, topology: Topology, url: str, refresh_rps: float) -> list[Window]:
        """/refresh on distinct families, then /introspect on the main bench's mix;
        each after an unmeasured warm-up on tokens of its own."""
        app, gateway = self.accounts.app.authorization, self.accounts.gateway.authorization
        o = self.options
        if o.warmup > 0:
            warm = self.tokens(url, refresh_rps, o.warmup)
            warmed = wrk.run(self.wrk_load(topology, "refresh", warm, app, o.warmup))
            refresh_rps = max(refresh_rps, warmed.response_rps * 1.5)
        data = self.tokens(url, refresh_rps, o.duration)
        windows = [self.window(topology, self.wrk_load(topology, "refresh", data, app, o.duration))]
        total = o.introspect_tokens
        families = self.seed_tokens(url, mint.families_for_mix(total))
        mix = mint.introspection_mix(topology.base_url, self.accounts, families, total)
        data = self.lines("topology-mix", mix.tokens)
        if o.warmup > 0:
            wrk.run(self.wrk_load(topology, "introspect", data, gateway, o.warmup))
        introspect = self.wrk_load(topology, "introspect", data, gateway, o.duration)
        windows.append(self.window(topology, introspect))
        return windows

    def direct(
        self, report: TopologyReport, url: str, pooler: str = "none", refresh_rps: float = 1000
    ) -> float:
        """One replica straight at PostgreSQL: the baseline, and the same with
        ROTOR_DB_POOLER=transaction (what the lost statement cache costs alone).
        Tokens for `refresh_rps`, or for 1.5 times the warm-up's rate if more."""
        name = "direct" if pooler == "none" else "direct, no stmt cache"
        log(f"{name}: one rotor serve --workers {self.options.workers} on PostgreSQL")
        env = {**self.env, "ROTOR_DB_POOLER": pooler}
        server = start_rotor(env, self.options.workers, self.work)
        try:
            topology = Topology(name, server.base_url, server.pids())
            report.windows += self.loads(topology, url, refresh_rps)
        finally:
            server.stop()
        return report.baseline("refresh").result.response_rps

    def cluster(
        self,
        report: TopologyReport,
        url: str,
        replicas: int,
        refresh_rps: float,
        *,
        balanced: bool = True,
        pooled: bool = True,
    ) -> None:
        """`replicas` replicas behind HAProxy (`balanced`; else one replica, asked
        directly), through PgBouncer (`pooled`; else straight at PostgreSQL)."""
        used = [name for name, on in (("haproxy", balanced), ("pgbouncer", pooled)) if on]
        name = f"{'+'.join(used)} x{replicas}"
        log(f"{name}: {replicas} replicas of {self.options.workers} workers")
        parts = asyncio.run(
            scaleout.start(
                url,
                urlsplit(url).path.lstrip("/"),
                self.parts / name.replace("+", "-").replace(" ", "-"),
                replicas=replicas,
                pooled=pooled,
                balanced=balanced,
                workers=self.options.workers,
                own_issuer=True,
                ROTOR_SECRET=self.env["ROTOR_SECRET"],
                ROTOR_LOGIN_MAX_FAILURES=self.env["ROTOR_LOGIN_MAX_FAILURES"],
            )
        )
        try:
            topology = Topology(
                name,
                parts.url,
                tree_of([r.process.pid for r in parts.replicas if r.process is not None]),
                tree_of(parts.proxy_pids()),
            )
            report.windows += self.loads(topology, url, refresh_rps)
        finally:
            parts.stop()

    def measure_all(self) -> TopologyReport:
        report = TopologyReport(
            {
                "workers_per_replica": self.options.workers,
                "connections": self.options.connections,
                "duration": self.options.duration,
                "cpus": CPUS,
                "introspect_tokens": self.options.introspect_tokens,
            }
        )
        report.notes = self.notes
        url = self.pg.url_of(self.stores.main)
        solo = self.direct(report, url)
        # Each configuration after the first may be faster than the baseline (the
        # baseline is the first load on a fresh store; a 2-s warm-up can
        # underestimate it): tokens for twice the solo rate. Sized by the warm-up
        # alone, the run of 2026-12-04 20:41 ran out of tokens without the
        # statement cache (383 spent tokens presented again).
        self.direct(report, url, pooler="transaction", refresh_rps=2 * solo)
        self.cluster(report, url, 1, 2 * solo, balanced=False)
        self.cluster(report, url, 1, 2 * solo, pooled=False)
        for replicas in REPLICAS:
            self.cluster(report, url, replicas, 2 * solo)
        return report

    def drop(self) -> None:
        super().drop()
        shutil.rmtree(self.parts, ignore_errors=True)


def render(report: TopologyReport) -> str:
    header = (
        f"{'load':<11} {'topology':<22} {'req/s':>8} {'÷ base':>8} {'p99 ms':>7} "
        f"{'errors':>6} {'rotor ms/req':>12} {'proxies':>8} {'postgres':>8}"
    )
    lines = [
        f"{report.title} ({CPUS} CPUs).",
        "",
        header,
        "-" * len(header),
    ]
    for w in report.windows:
        lines.append(
            f"{w.load:<11} {w.topology:<22} {w.result.rps:>8,.0f} {report.ratio(w):>8.3f} "
            f"{w.result.p99_ms:>7.1f} {w.result.errors:>6} {w.cpu_ms('server'):>12.3f} "
            f"{w.cpu_ms('proxies'):>8.3f} {w.cpu_ms('database'):>8.3f}"
        )
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


def to_json(report: TopologyReport) -> dict[str, Any]:
    return {
        "settings": report.settings,
        "baseline": report.baseline_topology,
        "windows": [
            {
                "topology": w.topology,
                "load": w.load,
                "rps": w.result.rps,
                "ratio_to_baseline": report.ratio(w),
                "p50_ms": w.result.p50_ms,
                "p99_ms": w.result.p99_ms,
                "errors": w.result.errors,
                "requests": w.result.requests,
                "cpu_ms_per_request": {
                    group: w.cpu_ms(group) for group in ("server", "proxies", "database")
                },
            }
            for w in report.windows
        ],
        "notes": report.notes,
    }


def run_and_report(options: Options, kind: type[TopologyRun], name: str) -> int:
    """Set up as the main bench does, run `kind`'s loads, print the table and
    write the JSON as `<name>-<stamp>.json`; with --strict, 1 on any error."""
    wrk.require_wrk()
    from bench.database import Postgres

    pg = Postgres.start()
    work = Path(tempfile.mkdtemp(prefix="rotor-bench-"))
    run: TopologyRun | None = None
    try:
        run = kind(options, pg, work)
        report = run.measure_all()
    finally:
        if run is not None:
            run.drop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(render(report), flush=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    options.results.mkdir(parents=True, exist_ok=True)
    path = options.results / f"{name}-{stamp}{'-smoke' if options.smoke else ''}.json"
    path.write_text(json.dumps(to_json(report), indent=2) + "\n")
    print(f"\nResults: {path}")
    errors = sum(w.result.errors for w in report.windows)
    return 1 if options.strict and errors else 0


def main(options: Options) -> int:
    missing = scaleout.missing()
    if missing:
        print(missing)
        return 2
    return run_and_report(options, TopologyRun, "topology")
