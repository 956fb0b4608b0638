"""Starting and stopping the servers under test: Rotor (`rotor serve`) and the
minimal Litestar app, each on uvicorn with the same worker count, on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import procs

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def pids(self) -> procs.PidSource:
        return procs.tree(self.process.pid)

    def worker_pids(self) -> list[int]:
        return [pid for pid in procs.descendants(self.process.pid) if pid != self.process.pid]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL to the process group
        this bench created for it, if anything is left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_TIMEOUT)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def launch(name: str, command: list[str], env: Mapping[str, str], log_dir: Path) -> Server:
    port = int(command[command.index("--port") + 1])
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, f"http://{HOST}:{port}", process, log_path)


def wait_until(server: Server, method: str, path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited at start-up:\n{server.log_tail()}")
        try:
            if httpx.request(method, server.base_url + path, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(
        f"{server.name} not ready within {START_TIMEOUT:.0f} s:\n{server.log_tail()}"
    )


def start_rotor(env: Mapping[str, str], workers: int, log_dir: Path) -> Server:
    port = free_port()
    command = [str(VENV_BIN / "rotor"), "serve", "--host", HOST]
    command += ["--port", str(port), "--workers", str(workers)]
    # Required with DATABASE_URL (CONTRACT 1): the URL this server listens on.
    issued = {**env, "ROTOR_ISSUER": f"http://{HOST}:{port}"}
    server = launch("rotor", command, issued, log_dir)
    wait_until(server, "GET", "/health/ready")
    return server


def start_minimal(workers: int, log_dir: Path) -> Server:
    command = [sys.executable, "-m", "bench.minimal_app", "--host", HOST]
    command += ["--port", str(free_port()), "--workers", str(workers)]
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    server = launch("minimal", command, env, log_dir)
    wait_until(server, "POST", "/")
    return server
