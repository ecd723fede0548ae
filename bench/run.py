"""``make bench``: every benchmark, its baseline, and docs/benchmarks.md, in one run.

    .venv/bin/python bench/run.py                 # everything, full size (about 5 minutes)
    .venv/bin/python bench/run.py --quick         # smaller sizes, one ingest round (a minute or two)
    .venv/bin/python bench/run.py --only core     # or --only ingest, --only replicas
    .venv/bin/python bench/run.py --profile       # also profile the core and the gateway process

(a) ``core``: decisions per second of the pure decision core on one core over the shared corpus, name
scrubbing on, against the same loop with scrubbing off. (b) ``ingest``: segments per second through
``POST /v1/events`` of the real gateway (durable outbox on SQLite, and on a fresh PostgreSQL database) to a
loopback receiver, against a pass-through aiohttp proxy; then the latency each adds per segment at a constant
offered rate. (c) ``replicas``: withdrawal propagation between two gateways on one PostgreSQL database.
Results go to bench/results/ (JSON) and, unless ``--no-docs``, docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # `python bench/run.py` from a checkout without `make install`

import core  # noqa: E402 - path set up above
import ingest  # noqa: E402
import machine  # noqa: E402
import replicas  # noqa: E402
import report  # noqa: E402

POSTGRES = "postgresql://postgres@127.0.0.1:5432"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs for a fast check")
    parser.add_argument("--only", choices=["core", "ingest", "replicas"], help="run one benchmark")
    parser.add_argument("--reps", type=int, help="core: timed repetitions (default 5, quick 3)")
    parser.add_argument("--clients", type=int, default=32, help="ingest: concurrent clients (default 32)")
    parser.add_argument("--requests", type=int, help="ingest: requests per round (default 8000, quick 2000)")
    parser.add_argument("--rounds", type=int, help="ingest: rounds per server (default 3, quick 1)")
    parser.add_argument(
        "--gateway-log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="ingest: the gateway's log level (default info, as `serve` runs by default)",
    )
    parser.add_argument(
        "--rates",
        default="50,200",
        help="ingest: segments/s offered in the latency phases, comma-separated (default 50,200)",
    )
    parser.add_argument(
        "--latency-seconds", type=float, help="ingest: seconds per server and rate (default 15, quick 3)"
    )
    parser.add_argument(
        "--postgres",
        default=POSTGRES,
        help=f"PostgreSQL server URL without a database (default {POSTGRES}); a fresh database is created "
        "and dropped; 'none' runs SQLite only and skips the replicas benchmark",
    )
    parser.add_argument(
        "--withdrawals", type=int, help="replicas: withdrawals measured (default 500, quick 50)"
    )
    parser.add_argument("--profile", action="store_true", help="profile the core and the gateway process")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)

    postgres = None if args.postgres.lower() == "none" else args.postgres.rstrip("/")
    info = machine.describe()
    print(f"machine: {machine.line(info)}")
    started = time.perf_counter()
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python bench/run.py", *(shlex.quote(a) for a in (argv or sys.argv[1:]))]),
        "machine": info,
    }
    if args.only in (None, "core"):
        results["core"] = core.run(quick=args.quick, reps=args.reps, force_profile=args.profile)
    if args.only in (None, "ingest"):
        results["ingest"] = ingest.run(
            quick=args.quick,
            clients=args.clients,
            requests=args.requests,
            rounds=args.rounds,
            log_level=args.gateway_log_level,
            profile=args.profile,
            postgres=postgres,
            rates=tuple(float(r) for r in args.rates.split(",") if r.strip()),
            latency_seconds=args.latency_seconds,
        )
    if args.only in (None, "replicas"):
        skipped = "--postgres none" if postgres is None else ingest.postgres_unreachable(postgres)
        if postgres is None or skipped:
            print(f"[replicas] skipped: {skipped}")
            results["replicas"] = {"skipped": skipped}
        else:
            results["replicas"] = replicas.run(quick=args.quick, n=args.withdrawals, server=postgres)
    results["seconds"] = round(time.perf_counter() - started, 1)
    out = write_results(results)
    print(f"results: {out} ({results['seconds']} s)")
    if not args.no_docs:
        doc = report.write(results, BENCH.parent / "docs" / "benchmarks.md")
        print(f"report: {doc}")
    return 0


def write_results(results: dict[str, Any]) -> Path:
    folder = BENCH / "results"
    folder.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"bench-{stamp}.json"
    text = json.dumps(results, indent=2, default=str)
    path.write_text(text + "\n")
    (folder / "latest.json").write_text(text + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
