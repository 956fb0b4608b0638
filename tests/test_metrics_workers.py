"""/metrics adds up every worker process of `rotor serve --workers 2` (CONTRACT 3.7)."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import Rotor, start_rotor, stop_rotor

ROTOR = Path(sys.executable).with_name("rotor")
REQUESTS = 60


def _issued(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rotor_tokens_issued_total" and sample.labels == {
                "grant": "client_credentials"
            }:
                return float(sample.value)
    return 0.0


@pytest.mark.slow
async def test_metrics_add_up_across_two_workers(
    rotor: Rotor, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await rotor.client(grants=["client_credentials"])
    # `rotor serve` makes a fresh PROMETHEUS_MULTIPROC_DIR when none is set.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    process, url = await start_rotor(database_url, "--workers", "2")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            for _ in range(REQUESTS):  # new connections: the kernel spreads them
                async with httpx.AsyncClient(base_url=url, timeout=10) as fresh:
                    response = await fresh.post(
                        "/token", headers=client.auth, data={"grant_type": "client_credentials"}
                    )
                    assert response.status_code == 200
            total = _issued((await http.get("/metrics")).text)
    finally:
        stop_rotor(process)
    assert total == REQUESTS
