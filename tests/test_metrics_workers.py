"""/metrics adds up every worker process of `rotor serve --workers 2` (CONTRACT 3.7)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_SECRET
from tests.helpers import Rotor

ROTOR = Path(sys.executable).with_name("rotor")
REQUESTS = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _issued(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rotor_tokens_issued_total" and sample.labels == {
                "grant": "client_credentials"
            }:
                return float(sample.value)
    return 0.0


@pytest.mark.slow
async def test_metrics_add_up_across_two_workers(rotor: Rotor, database_url: str) -> None:
    client = await rotor.client(grants=["client_credentials"])
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "ROTOR_SECRET": base64.urlsafe_b64encode(TEST_SECRET).decode(),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # `rotor serve` makes a fresh one
    process = subprocess.Popen(
        [str(ROTOR), "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, "rotor serve exited"
                try:
                    if (await http.get("/health/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "rotor serve did not become ready"
                await asyncio.sleep(0.1)
            for _ in range(REQUESTS):  # new connections: the kernel spreads them
                async with httpx.AsyncClient(base_url=url, timeout=10) as fresh:
                    response = await fresh.post(
                        "/token", headers=client.auth, data={"grant_type": "client_credentials"}
                    )
                    assert response.status_code == 200
            total = _issued((await http.get("/metrics")).text)
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert total == REQUESTS
