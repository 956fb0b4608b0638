"""`python -m bench [--smoke] [--scale] ...`: options, then the run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench import report, run
from bench.options import RESULTS, Options

DEFAULTS = Options()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    top.add_argument("--smoke", action="store_true", help="tiny durations: checks the bench runs")
    top.add_argument("--scale", action="store_true", help="also compare 10k vs 1M families")
    top.add_argument("--duration", type=int, default=DEFAULTS.duration, help="seconds per load")
    top.add_argument("--connections", type=int, default=DEFAULTS.connections)
    top.add_argument("--workers", type=int, default=DEFAULTS.workers, help="uvicorn workers")
    top.add_argument(
        "--large-families", type=int, default=DEFAULTS.large_families, help="with --scale"
    )
    top.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    top.add_argument(
        "--topology",
        action="store_true",
        help="instead: /refresh and /introspect through HAProxy + PgBouncer to 1, 2, 3 "
        "replicas, against one replica straight at PostgreSQL (bench/topology.py)",
    )
    top.add_argument(
        "--dpop",
        action="store_true",
        help="instead: /refresh of DPoP-bound families against unbound ones (bench/dpop.py)",
    )
    top.add_argument(
        "--split",
        action="store_true",
        help="instead: each hot path's worker CPU served by uvicorn and called in "
        "process, against the minimal app's (bench/split.py)",
    )
    top.add_argument(
        "--peer",
        choices=("dot",),
        help="instead: /refresh and /introspect of Rotor and of django-oauth-toolkit "
        "(gunicorn) on the same PostgreSQL, in the same run (bench/peer.py)",
    )
    top.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON")
    return top


def options_from(argv: Sequence[str] | None) -> Options:
    args = parser().parse_args(argv)
    options = Options(
        duration=max(1, args.duration),
        connections=args.connections,
        workers=args.workers,
        large_families=args.large_families,
        scale=args.scale,
        smoke=args.smoke,
        strict=args.strict,
        results=args.results,
    )
    return options.smoked() if args.smoke else options


def main(argv: Sequence[str] | None = None) -> int:
    options = options_from(argv)
    args = parser().parse_args(argv)
    if args.topology:
        from bench import topology

        return topology.main(options)
    if args.dpop:
        from bench import dpop

        return dpop.main(options)
    if args.split:
        from bench import split

        return split.main(options)
    if args.peer:
        from bench import peer

        return peer.main(options, args.peer)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    outcome = run.execute(options)
    print(report.render(outcome), flush=True)
    path = report.write(outcome, options.results, stamp + ("-smoke" if options.smoke else ""))
    print(f"\nResults: {path}", file=sys.stderr)
    missed = report.failed(outcome)
    if options.strict and missed:
        print("--strict: targets missed:", file=sys.stderr)
        for target in missed:
            print(target.line(), file=sys.stderr)
        return 1
    return 0
