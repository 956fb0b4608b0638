"""The bench's report says when the hypervisor took CPU from the machine
(steal): latency percentiles include those pauses, whatever the server does;
it compares the password load with the mean of two hash ceilings; it checks
issue 16's targets (the chain load and the long chain among them), and
`--strict` exits 1 when one fails. Report logic only: no timings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bench import cli
from bench.ceilings import DatabaseCeiling, HashCeiling
from bench.chain import LongChain
from bench.measure import Cost, Measurement
from bench.procs import TICKS_PER_SECOND, MachineTime
from bench.report import Report, ScalePoint, Target, failed, render, stolen, targets, to_json
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


# --- issue 16: the targets, the chain load, the long chain, --strict ----------------


def scenario(name: str, ok_per_second: float, p99_ms: float = 10.0, errors: int = 0) -> Measurement:
    requests = round(ok_per_second * 10) + errors
    result = replace(RESULT, requests=requests, p99_ms=p99_ms, non_2xx=errors)
    cost = Cost(
        wall_seconds=10.0,
        cpu_seconds={"server": 8.0, "database": 2.0},
        server_peak_rss_mb=250.0,
        steal_seconds=0.0,
    )
    return Measurement(name, result, cost)


def passing() -> Report:
    """Every target met: framework 2,000 ok/s (RESULT), hash 9.0/s."""
    built = report()
    built.scenarios = {
        "refresh": scenario("refresh", 1000.0),  # 0.5 x framework
        "refresh_chain": scenario("refresh_chain", 800.0),  # 0.4
        "introspect": scenario("introspect", 1600.0),  # 0.8
        "client_credentials": scenario("client_credentials", 1100.0),  # 0.55
        "password": scenario("password", 8.5),  # 0.94 x hash
        "refresh_flood": scenario("refresh_flood", 750.0),  # 0.75 x solo
        "introspect_flood": scenario("introspect_flood", 1200.0),  # 0.75 x solo
    }
    built.long_chain = LongChain(
        build=10_000,
        sample=1_000,
        p50_first_ms=1.6,
        p50_after_ms=1.8,
        p90_first_ms=2.0,
        p90_after_ms=2.2,
        build_p50_ms=[1.6] * 10,
        errors=0,
    )
    return built


def by_name(found: Report) -> dict[str, Target]:
    return {target.name: target for target in targets(found)}


def test_every_target_of_issue_16_is_checked_and_met() -> None:
    found = by_name(passing())
    assert all(target.passed for target in found.values()), [
        t.line() for t in found.values() if not t.passed
    ]
    limits = {name: target.limit for name, target in found.items()}
    assert limits["/refresh / framework ceiling"] == 0.45
    assert limits["/refresh, chains / framework ceiling"] == 0.35
    assert limits["/introspect / framework ceiling"] == 0.75
    assert limits["/token client_credentials / framework ceiling"] == 0.5
    assert limits["/token password / hash ceiling"] == 0.9
    assert limits["/refresh p99"] == limits["/introspect p99"] == 25.0
    assert limits["/refresh + login flood / solo"] == 0.7
    assert limits["/introspect + login flood / solo"] == 0.7
    (chain,) = [t for name, t in found.items() if name.startswith("long chain")]
    assert chain.limit == 1.5
    assert chain.value == pytest.approx(1.8 / 1.6)
    assert failed(passing()) == []


@pytest.mark.parametrize(
    ("key", "ok_per_second", "missed"),
    [
        ("refresh", 880.0, "/refresh / framework ceiling"),  # 0.44
        ("refresh_chain", 680.0, "/refresh, chains / framework ceiling"),  # 0.34
        ("introspect", 1490.0, "/introspect / framework ceiling"),  # 0.745
        ("client_credentials", 990.0, "/token client_credentials / framework ceiling"),
        ("password", 8.0, "/token password / hash ceiling"),  # 0.89
        ("refresh_flood", 690.0, "/refresh + login flood / solo"),  # 0.69 x solo
    ],
)
def test_a_ratio_under_its_target_fails_and_only_that_one(
    key: str, ok_per_second: float, missed: str
) -> None:
    found = passing()
    found.scenarios[key] = scenario(key, ok_per_second)
    assert [target.name for target in failed(found)] == [missed]
    assert f"  FAIL  {missed}" in render(found)


def test_p99_at_25_ms_fails_errors_fail_and_the_long_chain_counts() -> None:
    found = passing()
    found.scenarios["introspect"] = scenario("introspect", 1600.0, p99_ms=25.0)
    assert [t.name for t in failed(found)] == ["/introspect p99"]
    found = passing()
    found.scenarios["refresh_chain"] = scenario("refresh_chain", 800.0, errors=1)
    assert [t.name for t in failed(found)] == ["errors (non-2xx + socket), Rotor loads"]
    found = passing()
    assert found.long_chain is not None
    found.long_chain = replace(found.long_chain, p50_after_ms=2.5, errors=1)  # 1.56 x
    names = [t.name for t in failed(found)]
    assert names[0] == "errors (non-2xx + socket), Rotor loads"
    assert names[1].startswith("long chain: p50 after 10,000 rotations")


def test_scale_p50_over_1_2_fails() -> None:
    found = passing()
    small, large = scenario("refresh@10000", 1000.0), scenario("refresh@1000000", 1000.0)
    slow = replace(large, result=replace(large.result, p50_ms=RESULT.p50_ms * 1.25))
    found.scale = [ScalePoint(10_000, small, small), ScalePoint(1_000_000, slow, large)]
    assert [t.name for t in failed(found)] == ["/refresh p50 at 1,000,000 / at 10,000 families"]


def test_the_chain_load_is_reported_beside_the_distinct_one_with_database_cpu() -> None:
    found = passing()
    text = render(found)
    lines = text.splitlines()
    rows = [line for line in lines if line.startswith("/refresh")]
    assert rows[0].startswith("/refresh   ")
    assert rows[1].startswith("/refresh, chains")
    assert "db ms" in text
    # 2.0 database CPU seconds over 8,000 answers: 0.25 ms each
    assert "    0.25  " in rows[1]
    assert "Long chain" in text
    assert "1.12 x" in text
    document = to_json(found)
    assert document["long_chain"]["ratio"] == pytest.approx(1.8 / 1.6)
    assert document["scenarios"]["refresh_chain"]["cpu_ms_per_request"]["database"] == (
        pytest.approx(0.25)
    )
    assert document["ratios"]["refresh_chain"]["database"] == pytest.approx(800.0 / 5000.0)


def test_strict_exits_1_and_names_what_failed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = passing()
    found.scenarios["refresh"] = scenario("refresh", 500.0)
    monkeypatch.setattr(cli.run, "execute", lambda options: found)
    assert cli.main(["--results", str(tmp_path)]) == 0
    assert cli.main(["--strict", "--results", str(tmp_path)]) == 1
    assert "FAIL  /refresh / framework ceiling" in capsys.readouterr().err
    monkeypatch.setattr(cli.run, "execute", lambda options: passing())
    assert cli.main(["--strict", "--results", str(tmp_path)]) == 0
