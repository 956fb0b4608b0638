"""The bench's options: what a run measures and how long (bench/cli.py reads
them from the command line; bench/run.py runs them)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True, slots=True)
class Options:
    duration: int = 10
    warmup: int = 2
    connections: int = 32
    threads: int = 2
    workers: int = 2
    flood_connections: int = 32
    introspect_tokens: int = 2000
    users: int = 1000
    # The chain load: families per connection, rotated along their chains
    # (160 at 32 connections), each seeded with this many spent generations
    # behind it (0: new logins; the chains grow during the load, by over a
    # hundred generations each in 10 s).
    chain_families_per_connection: int = 5
    chain_history: int = 0
    # The long-chain case: one family rotated `long_chain` times by one client,
    # then `long_chain_sample` more, in turn with a fresh family's first ones.
    long_chain: int = 10_000
    long_chain_sample: int = 1_000
    scale: bool = False
    small_families: int = 10_000
    large_families: int = 1_000_000
    smoke: bool = False
    strict: bool = False
    results: Path = RESULTS

    def smoked(self) -> Options:
        """Same code paths, tiny sizes: a few seconds of load in all."""
        return replace(
            self,
            duration=1,
            warmup=0,
            connections=min(self.connections, 8),
            flood_connections=4,
            introspect_tokens=100,
            users=20,
            long_chain=200,
            long_chain_sample=50,
            small_families=1_000,
            large_families=5_000,
        )
