"""The report of `python -m bench --topology`: ratios to the direct baseline of
the same load, CPU per request by group, errors; and --strict's exit."""

from __future__ import annotations

from dataclasses import replace

from bench.measure import Cost
from bench.topology import TopologyReport, Window, render, to_json
from bench.wrk import WrkResult

RESULT = WrkResult(
    requests=10_000,
    seconds=10.0,
    p50_ms=9.0,
    p90_ms=14.0,
    p99_ms=20.0,
    mean_ms=10.0,
    max_ms=40.0,
    non_2xx=0,
    socket_errors=0,
    wrapped=0,
)


def window(topology: str, load: str, requests: int, server_cpu: float) -> Window:
    cost = Cost(
        wall_seconds=10.0,
        cpu_seconds={"server": server_cpu, "proxies": 1.0, "database": 2.0},
        server_peak_rss_mb=0.0,
        steal_seconds=0.0,
    )
    return Window(topology, load, replace(RESULT, requests=requests), cost)


def report() -> TopologyReport:
    return TopologyReport(
        {"cpus": 2},
        [
            window("direct", "refresh", 10_000, 8.0),
            window("direct", "introspect", 20_000, 8.0),
            window("haproxy+pgbouncer x1", "refresh", 5_000, 6.0),
            window("haproxy+pgbouncer x1", "introspect", 15_000, 9.0),
        ],
    )


def test_each_window_is_a_ratio_to_the_direct_window_of_its_own_load() -> None:
    found = to_json(report())["windows"]
    assert [(w["topology"], w["load"], w["ratio_to_baseline"]) for w in found] == [
        ("direct", "refresh", 1.0),
        ("direct", "introspect", 1.0),
        ("haproxy+pgbouncer x1", "refresh", 0.5),
        ("haproxy+pgbouncer x1", "introspect", 0.75),
    ]
    assert found[2]["cpu_ms_per_request"] == {"server": 1.2, "proxies": 0.2, "database": 0.4}


def test_the_table_has_a_row_a_window_with_its_ratio_and_errors() -> None:
    rows = render(report()).splitlines()
    row = next(line for line in rows if line.startswith("refresh     haproxy+pgbouncer x1"))
    assert row.split() == [
        "refresh", "haproxy+pgbouncer", "x1", "500", "0.500", "20.0", "0", "1.200", "0.200", "0.400"
    ]  # fmt: skip
