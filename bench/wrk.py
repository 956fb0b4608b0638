"""Running wrk with the bench's Lua scripts and reading back their summary."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).resolve().parent / "lua"
INSTALL_HINT = "wrk is not installed: apt-get install -y wrk"
TIMEOUT = "10s"  # a password login queues behind the hashes: never a false timeout
MARKER = "BENCH_RESULT "


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit(INSTALL_HINT)
    return found


@dataclass(frozen=True, slots=True)
class Load:
    """One wrk invocation: a script, its data file, the client's Authorization."""

    url: str
    script: str
    data: Path
    authorization: str
    duration: int
    connections: int
    threads: int
    extra: str = ""

    def command(self) -> list[str]:
        threads = min(self.threads, self.connections)
        return [
            require_wrk(),
            f"-t{threads}",
            f"-c{self.connections}",
            f"-d{self.duration}s",
            f"--timeout={TIMEOUT}",
            "-s",
            str(LUA / f"{self.script}.lua"),
            self.url,
            "--",
            str(self.data),
            self.authorization,
            str(threads),
            self.extra,
        ]


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: int
    wrapped: int

    @property
    def rps(self) -> float:
        """Successful (2xx) responses per second: the throughput that counts."""
        return (self.requests - self.non_2xx) / self.seconds if self.seconds else 0.0

    @property
    def response_rps(self) -> float:
        """Every response per second, errors included (each one used a token)."""
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def start(load: Load) -> subprocess.Popen[str]:
    return subprocess.Popen(
        load.command(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen[str], load: Load) -> WrkResult:
    output, _ = process.communicate(timeout=load.duration + 60)
    for line in output.splitlines():
        if line.startswith(MARKER):
            return parse(json.loads(line[len(MARKER) :]))
    raise RuntimeError(
        f"wrk ({load.script}) gave no summary (exit {process.returncode}):\n{output}"
    )


def parse(raw: dict[str, float]) -> WrkResult:
    socket_errors = sum(int(raw[key]) for key in ("connect", "read", "write", "timeout"))
    return WrkResult(
        requests=int(raw["requests"]),
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1e3,
        p90_ms=raw["p90_us"] / 1e3,
        p99_ms=raw["p99_us"] / 1e3,
        mean_ms=raw["mean_us"] / 1e3,
        max_ms=raw["max_us"] / 1e3,
        # wrk counts responses with a status above 399; Rotor answers no 1xx or 3xx here.
        non_2xx=int(raw["status"]),
        socket_errors=socket_errors,
        wrapped=int(raw["wrapped"]),
    )


def run(load: Load) -> WrkResult:
    return finish(start(load), load)
