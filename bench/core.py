"""Benchmark (a): the decision core on one core, over every turn of every corpus meeting.

Each corpus meeting becomes a meeting state: its speakers join (Earnings-21 ids map to real names through
``meta.speaker_names``; other sources' labels are the names), then each speaker gives or refuses consent for
the destination's purpose, about one in four refusing (seeded per meeting, so every run decides the same).
Turns without a speaker stay unattributed. The timed loop is the pure core and nothing else: segments and
states are built before the clock starts.

Figures, all decisions per second, median of the repetitions:
- ``decide`` with name scrubbing on, each meeting's scrubber compiled once inside the timed loop (a
  fresh state per repetition, as when a meeting's roster last changed), against the same loop with scrubbing
  off (the baseline that makes scrubbing's cost visible); the target applies here;
- ``decide`` with scrubbing on and every scrubber already compiled (steady state between roster changes);
- ``engine.on_segment`` (decide plus routing and building the payload a destination receives), scrubbing on
  against scrubbing off.
"""

from __future__ import annotations

import cProfile
import gzip
import io
import json
import os
import pstats
import random
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway import engine, meeting
from gateway.events import ConsentSubmitted
from gateway.meeting import MeetingState
from gateway.model import ConsentChoice, Segment
from gateway.policy.compiled import Destination, Policy
from gateway.policy.decide import decide, scrubber_for
from gateway.policy.load import parse_policy

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "meetings.jsonl.gz"
TARGET = 100_000.0
SEED = 2026
REFUSE_SHARE = 0.25
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
POLICY = """\
policy: bench
purposes:
  summary:
    description: Meeting summaries.
    notice: What you say is sent to the summary service if you agree.
    notice_version: bench-1
redaction:
  scrub_names: {scrub}
destinations:
  - id: summariser
    url: http://127.0.0.1:9/segments
    purposes: [summary]
    delivery: stream
"""


def bench_policy(scrub: bool) -> Policy:
    text = POLICY.format(scrub="true" if scrub else "false")
    return parse_policy(text.encode(), f"bench-scrub-{'on' if scrub else 'off'}.yaml")


@dataclass(frozen=True)
class Prepared:
    meeting_id: str
    state: MeetingState
    """Roster and consent folded in; its derived-value cache is empty."""
    segments: tuple[Segment, ...]


# --------------------------------------------------------------------------------------- preparation


def load_corpus(path: Path, every: int = 1) -> list[dict[str, Any]]:
    """Every ``every``-th meeting of the corpus (1: all of them)."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for n, line in enumerate(fh) if n % every == 0]


def roster(raw: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Speaker label -> (participant id, display name), in order of first appearance."""
    names = raw["meta"].get("speaker_names", {}) if raw["meeting_id"].startswith("earnings21/") else {}
    out: dict[str, tuple[str, str]] = {}
    for turn in raw["turns"]:
        label = turn["speaker"]
        if label and label not in out:
            out[label] = (f"p{len(out) + 1}", names.get(label, label))
    return out


def prepare(raw: dict[str, Any], policy: Policy, seed: int = SEED) -> Prepared:
    mid = raw["meeting_id"]
    people = roster(raw)
    state = engine.new_meeting("bench", mid)
    for pid, name in people.values():
        state = meeting.joined(state, pid, name, None)
    rng = random.Random(f"{seed}:{mid}")
    for n, (pid, _) in enumerate(people.values()):
        choice = ConsentChoice.REFUSED if rng.random() < REFUSE_SHARE else ConsentChoice.GIVEN
        event = ConsentSubmitted("bench", mid, pid, ("summary",), choice, pid, "api", NOW)
        state = meeting.with_record(state, engine.evaluate_consent(state, event, policy, f"{mid}#{n}"))
    segments = tuple(
        Segment(
            mid,
            f"t{n}",
            people[t["speaker"]][0] if t["speaker"] else None,
            t["text"],
            NOW,
            t["start"],
            t["end"],
        )
        for n, t in enumerate(raw["turns"])
    )
    return Prepared(mid, state, segments)


# -------------------------------------------------------------------------------------------- loops

Loop = Callable[[Sequence[Prepared], Sequence[MeetingState], Policy, Destination], None]


def decide_loop(
    prepared: Sequence[Prepared], states: Sequence[MeetingState], policy: Policy, dest: Destination
) -> None:
    for p, state in zip(prepared, states, strict=True):
        for segment in p.segments:
            decide(segment, state, policy, dest, NOW)


