"""The report of `python -m bench --peer dot`: Rotor ÷ DOT per load from
synthetic windows, the table's rows, the JSON, and the generated project's
database settings (report logic only: no server, no network, no timing)."""

from __future__ import annotations

from dataclasses import replace

from bench import peer
from bench.measure import Cost
from bench.peer import PeerReport, django_database, render, rows, to_json
from bench.topology import Window
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


def window(server: str, load: str, requests: int, server_cpu: float, **kw: int) -> Window:
    cost = Cost(
        wall_seconds=10.0,
        cpu_seconds={"server": server_cpu, "database": 2.0, "generator": 1.0},
        server_peak_rss_mb=0.0,
        steal_seconds=0.0,
    )
    return Window(server, load, replace(RESULT, requests=requests, **kw), cost)


def report() -> PeerReport:
    return PeerReport(
        {"cpus": 2},
        [
            window("rotor", "refresh", 20_000, 12.0),
            window("dot", "refresh", 1_000, 15.0, p99_ms=800.0),
            window("rotor", "introspect", 40_000, 14.0),
            window("dot", "introspect", 2_000, 16.0),
        ],
    )


def table_row(found: PeerReport, load: str) -> list[str]:
    return next(line.split() for line in render(found).splitlines() if line.startswith(load))


def test_each_load_is_rotors_rate_over_dots_in_the_same_run() -> None:
    found = report()
    assert found.ratio("refresh") == 20.0
    assert found.ratio("introspect") == 20.0
    assert found.loads() == ["refresh", "introspect"]


def test_the_rows_put_both_servers_side_by_side() -> None:
    refresh, introspect = rows(report())
    assert refresh["load"] == "refresh"
    assert refresh["rotor"]["rps"] == 2_000.0
    assert refresh["dot"]["rps"] == 100.0
    assert refresh["dot"]["p99_ms"] == 800.0
    assert refresh["rotor"]["server_ms"] == 0.6
    assert refresh["dot"]["server_ms"] == 15.0
    assert refresh["dot"]["database_ms"] == 2.0
    assert introspect["rotor"]["server_ms"] == 0.35


def test_the_ratio_counts_2xx_only_and_errors_are_shown_for_each() -> None:
    found = report()
    found.windows[1] = window("dot", "refresh", 1_000, 15.0, non_2xx=500)
    assert found.ratio("refresh") == 40.0
    assert found.errors() == 500
    expected = ["refresh", "2,000", "50", "40.00", "24.29", "20.0", "20.0", "0", "500"]
    assert table_row(found, "refresh")[:9] == expected


def test_the_table_has_a_row_per_load_and_the_notes() -> None:
    found = report()
    found.notes.append("dot refresh: wrk ran out of distinct tokens (1x)")
    lines = render(found).splitlines()
    assert any(line.startswith("load") and "÷ DOT" in line for line in lines)
    assert table_row(found, "refresh")[:4] == ["refresh", "2,000", "100", "20.00"]
    assert table_row(found, "introspect")[:4] == ["introspect", "4,000", "200", "20.00"]
    assert lines[-1] == "note: dot refresh: wrk ran out of distinct tokens (1x)"


def test_the_cpu_ratio_is_dots_server_and_database_cpu_per_answer_over_rotors() -> None:
    found = report()
    # refresh: Rotor (12 + 2) s over 20,000 answers = 0.7 ms, DOT (15 + 2) s over 1,000 = 17 ms;
    # introspect: 0.4 ms and 9 ms.
    assert round(found.cpu_ratio("refresh") or 0, 4) == round(17 / 0.7, 4)
    assert table_row(found, "refresh")[4] == "24.29"
    assert [round(row["cpu_ratio"], 2) for row in rows(found)] == [24.29, 22.5]


def test_a_busy_machine_is_noted() -> None:
    found = report()
    assert found.busy() is None
    other = found.windows[1].cost
    busy = replace(other, cpu_seconds={**other.cpu_seconds, "other": 14.0})  # 70% of 2 x 10 s
    found.windows[1] = replace(found.windows[1], cost=busy)
    assert render(found).splitlines()[-1] == (
        "note: other processes took 0% to 70% of the CPU in the windows: "
        "rates understate both servers; the CPU ratio holds better"
    )
    assert to_json(found)["busy"] == found.busy()


def test_a_load_measured_on_one_side_only_has_no_ratio() -> None:
    found = report()
    found.windows = found.windows[:3]
    assert found.ratio("introspect") is None
    assert rows(found)[1]["dot"] is None
    assert table_row(found, "introspect")[:5] == ["introspect", "4,000", "-", "-", "-"]


def test_the_json_has_the_rows_the_windows_and_the_settings() -> None:
    found = to_json(report())
    assert found["peer"] == "dot"
    assert [row["ratio"] for row in found["rows"]] == [20.0, 20.0]
    assert [(w["server"], w["load"]) for w in found["windows"]] == [
        ("rotor", "refresh"),
        ("dot", "refresh"),
        ("rotor", "introspect"),
        ("dot", "introspect"),
    ]
    assert found["windows"][1]["cpu_ms_per_request"]["server"] == 15.0


def test_django_connects_by_host_and_port_or_by_socket_folder() -> None:
    tcp = django_database("postgresql://postgres@127.0.0.1:5432/rotor_bench_dot_1")
    assert (tcp["HOST"], tcp["PORT"], tcp["NAME"], tcp["USER"]) == (
        "127.0.0.1",
        "5432",
        "rotor_bench_dot_1",
        "postgres",
    )
    assert tcp["CONN_MAX_AGE"] > 0  # persistent connections
    socket = django_database("postgresql://postgres:@/rotor_bench_dot_2?host=/run/pg%20x")
    assert (socket["HOST"], socket["PORT"], socket["NAME"]) == (
        "/run/pg x",
        "",
        "rotor_bench_dot_2",
    )


def test_dot_is_configured_with_rotation_reuse_protection_and_sync_workers() -> None:
    settings = peer.settings_py(django_database("postgresql://u:p@h:1/d"), "k")
    assert "DEBUG = False" in settings
    assert "'ROTATE_REFRESH_TOKEN': True" in settings
    assert "'REFRESH_TOKEN_REUSE_PROTECTION': True" in settings
    assert "'ACCESS_TOKEN_EXPIRE_SECONDS': 300" in settings
    assert "hash_client_secret=False" in peer.SEED_PY
    assert peer.gunicorn_workers(2) == 5


def test_http_basic_is_form_encoded_then_base64() -> None:
    # "a+b:s%3At": DOT unquotes each half after splitting at the first colon.
    assert peer.basic("a b", "s:t") == "Basic YStiOnMlM0F0"
