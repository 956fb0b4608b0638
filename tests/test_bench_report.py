"""The bench's report says when the hypervisor took CPU from the machine
(steal): latency percentiles include those pauses, whatever the server does;
and it compares the password load with the mean of two hash ceilings."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.ceilings import DatabaseCeiling, HashCeiling
from bench.measure import Cost, Measurement
from bench.procs import TICKS_PER_SECOND, MachineTime
from bench.report import Report, render, stolen, to_json
from bench.wrk import WrkResult

RESULT = WrkResult(
    requests=20_000,
    seconds=10.0,
    p50_ms=9.0,
    p90_ms=14.0,
    p99_ms=60.0,
    mean_ms=10.0,
    max_ms=120.0,
    non_2xx=0,
    socket_errors=0,
    wrapped=0,
)


def window(name: str, steal_seconds: float) -> Measurement:
    cost = Cost(
        wall_seconds=10.0,
        cpu_seconds={"generator": 2.0, "server": 12.0, "database": 3.0, "bench": 0.2},
        server_peak_rss_mb=250.0,
        steal_seconds=steal_seconds,
    )
    return Measurement(name, RESULT, cost)


def hash_ceiling(rate: float) -> HashCeiling:
    return HashCeiling(
        verifies_per_second=rate,
        verifies=round(rate * 10),
        seconds=10.0,
        threads=2,
        time_cost=3,
        memory_kib=65536,
        parallelism=4,
    )


def report(**steal: float) -> Report:
    database = DatabaseCeiling(
        tps=5000.0,
        transactions=50_000,
        rotated=50_000,
        latency_ms=6.0,
        seconds=10,
        clients=32,
        cpu_seconds={"database": 16.0},
        wall_seconds=10.0,
        steal_seconds=0.0,
    )
    hashing = hash_ceiling(9.0)
    settings = {"workers": 2, "connections": 32, "duration": 10}
    built = Report(settings, window("framework", steal.get("framework", 0.0)), hashing, database)
    for name in ("refresh", "introspect"):
        built.scenarios[name] = window(name, steal.get(name, 0.0))
    return built


def test_steal_over_50_ms_in_a_window_is_noted_with_the_window_and_its_amount() -> None:
    found = report(refresh=0.16, introspect=0.049, framework=0.05)
    (note,) = stolen(found)
    assert "refresh 160 ms" in note
    assert "framework 50 ms" in note
    assert "introspect" not in note  # 49 ms: under the threshold
    assert "Note: the hypervisor took CPU time" in render(found)
    document = to_json(found)
    assert document["scenarios"]["refresh"]["steal_ms"] == pytest.approx(160.0)
    assert any(note.startswith("the hypervisor") for note in document["notes"])


def test_no_steal_no_note() -> None:
    quiet = report()
    assert stolen(quiet) == []
    assert "hypervisor" not in render(quiet)


def test_machine_time_counts_steal_apart_from_busy() -> None:
    """proc(5): user nice system idle iowait irq softirq steal guest guest_nice;
    busy is user + nice + system + irq + softirq (guest time is inside user)."""
    line = "cpu  277427 61432 111491 393276 5524 0 15179 18790 0 0"
    parsed = MachineTime.parse(line)
    ticks = TICKS_PER_SECOND
    assert parsed == MachineTime((277427 + 61432 + 111491 + 15179) / ticks, 18790 / ticks)
    later = MachineTime.parse("cpu  277527 61432 111491 393276 5524 0 15179 18806 0 0")
    difference = later - parsed
    assert difference.busy_seconds == pytest.approx(100 / ticks)
    assert difference.steal_seconds == pytest.approx(16 / ticks)


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux /proc")
def test_machine_time_reads_this_machine() -> None:
    assert MachineTime.now().busy_seconds > 0


def test_the_password_load_is_compared_with_the_mean_of_both_hash_ceilings() -> None:
    found = report()
    found.scenarios["password"] = window("password", 0.0)  # RESULT: 2,000 answers/s
    assert to_json(found)["ratios"]["password"]["hash"] == pytest.approx(2000.0 / 9.0)
    found.hash_after = hash_ceiling(7.0)  # the machine slowed down during the run
    document = to_json(found)
    assert document["ratios"]["password"]["hash"] == pytest.approx(2000.0 / 8.0)
    assert document["ceilings"]["hash_rate_used"] == pytest.approx(8.0)
    assert document["ceilings"]["hash_after"]["verifies_per_second"] == 7.0
    assert "  again after the logins" in render(found)