def engine_loop(
    prepared: Sequence[Prepared], states: Sequence[MeetingState], policy: Policy, dest: Destination
) -> None:
    for p, state in zip(prepared, states, strict=True):
        for segment in p.segments:
            state = engine.on_segment(state, segment, policy, NOW).state


def fresh(prepared: Sequence[Prepared]) -> list[MeetingState]:
    """States with an empty cache: the first decision of each meeting compiles its scrubber.

    ``re`` keeps its own cache of compiled patterns, so without ``re.purge()`` every pass after the first
    would find each meeting's pattern already compiled and the compile would look free.
    """
    re.purge()
    return [replace(p.state, cache={}) for p in prepared]


def measure(
    loop: Loop, prepared: Sequence[Prepared], policy: Policy, reps: int, warmed: Sequence[MeetingState] | None
) -> dict[str, Any]:
    """Decisions per second over ``reps`` timed passes: over ``warmed`` states (after one untimed pass),
    or, if None, over fresh states each time (every meeting's scrubber compiled inside the timed pass)."""
    dest = policy.destinations[0]
    total = sum(len(p.segments) for p in prepared)
    if warmed is not None:
        loop(prepared, warmed, policy, dest)
    rates = []
    for _ in range(reps):
        states = warmed if warmed is not None else fresh(prepared)
        start = time.perf_counter()
        loop(prepared, states, policy, dest)
        rates.append(total / (time.perf_counter() - start))
    return {"median": statistics.median(rates), "runs": [round(r) for r in rates], "decisions": total}


def compiled(prepared: Sequence[Prepared], policy: Policy) -> tuple[list[MeetingState], dict[str, float]]:
    """States with their scrubber compiled, and milliseconds per compile (what a roster change costs)."""
    dest = policy.destinations[0]
    states, times = [], []
    for p in prepared:
        (state,) = fresh([p])
        start = time.perf_counter()
        scrubber_for(state, policy, dest, NOW)
        times.append((time.perf_counter() - start) * 1000)
        states.append(state)
    build = {"median_ms": statistics.median(times), "max_ms": max(times), "total_ms": sum(times)}
    return states, build


def outcomes(prepared: Sequence[Prepared], states: Sequence[MeetingState], policy: Policy) -> dict[str, int]:
    dest = policy.destinations[0]
    counts: Counter[str] = Counter()
    for p, state in zip(prepared, states, strict=True):
        counts.update(str(decide(s, state, policy, dest, NOW).decision.action) for s in p.segments)
    return dict(sorted(counts.items()))


def by_source(
    prepared: Sequence[Prepared], states: Sequence[MeetingState], on: Policy, off: Policy
) -> dict[str, dict[str, float]]:
    """Steady-state decisions per second per corpus source, scrubbing on and off (one pass each)."""
    groups: dict[str, list[tuple[Prepared, MeetingState]]] = {}
    for p, state in zip(prepared, states, strict=True):
        groups.setdefault(source_of(p.meeting_id), []).append((p, state))
    out = {}
    for source, pairs in sorted(groups.items()):
        group, warmed = [p for p, _ in pairs], [s for _, s in pairs]
        chars = sum(len(s.text) for p in group for s in p.segments)
        turns = sum(len(p.segments) for p in group)
        rates = {
            name: measure(decide_loop, group, policy, 1, warmed)["median"]
            for name, policy in (("scrub_on", on), ("scrub_off", off))
        }
        out[source] = {"meetings": len(group), "turns": turns, "mean_chars": chars / turns, **rates}
    return out


def source_of(meeting_id: str) -> str:
    parts = meeting_id.split("/")
    if parts[0] == "qmsum":
        return f"qmsum/{parts[1]}" if parts[1] != "committee" else f"qmsum/{parts[2].split('_')[0]}"
    return parts[0]


def profile(prepared: Sequence[Prepared], policy: Policy, *, warm: bool, sort: str, top: int = 20) -> str:
    """cProfile of one pass with scrubbing on: cold (compiles included) or steady state."""
    profiler = cProfile.Profile()
    states = fresh(prepared)
    if warm:
        decide_loop(prepared, states, policy, policy.destinations[0])
    profiler.enable()
    decide_loop(prepared, states, policy, policy.destinations[0])
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(top)
    text = out.getvalue()
    return text[text.index("   ncalls") :].rstrip() + "\n" if "   ncalls" in text else text


