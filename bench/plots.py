"""PNG plots of a benchmark run for docs/benchmarks.md (matplotlib, Agg backend: no display needed).

    docs/bench-ingest-rate.png     ingest sweep: offered against delivered rate per server, up to each knee
    docs/bench-ingest-latency.png  ingest sweep: latency (POST to arrival) and added latency against offered
    docs/bench-streams.png         streams: gateway RSS and per-segment latency, 1,000 streams against 10

``write(results, folder)`` draws what the run measured and returns {plot name: path}; without matplotlib
(the ``bench`` extra: ``pip install -e '.[bench]'``) it draws nothing and says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = {"proxy": "#4c72b0", "gateway": "#dd8452", "gateway-pg": "#55a868"}
LABELS = {
    "proxy": "pass-through proxy",
    "gateway": "gateway, SQLite",
    "gateway-pg": "gateway, PostgreSQL",
}


def write(results: dict[str, Any], folder: Path) -> dict[str, Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        print("[plots] matplotlib not installed (pip install -e '.[bench]'): no plots drawn")
        return {}
    out: dict[str, Path] = {}
    sweep = (results.get("ingest") or {}).get("sweep")
    if sweep and sweep.get("servers"):
        out["ingest-rate"] = _save(plt, _rate_plot(plt, sweep), folder / "bench-ingest-rate.png")
        out["ingest-latency"] = _save(plt, _latency_plot(plt, sweep), folder / "bench-ingest-latency.png")
    streams = results.get("streams")
    if streams and "many" in streams:
        out["streams"] = _save(plt, _streams_plot(plt, ticker, streams), folder / "bench-streams.png")
    for path in out.values():
        print(f"[plots] {path}")
    return out


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    # no timestamps in the file, so an unchanged plot is an unchanged file
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def _rate_plot(plt: Any, sweep: dict[str, Any]) -> Any:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    top = 0.0
    for name, srv in sweep["servers"].items():
        pts = srv["points"]
        offered = [p["rate"] for p in pts]
        delivered = [p["delivered_rate"] for p in pts]
        top = max(top, *offered)
        ax.plot(offered, delivered, "o-", color=COLOURS.get(name), label=LABELS.get(name, name))
        broke = [p for p in pts if p["past_knee"]]
        if broke:
            ax.plot(
                [p["rate"] for p in broke],
                [p["delivered_rate"] for p in broke],
                "x",
                color="black",
                markersize=10,
            )
    ax.plot([0, top], [0, top], ":", color="grey", label="delivered = offered")
    ax.set_xlabel("offered (segments/s, constant arrival rate)")
    ax.set_ylabel("delivered to the receiver (segments/s)")
    ax.set_title("Ingest, open model: offered vs delivered (x: past the knee)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return fig


def _latency_plot(plt: Any, sweep: dict[str, Any]) -> Any:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, srv in sweep["servers"].items():
        pts = srv["points"]
        rates = [p["rate"] for p in pts]
        colour = COLOURS.get(name)
        label = LABELS.get(name, name)
        left.plot(rates, [p["arrival_ms"]["p99"] for p in pts], "o-", color=colour, label=f"{label} p99")
        left.plot(rates, [p["arrival_ms"]["p50"] for p in pts], "s--", color=colour, label=f"{label} p50")
        added = [p for p in pts if p.get("added_ms")]
        if added:
            ar = [p["rate"] for p in added]
            right.plot(ar, [p["added_ms"]["p99"] for p in added], "o-", color=colour, label=f"{label} p99")
            right.plot(ar, [p["added_ms"]["p50"] for p in added], "s--", color=colour, label=f"{label} p50")
    left.set_title("POST to arrival at the receiver")
    left.set_ylabel("ms")
    left.set_yscale("log")
    right.set_title("Added vs pass-through at the same rate")
    right.set_ylabel("ms (gateway percentile - pass-through percentile)")
    right.set_yscale("symlog", linthresh=10)
    right.axhline(0, color="grey", linewidth=0.8)
    for ax in (left, right):
        ax.set_xlabel("offered (segments/s)")
        ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def _streams_plot(plt: Any, ticker: Any, s: dict[str, Any]) -> Any:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    runs = [("baseline", s["baseline"]), ("many", s["many"])]
    stages = [("idle", "idle"), ("streams_open", "streams open"), ("peak", "peak"), ("after_close", "closed")]
    width = 0.38
    for k, (_, r) in enumerate(runs):
        xs = [i + (k - 0.5) * width for i in range(len(stages))]
        left.bar(xs, [r["rss_mb"][key] for key, _ in stages], width, label=f"{r['streams']:,} streams")
    left.set_xticks(range(len(stages)), [label for _, label in stages])
    left.set_ylabel("gateway RSS (MiB)")
    left.set_title("Gateway memory")
    left.legend()
    for k, (_, r) in enumerate(runs):
        xs = [i + (k - 0.5) * width for i in range(3)]
        a = r["arrival_ms"]
        right.bar(xs, [a["p50"], a["p99"], a["max"]], width, label=f"{r['streams']:,} streams")
    right.set_xticks(range(3), ["p50", "p99", "max"])
    right.set_ylabel("ms, sent on the stream to arrival at the receiver")
    right.set_yscale("log")
    right.yaxis.set_major_formatter(ticker.ScalarFormatter())
    right.set_title(f"Per-segment latency ({s['many']['rate_per_stream']} segments/s per stream)")
    right.legend()
    return fig
