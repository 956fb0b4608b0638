"""The whole run, in order.

1. PostgreSQL (DATABASE_URL or embedded), a fresh database migrated, the
   clients and users created; copies of it for pgbench (and for --scale).
2. The ceilings: the minimal app under wrk, argon2 verifications, pgbench
   running ROTATE_SQL.
3. `rotor serve --workers N`; for each load, the tokens it needs are minted
   first, then wrk runs: /refresh, /introspect, /token client_credentials,
   /token password, then /refresh and /introspect again under a flood of
   password logins from a second wrk.
4. With --scale, another Rotor on the scale database: /refresh and /introspect
   with the store at 10,000 families, then at 1,000,000.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench import ceilings, chain, mint, procs, seed, wrk
from bench.database import Postgres, pgbench_binary
from bench.measure import CPUS, Measurement, measure
from bench.options import Options
from bench.report import Report, ScalePoint
from bench.servers import Server, start_minimal, start_rotor
from service.config import Settings

TOKEN_MARGIN = 1.2  # distinct refresh tokens per expected rotation
WARM_MARGIN = 1.5  # a warm-up's rate may fall short of the steady one
FLOOD_LEAD = 1  # seconds the flood runs before the measured load starts
SCALE_WARMUP = 1
# Families that /refresh rotates in a --scale load, per connection: the
# chains' queue never runs dry (one request in flight per connection), and
# each family is rotated a few times a second, not hundreds (dead index
# entries of one family's rotated tokens pile up until vacuum).
CHAINS_PER_CONNECTION = 32


STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[bench {time.monotonic() - STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def rotor_env(url: str) -> dict[str, str]:
    """The caller's environment (ROTOR_ARGON2_*, ROTOR_DB_POOL_SIZE, ... apply),
    the database, a fresh secret, and login limits the password flood never hits."""
    env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    env["DATABASE_URL"] = url
    env["ROTOR_SECRET"] = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    env["ROTOR_LOGIN_MAX_FAILURES"] = "1000000"
    return env


@dataclass
class Stores:
    main: str
    pgbench: str
    chain: str
    scale: str | None


class Run:
    def __init__(self, options: Options, pg: Postgres, work: Path) -> None:
        self.options = options
        self.pg = pg
        self.work = work
        self.db_pids = pg.pids()
        self.notes: list[str] = []
        log("creating and migrating the bench database")
        main = pg.create_migrated("rotor_bench")
        self.env = rotor_env(pg.url_of(main))
        # Durations and argon2 parameters: the bench signs nothing itself, and
        # each server it starts gets its own URL as ROTOR_ISSUER (bench/servers.py).
        self.settings = Settings.from_env(self.env, issuer_required=False)
        log(f"creating clients and {options.users} users")
        self.accounts = seed.create_accounts(self.env, options.users)
        self.stores = Stores(
            main,
            pg.create_database("rotor_bench_pgbench", template=main),
            # Clients and users only: the chain load's Rotor starts on a young store.
            pg.create_database("rotor_bench_chain", template=main),
            pg.create_database("rotor_bench_scale", template=main) if options.scale else None,
        )
        self.users_file = self.lines("users", self.accounts.usernames)

    # -- helpers ---------------------------------------------------------------

    def lines(self, name: str, items: list[str]) -> Path:
        path = self.work / f"{name}.txt"
        path.write_text("\n".join(items) + "\n")
        return path

    def load(
        self,
        server: Server,
        script: str,
        data: Path,
        authorization: str,
        *,
        duration: int | None = None,
        connections: int | None = None,
        threads: int | None = None,
        extra: str = "",
    ) -> wrk.Load:
        return wrk.Load(
            url=server.base_url,
            script=script,
            data=data,
            authorization=authorization,
            duration=duration or self.options.duration,
            connections=connections or self.options.connections,
            threads=threads or self.options.threads,
            extra=extra,
        )

    def warm(
        self, server: Server, load: wrk.Load, seconds: int | None = None
    ) -> wrk.WrkResult | None:
        """An unmeasured run first (connections, prepared statements, caches)."""
        seconds = self.options.warmup if seconds is None else seconds
        if seconds <= 0:
            return None
        warmed = wrk.run(replace(load, duration=seconds))
        self.settle(server)
        return warmed

    def measure(
        self, name: str, load: wrk.Load, server: Server, flood: wrk.Load | None = None
    ) -> Measurement:
        refused = self.pg.checkpoint()
        if refused and refused not in self.notes:
            self.notes.append(refused)
        log(f"measuring {name} ({load.duration} s)")
        measured = measure(name, load, server.pids(), self.db_pids, flood=flood, lead=FLOOD_LEAD)
        if measured.result.wrapped:
            self.notes.append(
                f"{name}: wrk ran out of distinct tokens ({measured.result.wrapped}x)"
            )
        self.settle(server)
        return measured

    def settle(self, server: Server) -> None:
        """Requests whose client has gone (wrk stopped) may still be queued for a
        hash: the next load starts when the server is idle again."""
        waited = procs.settle(server.pids())
        if waited > 2:
            log(f"the server was still busy for {waited:.0f} s after {server.name}'s load")

    def seed_tokens(self, url: str, count: int) -> list[str]:
        return asyncio.run(
            seed.seed_families(
                url, self.settings, self.accounts.app.client_id, self.accounts.user_ids, count
            )
        )

    # -- ceilings --------------------------------------------------------------

    def framework_ceiling(self) -> Measurement:
        log("framework ceiling: the minimal Litestar app")
        server = start_minimal(self.options.workers, self.work)
        try:
            data = self.lines("minimal", [secrets.token_urlsafe(32) for _ in range(1000)])
            load = self.load(server, "minimal", data, self.accounts.app.authorization)
            self.warm(server, load)
            return self.measure("framework", load, server)
        finally:
            server.stop()

    def hash_ceiling(self) -> ceilings.HashCeiling:
        threads = self.settings.hash_concurrency
        log(f"hash ceiling: argon2 verifications in {threads} threads")
        return ceilings.hash_ceiling(self.settings.argon2, threads, self.options.duration)

    def database_ceiling(self) -> ceilings.DatabaseCeiling:
        log("database ceiling: pgbench running ROTATE_SQL")
        script = self.work / "rotate.sql"
        script.write_text(
            ceilings.pgbench_script(self.accounts.app.client_id, self.settings.refresh_idle_ttl)
        )
        bench = ceilings.Pgbench(
            binary=pgbench_binary(),
            url=self.pg.url_of(self.stores.pgbench),
            script=script,
            clients=self.options.connections,
            threads=self.options.threads,
            database_pids=self.db_pids,
        )
        try:
            result = ceilings.database_ceiling(
                bench,
                user_ids=self.accounts.user_ids,
                client_id=self.accounts.app.client_id,
                warmup=max(1, self.options.warmup),
                seconds=self.options.duration,
            )
        finally:
            self.pg.drop_database(self.stores.pgbench)
        if result.misses:
            self.notes.append(f"pgbench: {result.misses} transactions found no live token")
        return result

    # -- Rotor -----------------------------------------------------------------

    def refresh(
        self, server: Server, url: str, name: str, expected_rps: float, **kw: wrk.Load
    ) -> Measurement:
        count = math.ceil(expected_rps * self.options.duration * TOKEN_MARGIN)
        count = max(count, self.options.connections * 4)
        log(f"{name}: minting {count:,} refresh tokens")
        data = self.lines(name, self.seed_tokens(url, count))
        load = self.load(server, "refresh", data, self.accounts.app.authorization)
        return self.measure(name, load, server, kw.get("flood"))

    def warm_refresh(self, server: Server, url: str, bound_rps: float) -> float:
        """A warm-up on its own tokens; its rate sizes the measured run's tokens."""
        if self.options.warmup <= 0:
            return bound_rps
        count = math.ceil(bound_rps * self.options.warmup * TOKEN_MARGIN)
        data = self.lines("warm-refresh", self.seed_tokens(url, count))
        warmed = self.warm(
            server, self.load(server, "refresh", data, self.accounts.app.authorization)
        )
        assert warmed is not None
        # Not bounded by the framework ceiling: measured while something else
        # held the machine (2,287/s against 7,729/s at the end of one run), it
        # sized too few tokens, and wrk wrapped (reuse: 1,803 errors).
        return max(bound_rps, warmed.response_rps * WARM_MARGIN)

    def seed_chains(self, url: str, count: int) -> list[str]:
        return asyncio.run(
            seed.seed_chains(
                url,
                self.settings,
                self.accounts.app.client_id,
                self.accounts.user_ids,
                count,
                self.options.chain_history,
                analyze=False,
            )
        )

    def refresh_chains(self, server: Server, url: str) -> Measurement:
        """/refresh along the chains of a few families per connection: each request
        presents the successor that an earlier answer returned (refresh_chain.lua),
        so each family is rotated many times a second, back to back, as the same
        client's requests would be. The warm-up rotates families of its own."""
        o = self.options
        count = o.connections * o.chain_families_per_connection
        log(f"refresh_chain: {count} families with {o.chain_history} spent generations each")
        app = self.accounts.app.authorization
        if o.warmup > 0:
            warm = self.lines("chain-warm", self.seed_chains(url, count))
            self.warm(server, self.load(server, "refresh_chain", warm, app))
        data = self.lines("refresh_chain", self.seed_chains(url, count))
        return self.measure("refresh_chain", self.load(server, "refresh_chain", data, app), server)

    def long_chain(self, server: Server, url: str) -> chain.LongChain:
        o = self.options
        log(
            f"long chain: one family rotated {o.long_chain:,} times by one client, then "
            f"{o.long_chain_sample:,} more in turn with a fresh family's first"
        )
        a, b = self.seed_tokens(url, 2)
        refused = self.pg.checkpoint()
        if refused and refused not in self.notes:
            self.notes.append(refused)
        found = chain.run(
            server.base_url,
            self.accounts.app.authorization,
            (a, b),
            build=o.long_chain,
            sample=o.long_chain_sample,
            server=server.pids(),
            database=self.db_pids,
        )
        found.table_after = asyncio.run(chain.table_state(url))
        self.settle(server)
        return found

    def introspect(
        self, server: Server, url: str, name: str, report: Report, flood: wrk.Load | None = None
    ) -> Measurement:
        total = self.options.introspect_tokens
        families = self.seed_tokens(url, mint.families_for_mix(total))
        mix = mint.introspection_mix(server.base_url, self.accounts, families, total)
        log(f"{name}: minted {len(mix.tokens):,} tokens ({mix.active_in_sample:.0%} active)")
        if mix.active_in_sample < 1.0:
            self.notes.append(f"{name}: only {mix.active_in_sample:.0%} of a sample was active")
        report.mixes[name] = mix
        data = self.lines(name, mix.tokens)
        load = self.load(server, "introspect", data, self.accounts.gateway.authorization)
        if flood is None:
            self.warm(server, load)
        return self.measure(name, load, server, flood)

    def token(self, server: Server, grant: str) -> Measurement:
        extra = self.accounts.password if grant == "password" else ""
        load = self.load(
            server, grant, self.users_file, self.accounts.app.authorization, extra=extra
        )
        if grant != "password":  # a login warm-up would only queue for the hash
            self.warm(server, load)
        return self.measure(grant, load, server)

    def flood(self, server: Server) -> wrk.Load:
        return self.load(
            server,
            "password",
            self.users_file,
            self.accounts.app.authorization,
            duration=self.options.duration + FLOOD_LEAD + 1,
            connections=self.options.flood_connections,
            threads=1,
            extra=self.accounts.password,
        )

    def rotor(self, report: Report) -> None:
        url = self.pg.url_of(self.stores.main)
        log(f"starting rotor serve --workers {self.options.workers}")
        server = start_rotor(self.env, self.options.workers, self.work)
        try:
            expected = self.warm_refresh(server, url, report.framework.result.rps)
            scenarios = report.scenarios
            scenarios["refresh"] = self.refresh(server, url, "refresh", expected)
            scenarios["introspect"] = self.introspect(server, url, "introspect", report)
            scenarios["client_credentials"] = self.token(server, "client_credentials")
            scenarios["password"] = self.token(server, "password")
            report.hash_after = self.hash_ceiling()  # the server idle again (settled)
            # Tokens for the flooded run: enough for the solo rate or the warm-up's
            # estimate, whichever is higher (a 1-s smoke run starts cold, so
            # its solo rate understates a warmed server and wrk would wrap).
            solo = scenarios["refresh"].result.response_rps
            scenarios["refresh_flood"] = self.refresh(
                server, url, "refresh_flood", max(solo, expected), flood=self.flood(server)
            )
            scenarios["introspect_flood"] = self.introspect(
                server, url, "introspect_flood", report, self.flood(server)
            )
        finally:
            server.stop()

    def chains(self, report: Report) -> None:
        """The chain load and the long chain, on a Rotor of their own started on
        a store that holds only the clients and users: its statements are first
        planned while the store is young, as when a deployment (or an independent
        benchmark) starts, and the families are written just before the load,
        with no ANALYZE after them."""
        url = self.pg.url_of(self.stores.chain)
        log("chains: starting a Rotor on a young store")
        server = start_rotor({**self.env, "DATABASE_URL": url}, self.options.workers, self.work)
        try:
            report.scenarios["refresh_chain"] = self.refresh_chains(server, url)
            report.long_chain = self.long_chain(server, url)
        finally:
            server.stop()

    # -- scale -----------------------------------------------------------------

    def scale(self, report: Report) -> None:
        """The same loads at two store sizes, for the same duration. The small
        store holds exactly `small_families` families: /refresh rotates a fixed
        set of them along their chains (refresh_chain.lua), so the number of
        families stays what it is for as long as the load lasts."""
        assert self.stores.scale is not None
        url = self.pg.url_of(self.stores.scale)
        options = self.options
        seconds = options.duration
        log(f"scale: starting a second Rotor; {seconds} s per load at each store size")
        server = start_rotor({**self.env, "DATABASE_URL": url}, options.workers, self.work)
        try:
            for target in (options.small_families, options.large_families):
                report.scale.append(self.scale_point(server, url, target, seconds))
        finally:
            server.stop()

    def scale_point(self, server: Server, url: str, target: int, seconds: int) -> ScalePoint:
        total = self.options.introspect_tokens
        chains = self.options.connections * CHAINS_PER_CONNECTION
        warm = chains if self.options.warmup > 0 else 0
        existing = asyncio.run(seed.family_count(url))
        fixed = mint.families_for_mix(total) + mint.PASSWORD_LOGINS + warm + chains
        filler = max(0, target - existing - fixed)
        log(f"scale: {target:,} families ({filler:,} filler, {chains:,} rotated by /refresh)")
        asyncio.run(
            seed.seed_filler(
                url, self.settings, self.accounts.app.client_id, self.accounts.user_ids, filler
            )
        )
        warm_tokens = self.seed_tokens(url, warm)
        load_tokens = self.seed_tokens(url, chains)
        families = self.seed_tokens(url, mint.families_for_mix(total))
        asyncio.run(seed.analyze(url))
        mix = mint.introspection_mix(server.base_url, self.accounts, families, total)
        app, gateway = self.accounts.app.authorization, self.accounts.gateway.authorization
        stored = asyncio.run(seed.family_count(url))
        introspect = self.load(
            server, "introspect", self.lines("scale-mix", mix.tokens), gateway, duration=seconds
        )
        chain = "refresh_chain"
        if warm:
            warming = self.load(server, chain, self.lines("scale-warm", warm_tokens), app)
            self.warm(server, warming, SCALE_WARMUP)
            self.warm(server, introspect, SCALE_WARMUP)
        refresh = self.load(
            server, chain, self.lines("scale-refresh", load_tokens), app, duration=seconds
        )
        return ScalePoint(
            stored,
            self.measure(f"refresh@{stored}", refresh, server),
            self.measure(f"introspect@{stored}", introspect, server),
        )

    # -- all -------------------------------------------------------------------

    def settings_summary(self) -> dict[str, object]:
        o, s = self.options, self.settings
        return {
            "workers": o.workers,
            "connections": o.connections,
            "wrk_threads": o.threads,
            "duration": o.duration,
            "warmup": o.warmup,
            "flood_connections": o.flood_connections,
            "cpus": CPUS,
            "smoke": o.smoke,
            "scale": o.scale,
            "database": "DATABASE_URL" if self.pg.embedded is None else "embedded (pgserver)",
            "hash_concurrency": s.hash_concurrency,
            "db_pool_size": s.db_pool_size,
            "argon2": {
                "time_cost": s.argon2.time_cost,
                "memory_kib": s.argon2.memory_kib,
                "parallelism": s.argon2.parallelism,
            },
            "signing_alg": s.signing_alg,
            "introspect_tokens": o.introspect_tokens,
            "chain_families": o.connections * o.chain_families_per_connection,
            "chain_history": o.chain_history,
            "long_chain": o.long_chain,
            "long_chain_sample": o.long_chain_sample,
            "users": o.users,
        }

    def execute(self) -> Report:
        framework = self.framework_ceiling()
        hashing = self.hash_ceiling()
        database = self.database_ceiling()
        report = Report(self.settings_summary(), framework, hashing, database)
        report.notes = self.notes
        self.rotor(report)
        self.chains(report)
        report.framework_after = self.framework_ceiling()
        if self.stores.scale is not None:
            self.scale(report)
        return report

    def drop(self) -> None:
        for name in (self.stores.main, self.stores.chain, self.stores.scale):
            if name is not None:
                self.pg.drop_database(name)


def execute(options: Options) -> Report:
    wrk.require_wrk()
    log("starting PostgreSQL" + (" (DATABASE_URL)" if os.environ.get("DATABASE_URL") else ""))
    pg = Postgres.start()
    work = Path(tempfile.mkdtemp(prefix="rotor-bench-"))
    run: Run | None = None
    try:
        run = Run(options, pg, work)
        return run.execute()
    finally:
        if run is not None:
            run.drop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