@contextmanager
def one_core() -> Iterator[str]:
    """Pin this process to one CPU for the timed loops (the loops are single-threaded either way)."""
    if not hasattr(os, "sched_setaffinity"):
        yield "not pinned (no sched_setaffinity)"
        return
    before = os.sched_getaffinity(0)
    cpu = max(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield f"pinned to CPU {cpu}"
    finally:
        os.sched_setaffinity(0, before)


# --------------------------------------------------------------------------------------------- run


def run(
    *, quick: bool, reps: int | None = None, force_profile: bool = False, corpus: Path = CORPUS
) -> dict[str, Any]:
    if not corpus.exists():
        print(f"[core] corpus not found at {corpus}: skipping the decision-core benchmark")
        return {"skipped": f"corpus not found at {corpus}"}
    reps = reps or (3 if quick else 5)
    cold_reps = 1 if quick else 2
    every = 4 if quick else 1
    started = time.perf_counter()
    raw = load_corpus(corpus, every)
    on, off = bench_policy(True), bench_policy(False)
    prepared = [prepare(m, on) for m in raw]
    del raw
    turns = sum(len(p.segments) for p in prepared)
    print(
        f"[core] {len(prepared)} meetings, {turns} turns, {reps} repetitions each "
        f"(prepared in {time.perf_counter() - started:.1f} s)"
    )
    result: dict[str, Any] = {
        "meetings": len(prepared),
        "turns": turns,
        "repetitions": reps,
        "cold_repetitions": cold_reps,
        "corpus_every": every,
        "refuse_share": REFUSE_SHARE,
        "seed": SEED,
        "target": TARGET,
    }
    with one_core() as pinning:
        result["pinning"] = pinning
        warmed, result["scrubber_build"] = compiled(prepared, on)
        result["outcomes"] = outcomes(prepared, warmed, on)
        # Compiles dominate a cold pass and take long, so fewer (long) repetitions of it.
        result["decide_scrub_on"] = measure(decide_loop, prepared, on, cold_reps, None)
        result["decide_scrub_off"] = measure(decide_loop, prepared, off, reps, fresh(prepared))
        result["decide_scrub_on_warm"] = measure(decide_loop, prepared, on, reps, warmed)
        result["engine_scrub_on_warm"] = measure(engine_loop, prepared, on, reps, warmed)
        result["engine_scrub_off"] = measure(engine_loop, prepared, off, reps, fresh(prepared))
        result["by_source"] = by_source(prepared, warmed, on, off)
        result["met"] = result["decide_scrub_on"]["median"] >= TARGET
        result["met_warm"] = result["decide_scrub_on_warm"]["median"] >= TARGET
        _print(result)
        if force_profile or not (result["met"] and result["met_warm"]):
            sample = prepared[::8]  # compiles under the profiler are slow: every 8th meeting is enough
            result["profile_cold"] = profile(sample, on, warm=False, sort="cumulative")
            result["profile_warm"] = profile(prepared, on, warm=True, sort="tottime")
            print("[core] profile, every 8th meeting, scrubbing on, compiles included (by cumulative time):")
            print(result["profile_cold"])
            print("[core] profile, one pass with scrubbing on, scrubbers compiled (by own time):")
            print(result["profile_warm"])
    return result


def _print(r: dict[str, Any]) -> None:
    print(f"[core] {r['pinning']}; outcomes per pass: {r['outcomes']}")
    rows = [
        (
            "decide, scrubbing on, each meeting's scrubber compiled in the loop",
            "decide_scrub_on",
            "decide_scrub_off",
        ),
        ("decide, scrubbing on, scrubbers already compiled", "decide_scrub_on_warm", "decide_scrub_off"),
        ("engine.on_segment, scrubbing on, scrubbers compiled", "engine_scrub_on_warm", "engine_scrub_off"),
    ]
    for label, key, base in rows:
        value, baseline = r[key]["median"], r[base]["median"]
        print(
            f"[core] {label}: {value:,.0f}/s (scrubbing off: {baseline:,.0f}/s, ratio {value / baseline:.2f})"
        )
    b = r["scrubber_build"]
    print(
        f"[core] scrubber compile per meeting: median {b['median_ms']:.1f} ms, max {b['max_ms']:.0f} ms, "
        f"all meetings {b['total_ms'] / 1000:.1f} s"
    )
    for source, f in r["by_source"].items():
        print(
            f"[core]   {source:<18} {f['turns']:>6} turns, {f['mean_chars']:>4.0f} chars/turn: "
            f"{f['scrub_on']:>9,.0f}/s scrubbing on, {f['scrub_off']:>9,.0f}/s off"
        )
    for key, label in (("met", "compiles included"), ("met_warm", "scrubbers compiled")):
        print(
            f"[core] target >= {TARGET:,.0f} decisions/s, scrubbing on, {label}: "
            f"{'met' if r[key] else 'MISSED'}"
        )
