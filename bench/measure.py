"""One measured window: wrk against a server while /proc is sampled, with an
optional second wrk (the flood) started a little earlier and ended later."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from bench import procs, wrk

CPUS = os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class Cost:
    """CPU seconds per group (generator, server, database), the server's peak
    RSS, and the CPU seconds the hypervisor took from the machine (steal)."""

    wall_seconds: float
    cpu_seconds: dict[str, float]
    server_peak_rss_mb: float
    steal_seconds: float

    def per_request_ms(self, group: str, requests: int) -> float:
        """CPU milliseconds the group spent per completed request: unlike a rate,
        this hardly moves when other processes take part of the machine."""
        return self.cpu_seconds.get(group, 0.0) * 1000 / requests if requests else 0.0

    def share(self, group: str) -> float:
        """Fraction of the whole machine (all cores) that the group used."""
        capacity = self.wall_seconds * CPUS
        return self.cpu_seconds.get(group, 0.0) / capacity if capacity else 0.0


@dataclass(frozen=True, slots=True)
class Measurement:
    name: str
    result: wrk.WrkResult
    cost: Cost
    flood: wrk.WrkResult | None = None


def cost_of(usage: procs.Usage) -> Cost:
    return Cost(
        wall_seconds=usage.wall_seconds,
        cpu_seconds={**usage.cpu_seconds, "other": usage.other_cpu_seconds},
        server_peak_rss_mb=usage.peak_rss_bytes.get("server", 0) / 2**20,
        steal_seconds=usage.machine.steal_seconds,
    )


def sampler(
    generator: list[int], server: procs.PidSource, database: procs.PidSource
) -> procs.Sampler:
    return procs.Sampler({"generator": lambda: generator, "server": server, "database": database})


def measure(
    name: str,
    load: wrk.Load,
    server: procs.PidSource,
    database: procs.PidSource,
    *,
    flood: wrk.Load | None = None,
    lead: float = 1.0,
) -> Measurement:
    generator: list[int] = []
    flood_process = None
    if flood is not None:
        flood_process = wrk.start(flood)
        generator.append(flood_process.pid)
        time.sleep(lead)
    watch = sampler(generator, server, database).start()
    process = wrk.start(load)
    generator.append(process.pid)
    result = wrk.finish(process, load)
    usage = watch.stop()
    flooded = wrk.finish(flood_process, flood) if flood_process and flood else None
    return Measurement(name, result, cost_of(usage), flooded)
