"""Ratios to the ceilings, the targets with PASS/FAIL, the table on stdout and
the JSON document written to bench/results/<timestamp>.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.ceilings import DatabaseCeiling, HashCeiling
from bench.chain import BLOCK, LongChain
from bench.measure import CPUS, Measurement
from bench.mint import Mix

# The targets (issue 16), on a 2-core machine at 32 connections; each a ratio
# within one run, or a latency.
P99_LIMIT_MS = 25.0
P99_LOADS = ("refresh", "introspect")
FLOOD_KEEPS = 0.7
SCALE_LIMIT = 1.2
LONG_CHAIN_LIMIT = 1.5
# load: (ceiling, minimum)
MIN_RATIO = {
    "refresh": ("framework", 0.45),
    "refresh_chain": ("framework", 0.35),
    "introspect": ("framework", 0.75),
    "client_credentials": ("framework", 0.5),
    "password": ("hash", 0.9),
}
GROUPS = ("generator", "server", "database", "bench", "other")
BUSY_NEIGHBOUR = 0.15
# Steal worth a note: one pause this long on one virtual CPU holds every
# request on it, about 1 % of a 10-s window's requests at 32 connections,
# which is what p99 looks at.
STEAL_NOTE_SECONDS = 0.05
LABELS = {
    "refresh": "/refresh",
    "refresh_chain": "/refresh, chains",
    "introspect": "/introspect",
    "client_credentials": "/token client_credentials",
    "password": "/token password",
    "refresh_flood": "/refresh + login flood",
    "introspect_flood": "/introspect + login flood",
}


@dataclass(frozen=True, slots=True)
class ScalePoint:
    families: int
    refresh: Measurement
    introspect: Measurement


@dataclass
class Report:
    settings: dict[str, Any]
    framework: Measurement
    hash: HashCeiling
    database: DatabaseCeiling
    scenarios: dict[str, Measurement] = field(default_factory=dict)
    mixes: dict[str, Mix] = field(default_factory=dict)
    scale: list[ScalePoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The framework ceiling again after Rotor's loads: these machines change
    # speed within minutes, and the ratios use the mean of the two.
    framework_after: Measurement | None = None
    # The hash ceiling again right after the password load, for the same reason:
    # measured only at the start, a machine that slows down during the run made
    # the password ratio look worse than it was (0.83 against 1.0 or so).
    hash_after: HashCeiling | None = None
    long_chain: LongChain | None = None

    @property
    def framework_rps(self) -> float:
        measured = [self.framework, *([self.framework_after] if self.framework_after else [])]
        return sum(m.result.rps for m in measured) / len(measured)

    @property
    def hash_rate(self) -> float:
        measured = [self.hash, *([self.hash_after] if self.hash_after else [])]
        return sum(h.verifies_per_second for h in measured) / len(measured)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    value: float
    limit: float
    passed: bool
    unit: str = ""

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return f"  {verdict}  {self.name}: {self.value:.3g}{self.unit} (target {self.limit:g})"


def ratio(value: float, ceiling: float) -> float:
    return value / ceiling if ceiling else 0.0


def ratios(report: Report) -> dict[str, dict[str, float]]:
    """Every Rotor throughput as a fraction of its ceilings."""
    framework = report.framework_rps
    found: dict[str, dict[str, float]] = {}
    for key, measured in report.scenarios.items():
        found[key] = {"framework": ratio(measured.result.rps, framework)}
        if key.startswith("refresh"):
            found[key]["database"] = ratio(measured.result.rps, report.database.tps)
        if key == "password":
            found[key]["hash"] = ratio(measured.result.rps, report.hash_rate)
        solo = report.scenarios.get(key.removesuffix("_flood"))
        if key.endswith("_flood") and solo is not None:
            found[key]["solo"] = ratio(measured.result.rps, solo.result.rps)
    return found


def targets(report: Report) -> list[Target]:
    found = ratios(report)
    checks: list[Target] = []
    for key, (ceiling, minimum) in MIN_RATIO.items():
        if key in found:
            value = found[key][ceiling]
            checks.append(
                Target(f"{LABELS[key]} / {ceiling} ceiling", value, minimum, value >= minimum)
            )
    # The flood's own answers are not counted: it is the overload, by design.
    loads = [*report.scenarios.values()]
    loads += [m for point in report.scale for m in (point.refresh, point.introspect)]
    errors = sum(m.result.errors for m in loads)
    errors += report.long_chain.errors if report.long_chain else 0
    checks.append(Target("errors (non-2xx + socket), Rotor loads", errors, 0, errors == 0))
    for key in P99_LOADS:
        if key in report.scenarios:
            p99 = report.scenarios[key].result.p99_ms
            checks.append(
                Target(f"{LABELS[key]} p99", p99, P99_LIMIT_MS, p99 < P99_LIMIT_MS, " ms")
            )
    for key in ("refresh_flood", "introspect_flood"):
        if key in found:
            value = found[key]["solo"]
            checks.append(Target(f"{LABELS[key]} / solo", value, FLOOD_KEEPS, value >= FLOOD_KEEPS))
    if report.long_chain is not None:
        chained = report.long_chain
        name = (
            f"long chain: p50 after {chained.build:,} rotations / a new family's first "
            f"{chained.sample:,}"
        )
        checks.append(
            Target(name, chained.ratio, LONG_CHAIN_LIMIT, 0 < chained.ratio <= LONG_CHAIN_LIMIT)
        )
    checks.extend(scale_targets(report))
    return checks


def failed(report: Report) -> list[Target]:
    """The targets this run missed (`--strict` exits 1 when there is one)."""
    return [target for target in targets(report) if not target.passed]


def scale_targets(report: Report) -> list[Target]:
    if len(report.scale) < 2:
        return []
    small, large = report.scale[0], report.scale[-1]
    checks = []
    for key in ("refresh", "introspect"):
        before = getattr(small, key).result.p50_ms
        after = getattr(large, key).result.p50_ms
        value = ratio(after, before)
        name = f"/{key} p50 at {large.families:,} / at {small.families:,} families"
        checks.append(Target(name, value, SCALE_LIMIT, value <= SCALE_LIMIT))
    return checks


def _cpu(measured: Measurement) -> str:
    cost = measured.cost
    return "/".join(f"{cost.share(group) * 100:.0f}" for group in GROUPS)


def _row(label: str, measured: Measurement, versus: str) -> str:
    r = measured.result
    return (
        f"{label:<28}{r.rps:>9.1f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{r.errors:>8}"
        f"{measured.cost.server_peak_rss_mb:>9.0f}"
        f"{measured.cost.per_request_ms('server', r.requests):>9.2f}"
        f"{measured.cost.per_request_ms('database', r.requests):>8.2f}"
        f"  {_cpu(measured):<16}{versus}"
    )


HEADER = (
    f"{'':<28}{'ok/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'RSS MB':>9}{'srv ms':>9}"
    f"{'db ms':>8}"
    f"  {'CPU% g/s/d/b/o':<16}vs ceiling"
)


def _versus(found: dict[str, float]) -> str:
    return ", ".join(f"{value:.3f} x {name}" for name, value in found.items())


def render(report: Report) -> str:
    s = report.settings
    db = report.database
    h = report.hash
    lines = [
        f"Rotor bench: {s['workers']} uvicorn workers, {s['connections']} connections, "
        f"{s['duration']} s per load, {CPUS} CPUs. CPU% = share of all {CPUS} cores "
        "used by generator (wrk) / server (rotor) / database (postgres) / bench (this "
        "process) / other (the rest of the machine); ok/s = 2xx answers per second; "
        "srv ms / db ms = server (rotor) / database (postgres) CPU ms per request.",
        "",
        HEADER,
        _row("framework ceiling (minimal)", report.framework, "-"),
        *(
            [_row("  again after Rotor's loads", report.framework_after, "mean of the two")]
            if report.framework_after
            else []
        ),
        f"{'database ceiling (pgbench)':<28}{db.tps:>9.1f}{'':>9}{'':>9}{0:>8}{'':>18}  "
        f"{_pg_cpu(db):<16}ROTATE_SQL, {db.clients} clients, avg {db.latency_ms:.2f} ms"
        + (f", {db.misses} missed" if db.misses else ""),
        f"{'hash ceiling (argon2)':<28}{h.verifies_per_second:>9.1f}{'':>60}"
        f"t={h.time_cost} m={h.memory_kib} p={h.parallelism}, {h.threads} threads",
        *(
            [
                f"{'  again after the logins':<28}{report.hash_after.verifies_per_second:>9.1f}"
                f"{'':>60}mean of the two"
            ]
            if report.hash_after
            else []
        ),
        "",
    ]
    found = ratios(report)
    ordered = [key for key in LABELS if key in report.scenarios]
    ordered += [key for key in report.scenarios if key not in LABELS]
    for key in ordered:
        measured = report.scenarios[key]
        lines.append(_row(LABELS.get(key, key), measured, _versus(found[key])))
        if measured.flood is not None:
            f = measured.flood
            lines.append(
                f"{'  (the flood: /token password)':<28}{f.rps:>9.1f}{f.p50_ms:>9.2f}"
                f"{f.p99_ms:>9.2f}{f.errors:>8}"
            )
    lines.extend(_long_chain_lines(report))
    lines.extend(_scale_lines(report))
    lines += ["", "Targets:"] + [target.line() for target in targets(report)]
    lines += [f"Note: {note}" for note in report.notes + neighbours(report) + stolen(report)]
    return "\n".join(lines)


def _windows(report: Report) -> list[Measurement]:
    windows = [report.framework, *report.scenarios.values()]
    windows += [report.framework_after] if report.framework_after else []
    return windows + [m for point in report.scale for m in (point.refresh, point.introspect)]


def stolen(report: Report) -> list[str]:
    """Windows in which the hypervisor took CPU from this virtual machine."""
    found = [
        f"{m.name} {m.cost.steal_seconds * 1000:.0f} ms"
        for m in _windows(report)
        if m.cost.steal_seconds >= STEAL_NOTE_SECONDS
    ]
    if not found:
        return []
    return [
        "the hypervisor took CPU time from this machine (steal, all cores) during: "
        + ", ".join(found)
        + ". Requests on a virtual CPU that is paused wait for it: such pauses show in "
        "p99 (the framework ceiling's too), whatever the server does."
    ]


def neighbours(report: Report) -> list[str]:
    """Windows where other processes used a noticeable part of the machine."""
    busy = [
        f"{m.name} {m.cost.share('other'):.0%}"
        for m in _windows(report)
        if m.cost.share("other") > BUSY_NEIGHBOUR
    ]
    if not busy:
        return []
    return [
        "other processes used a part of the machine during: "
        + ", ".join(busy)
        + " (share of all cores); those figures understate what this machine can do."
    ]


def _pg_cpu(db: DatabaseCeiling) -> str:
    capacity = db.wall_seconds * CPUS
    shares = [db.cpu_seconds.get(group, 0.0) for group in GROUPS]
    return "/".join(f"{value / capacity * 100:.0f}" for value in shares)


def _long_chain_lines(report: Report) -> list[str]:
    chained = report.long_chain
    if chained is None:
        return []
    curve = ", ".join(f"{p50:.2f}" for p50 in chained.build_p50_ms)
    cpu = chained.build_cpu_ms
    table = chained.table_after
    return [
        "",
        f"Long chain (one client, one connection, one request at a time): p50 "
        f"{chained.p50_after_ms:.2f} ms for rotations {chained.build + 1:,} to "
        f"{chained.build + chained.sample:,} of one family against {chained.p50_first_ms:.2f} ms "
        f"for a new family's first {chained.sample:,}, in turn: {chained.ratio:.2f} x "
        f"(p90 {chained.p90_after_ms:.2f} / {chained.p90_first_ms:.2f} ms).",
        f"  the first {chained.build:,} rotations in {chained.build_seconds:.1f} s, p50 per "
        f"block of {BLOCK:,}: {curve} ms; CPU per rotation: server "
        f"{cpu.get('server', 0.0):.2f} ms, database {cpu.get('database', 0.0):.2f} ms",
        f"  refresh_tokens afterwards: {table.get('n_dead_tup', 0):,} dead tuples, "
        f"{table.get('n_tup_hot_upd', 0):,} of {table.get('n_tup_upd', 0):,} updates HOT, "
        f"{table.get('autovacuum_count', 0)} autovacuums so far",
    ]


def _scale_lines(report: Report) -> list[str]:
    if not report.scale:
        return []
    lines = ["", "Scale (same server settings, store size in families):"]
    for point in report.scale:
        lines.append(_row(f"/refresh @ {point.families:,}", point.refresh, ""))
        lines.append(_row(f"/introspect @ {point.families:,}", point.introspect, ""))
    return lines


def _measurement(measured: Measurement) -> dict[str, Any]:
    document = asdict(measured)
    document["ok_per_second"] = measured.result.rps
    document["responses_per_second"] = measured.result.response_rps
    document["errors"] = measured.result.errors
    document["cpu_share"] = {group: measured.cost.share(group) for group in GROUPS}
    document["cpu_ms_per_request"] = {
        group: measured.cost.per_request_ms(group, measured.result.requests) for group in GROUPS
    }
    document["steal_ms"] = measured.cost.steal_seconds * 1000
    return document


def to_json(report: Report) -> dict[str, Any]:
    return {
        "settings": report.settings,
        "ceilings": {
            "framework": _measurement(report.framework),
            "framework_after": (
                _measurement(report.framework_after) if report.framework_after else None
            ),
            "framework_rps_used": report.framework_rps,
            "database": {**asdict(report.database), "misses": report.database.misses},
            "hash": asdict(report.hash),
            "hash_after": asdict(report.hash_after) if report.hash_after else None,
            "hash_rate_used": report.hash_rate,
        },
        "scenarios": {key: _measurement(value) for key, value in report.scenarios.items()},
        "ratios": ratios(report),
        "introspection_mixes": {
            key: {k: v for k, v in asdict(mix).items() if k != "tokens"}
            | {"distinct": len(mix.tokens)}
            for key, mix in report.mixes.items()
        },
        "scale": [
            {
                "families": point.families,
                "refresh": _measurement(point.refresh),
                "introspect": _measurement(point.introspect),
            }
            for point in report.scale
        ],
        "long_chain": (
            asdict(report.long_chain) | {"ratio": report.long_chain.ratio}
            if report.long_chain
            else None
        ),
        "targets": [asdict(target) for target in targets(report)],
        "notes": report.notes + neighbours(report) + stolen(report),
    }


def write(report: Report, folder: Path, stamp: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stamp}.json"
    path.write_text(json.dumps(to_json(report), indent=2, default=str) + "\n")
    return path
