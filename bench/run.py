"""``make bench``: every benchmark, its baseline, and docs/benchmarks.md, in one run.

    .venv/bin/python bench/run.py                 # everything, full size (about 5 minutes)
    .venv/bin/python bench/run.py --quick         # smaller sizes, one ingest round (a minute or two)
    .venv/bin/python bench/run.py --only core     # or --only ingest, streams, replicas, scrub
    .venv/bin/python bench/run.py --profile       # also profile the core and the gateway process
    .venv/bin/python bench/run.py --only ingest --batch-seconds 0.05   # the gateways' destination batched

(a) ``core``: decisions per second of the pure decision core on one core over the shared corpus, name
scrubbing on, against the same loop with scrubbing off. (b) ``ingest``: segments per second through
``POST /v1/events`` of the real gateway (durable outbox on SQLite, and on a fresh PostgreSQL database) to a
loopback receiver, against a pass-through aiohttp proxy; then the latency each adds per segment at constant
offered rates (an open model), climbing until each server's knee. (c) ``streams``: 1,000 concurrent
WebSocket streams (``/v1/stream``) against 10, the gateway's memory and per-segment p99. (d) ``replicas``:
withdrawal propagation between two gateways on one PostgreSQL database. (e) ``scrub``: name scrubbing
against a general-purpose tool (``bench/scrub_baseline.py``, if present). Results go to bench/results/
(JSON) and, unless ``--no-docs``, docs/benchmarks.md with its plots (docs/bench-*.png).
"""

from __future__ import annotations

import argparse
import json
import os
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
import streams  # noqa: E402

ONLY = ["core", "ingest", "streams", "replicas", "scrub"]

POSTGRES = "postgresql://postgres@127.0.0.1:5432"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs for a fast check")
    parser.add_argument("--only", choices=ONLY, help="run one benchmark")
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
        "--sweep",
        help="ingest: higher offered rates climbed until each server's knee, comma-separated "
        f"(default {','.join(f'{r:.0f}' for r in ingest.SWEEP)}; quick "
        f"{','.join(f'{r:.0f}' for r in ingest.QUICK_SWEEP)}; 'none' for no sweep)",
    )
    parser.add_argument(
        "--sweep-seconds", type=float, help="ingest: seconds per server and sweep rate (default 5, quick 2)"
    )
    parser.add_argument(
        "--streams",
        type=int,
        help=f"streams: concurrent WebSocket streams (default {streams.STREAMS}, quick "
        f"{streams.QUICK_STREAMS}); the baseline runs {streams.BASELINE_STREAMS}",
    )
    parser.add_argument(
        "--stream-seconds", type=float, help="streams: seconds of segments flowing (default 30, quick 5)"
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
    parser.add_argument(
        "--batch-seconds",
        type=float,
        help="ingest: the gateways' destination is `delivery: batched` with this batch_seconds instead of "
        "`stream` (an operator's option, not the issues' comparable figure: docs/benchmarks.md is kept)",
    )
    parser.add_argument("--profile", action="store_true", help="profile the core and the gateway process")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = parser.parse_args(argv)

    postgres = None if args.postgres.lower() == "none" else args.postgres.rstrip("/")
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    info = machine.describe()
    print(f"machine: {machine.line(info)}")
    started = time.perf_counter()
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python bench/run.py", *(shlex.quote(a) for a in (argv or sys.argv[1:]))]),
        "machine": info,
        # the machine may be shared: how busy it was says how far to trust the absolute figures
        "load_average": {"start": _load()},
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
            rates=_rates(args.rates) or (),
            latency_seconds=args.latency_seconds,
            sweep=_rates(args.sweep),
            sweep_seconds=args.sweep_seconds,
            batch_seconds=args.batch_seconds,
        )
    if args.only in (None, "streams"):
        _unpin(cpus)  # ingest pinned this process beside its receiver
        results["streams"] = streams.run(quick=args.quick, n=args.streams, seconds=args.stream_seconds)
    if args.only in (None, "replicas"):
        _unpin(cpus)
        skipped = "--postgres none" if postgres is None else ingest.postgres_unreachable(postgres)
        if postgres is None or skipped:
            print(f"[replicas] skipped: {skipped}")
            results["replicas"] = {"skipped": skipped}
        else:
            results["replicas"] = replicas.run(quick=args.quick, n=args.withdrawals, server=postgres)
    if args.only in (None, "scrub"):
        _unpin(cpus)
        results["scrub"] = run_scrub_baseline(args.quick)
    results["load_average"]["end"] = _load()
    results["seconds"] = round(time.perf_counter() - started, 1)
    out = write_results(results)
    print(f"results: {out} ({results['seconds']} s)")
    print(report.text_table(results))
    if not args.no_docs and args.batch_seconds is None:
        doc = report.write(results, BENCH.parent / "docs" / "benchmarks.md")
        print(f"report: {doc}")
    return 0


def _load() -> list[float]:
    """Load average over 1, 5 and 15 minutes (runnable processes, to read against the core count)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []


def _unpin(cpus: set[int]) -> None:
    """Every CPU this run started with, again: a benchmark that pins its load generator leaves it pinned."""
    if cpus:
        os.sched_setaffinity(0, cpus)


def _rates(text: str | None) -> tuple[float, ...] | None:
    """Comma-separated rates; None (the default) when not given, () for 'none'."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    return tuple(float(r) for r in text.split(",") if r.strip())


def run_scrub_baseline(quick: bool) -> dict[str, Any]:
    """bench/scrub_baseline.py (name scrubbing against a general-purpose tool), when it is there."""
    module = report.scrub_baseline()
    if module is None:
        note = "bench/scrub_baseline.py not importable"
        print(f"[scrub] skipped: {note}")
        return {"skipped": note}
    try:
        result: dict[str, Any] = module.run(quick)
    except Exception as exc:  # one failing benchmark must not lose the others' figures
        print(f"[scrub] failed: {type(exc).__name__} (message withheld: it may quote corpus text)")
        return {"skipped": f"failed: {type(exc).__name__}"}
    return result


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
