"""Name scrubbing against a general-purpose tool: Presidio's deny-list recognizer built from the same roster.

    .venv/bin/python bench/scrub_baseline.py            # full size (about half a minute)
    .venv/bin/python bench/scrub_baseline.py --quick    # fewer repetitions, every other meeting timed

Both sides get the same meetings, rosters, turns and ground truth, all from ``bench/scrub_eval.py`` (imported,
not copied): the 78 meetings of the shared corpus with real names (Earnings-21 calls with
``meta.speaker_names``, QMSum committee meetings), every participant a target, and the hand-reviewed gold set
``tests/data/scrub_gold.jsonl`` (every candidate word labelled, scored per candidate: scrubbed or not).

- **ours**: ``NameScrubber.build`` per meeting, ``scrub(text)`` per turn (``scrub_eval.ours``).
- **Presidio**: ``presidio_analyzer.PatternRecognizer(supported_entity="PERSON", deny_list=...)`` per meeting,
  ``analyze(text, ["PERSON"], None)`` per turn, then the found spans replaced by a placeholder (the analyzer
  only detects; the replacement is the same splice ours does). No NLP engine or spaCy model: none can be
  downloaded here, and a model's PERSON entities would not know which people refused. The deny list is what
  a user would build from the roster: each person's full name and each name part (the project's display-name
  parser strips titles and roles, so the baseline gets clean names), as written and with diacritics folded,
  plus the letter runs of hyphenated/apostrophe parts; Presidio matches them as whole words in any case
  (its default flags).

Speed: turns per second over every turn of those meetings, recognizers and scrubbers built beforehand (build
time is reported apart), the process pinned to one CPU (``core.one_core``), one untimed warm-up pass of each,
then timed passes alternating the two tools, median of the repetitions. CPU time (``time.process_time``) is
reported beside wall-clock time because the machine is shared.
"""

from __future__ import annotations

import argparse
import gc
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # `python bench/scrub_baseline.py` from a checkout
sys.path.insert(0, str(BENCH))

import core  # noqa: E402 - path set up above
import machine  # noqa: E402
import scrub_eval  # noqa: E402
from scrub_eval import Meeting  # noqa: E402

from gateway import nicknames as nd  # noqa: E402
from gateway.names import NameScrubber, fold, parse_display_name  # noqa: E402

TARGET_PRECISION = 0.95
TARGET_RECALL = 0.99
"""The scrubber's own targets (docs/scrubbing.md, tests/test_names_corpus.py)."""
PLACEHOLDER = "[participant]"

Scrub = Callable[[str], object]


# ------------------------------------------------------------------------------------------ Presidio


def presidio_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("presidio-analyzer")
    except Exception:  # not installed (PackageNotFoundError) or broken metadata
        return None


def deny_list(meeting: Meeting) -> list[str]:
    """Full names and name parts of every roster person, as written and folded (particles alone left out)."""
    words: set[str] = set()
    for names in meeting.roster:
        for name in names:
            parts = parse_display_name(name).parts
            if not parts:
                continue
            words.add(" ".join(parts))
            for part in parts:
                if fold(part)[0].lower().strip(".") in nd.PARTICLES:
                    continue
                words.add(part)
                words.update(w for w in re.findall(r"[^\W\d_]+", part) if len(w) >= 2)
    words |= {fold(w)[0] for w in words}
    return sorted(words, key=len, reverse=True)  # longest first: a full name wins over its parts


def presidio_recognizer(meeting: Meeting) -> Any:
    from presidio_analyzer import PatternRecognizer

    return PatternRecognizer(supported_entity="PERSON", deny_list=deny_list(meeting))


def presidio_spans(recognizer: Any) -> Callable[[str], tuple[tuple[int, int], ...]]:
    def spans(text: str) -> tuple[tuple[int, int], ...]:
        found = recognizer.analyze(text, entities=["PERSON"], nlp_artifacts=None)
        return tuple(sorted((r.start, r.end) for r in found))

    return spans


def presidio_scrub(recognizer: Any) -> Callable[[str], str]:
    """What scrubbing costs with Presidio: analyze, then replace each found span (overlaps merged)."""
    spans_of = presidio_spans(recognizer)

    def scrub(text: str) -> str:
        spans = spans_of(text)
        if not spans:
            return text
        out, last = [], 0
        for start, end in spans:
            if start < last:  # overlapping result: already replaced
                last = max(last, end)
                continue
            out.append(text[last:start])
            out.append(PLACEHOLDER)
            last = end
        out.append(text[last:])
        return "".join(out)

    return scrub


# ---------------------------------------------------------------------------------------- measuring


def accuracy(meetings: list[Meeting], gold: list[dict[str, object]]) -> dict[str, dict[str, Any]]:
    """Precision and recall per tool over every gold candidate, overall and per source."""
    tools = {
        "ours": scrub_eval.ours,
        "presidio": lambda m: presidio_spans(presidio_recognizer(m)),
        "regex": scrub_eval.deny_list,
    }
    out: dict[str, dict[str, Any]] = {}
    preds = {}
    for name, factory in tools.items():
        pred = preds[name] = scrub_eval.predict(meetings, gold, factory)
        out[name] = {"all": _scores(scrub_eval.score(gold, pred))}
        for source in ("earnings21", "qmsum/committee"):
            part = [g for g in gold if str(g["meeting_id"]).startswith(source + "/")]
            out[name][source] = _scores(scrub_eval.score(part, pred))
    keys = [_key(g) for g in gold if g["label"]]
    out["presidio"]["missed_regex_caught"] = sum(preds["regex"][k] and not preds["presidio"][k] for k in keys)
    return out


def _key(g: dict[str, object]) -> tuple[str, int, int]:
    return (str(g["meeting_id"]), int(str(g["turn"])), int(str(g["start"])))


def _scores(c: Counter[str]) -> dict[str, Any]:
    n_p, n_r = c["tp"] + c["fp"], c["tp"] + c["fn"]
    return {
        "tp": c["tp"],
        "fp": c["fp"],
        "fn": c["fn"],
        "tn": c["tn"],
        "precision": c["tp"] / n_p if n_p else 1.0,
        "recall": c["tp"] / n_r if n_r else 1.0,
        "precision_ci": scrub_eval.wilson(c["tp"], n_p),
        "recall_ci": scrub_eval.wilson(c["tp"], n_r),
    }


def _timed_build(build: Callable[[], Any], warm: Callable[[Any], object]) -> tuple[Any, float]:
    """Build one tool for one meeting, cold (every memo and pattern cache cleared); CPU milliseconds,
    including its first call (Presidio compiles its pattern then)."""
    for memo in scrub_eval.MEMOS:
        memo.cache_clear()
    re.purge()
    import regex  # type: ignore[import-untyped]  # Presidio's pattern engine, installed with it

    regex.purge()
    gc.collect()
    start = time.process_time()
    tool = build()
    warm(tool)
    return tool, (time.process_time() - start) * 1000


def _build_ours(meeting: Meeting) -> NameScrubber:
    return NameScrubber.build(scrub_eval.targets_for(meeting))


def _scrub_empty(scrubber: Any) -> object:
    return scrubber.scrub("")


def _analyze_one(recognizer: Any) -> object:
    return recognizer.analyze("x", ["PERSON"], None)  # Presidio compiles its pattern on the first call


def speed(meetings: Sequence[Meeting], reps: int) -> dict[str, Any]:
    """Turns/s of each tool over every turn of ``meetings``, tools built beforehand; median of ``reps``."""
    ours_work: list[tuple[Scrub, tuple[str, ...]]] = []
    presidio_work: list[tuple[Scrub, tuple[str, ...]]] = []
    builds: dict[str, list[float]] = {"ours": [], "presidio": []}
    for m in meetings:
        scrubber, ms = _timed_build(partial(_build_ours, m), _scrub_empty)
        builds["ours"].append(ms)
        ours_work.append((scrubber.scrub, m.texts))
        recognizer, ms = _timed_build(partial(presidio_recognizer, m), _analyze_one)
        builds["presidio"].append(ms)
        presidio_work.append((presidio_scrub(recognizer), m.texts))
    turns = sum(len(m.texts) for m in meetings)
    chars = sum(len(t) for m in meetings for t in m.texts)
    work = {"ours": ours_work, "presidio": presidio_work}
    for tool in work.values():  # warm-up
        _pass(tool)
    rates: dict[str, list[float]] = {"ours": [], "presidio": []}
    cpu_rates: dict[str, list[float]] = {"ours": [], "presidio": []}
    for rep in range(reps):
        order = ("ours", "presidio") if rep % 2 == 0 else ("presidio", "ours")
        for name in order:
            wall, cpu = _pass(work[name])
            rates[name].append(turns / wall)
            cpu_rates[name].append(turns / cpu)
    return {
        "meetings": len(meetings),
        "turns": turns,
        "mean_chars": chars / turns,
        "repetitions": reps,
        **{
            name: {
                "median": statistics.median(rates[name]),
                "median_cpu": statistics.median(cpu_rates[name]),
                "runs": [round(r) for r in rates[name]],
                "build_median_ms": statistics.median(builds[name]),
                "build_max_ms": max(builds[name]),
            }
            for name in work
        },
    }


def _pass(work: Sequence[tuple[Scrub, tuple[str, ...]]]) -> tuple[float, float]:
    """One timed pass over every turn; (wall seconds, CPU seconds). No collection inside the pass."""
    gc.collect()
    gc.disable()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        for scrub, texts in work:
            for text in texts:
                scrub(text)
        return time.perf_counter() - wall, max(time.process_time() - cpu, 1e-9)
    finally:
        gc.enable()


# ------------------------------------------------------------------------------------------- run


def run(quick: bool) -> dict[str, Any]:
    version = presidio_version()
    if version is None:
        print("[scrub] presidio-analyzer not installed (pip install -e '.[bench]'): skipping")
        return {"skipped": "presidio-analyzer not installed"}
    if not scrub_eval.CORPUS.exists():
        print(f"[scrub] corpus not found at {scrub_eval.CORPUS}: skipping")
        return {"skipped": f"corpus not found at {scrub_eval.CORPUS}"}
    started = time.perf_counter()
    meetings = scrub_eval.load_meetings()
    gold = scrub_eval.load_gold()
    reps = 3 if quick else 5
    timed = meetings[::2] if quick else meetings
    result: dict[str, Any] = {
        "presidio_version": version,
        "meetings": len(meetings),
        "turns": sum(len(m.texts) for m in meetings),
        "gold_candidates": len(gold),
        "gold_true": sum(bool(g["label"]) for g in gold),
        "timed_every": 2 if quick else 1,
        "target_precision": TARGET_PRECISION,
        "target_recall": TARGET_RECALL,
    }
    result["accuracy"] = accuracy(meetings, gold)
    with core.one_core() as pinning:
        result["pinning"] = pinning
        result["speed"] = speed(timed, reps)
    result["seconds"] = round(time.perf_counter() - started, 1)
    for row in headline(result):
        print(
            f"[scrub] {row[0]}: {row[1]} (baseline {row[2]}, ratio {row[3]}, target {row[4]}, met {row[5]})"
        )
    return result


# ---------------------------------------------------------------------------------------- reports

METHOD = """\
**Method.** The same meetings, rosters, turns and ground truth for both tools, from `bench/scrub_eval.py`:
the {meetings} shared-corpus meetings with real names (Earnings-21 calls with `meta.speaker_names`, QMSum
committee meetings; every participant a target) and the hand-reviewed gold set `tests/data/scrub_gold.jsonl`
({candidates:,} candidate words, {true:,} naming a participant; see docs/scrubbing.md), scored per candidate:
scrubbed or not. The baseline is Presidio's `PatternRecognizer(supported_entity="PERSON", deny_list=...)`,
one per meeting, called as `analyze(text, ["PERSON"], None)` (no NLP engine: no spaCy model can be downloaded
here, and a model's PERSON entities would not know who refused). Its deny list is each person's full name and
name parts (titles and roles stripped by the project's parser), as written and with diacritics folded,
matched as whole words in any case (Presidio's default flags). For reference, the plain regex deny list of
`scrub_eval.py` (name-part tokens over diacritics-folded text) is scored too. Speed: every turn of {which}
({turns:,} turns, {chars:.0f} characters on average), scrubbers and recognizers built beforehand, Presidio's
spans replaced by a placeholder as ours are; {pinning}, one untimed warm-up pass each, then {reps} timed
passes alternating the two tools, median (the CPU-time rate beside it: the machine is shared)."""


def headline(result: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    if "skipped" in result:
        return []
    ours, base = result["accuracy"]["ours"]["all"], result["accuracy"]["presidio"]["all"]
    rows = []
    for key, target in (("recall", result["target_recall"]), ("precision", result["target_precision"])):
        rows.append(
            (
                f"name scrubbing {key}, gold set: ours vs Presidio deny-list",
                f"{ours[key]:.4f}",
                f"{base[key]:.4f} (Presidio)",
                f"{ours[key] / base[key]:.3f}" if base[key] else "-",
                f">= {target}",
                "yes" if ours[key] >= target else "**no**",
            )
        )
    s = result["speed"]
    rows.append(
        (
            "name scrubbing speed (turns/s): ours vs Presidio deny-list",
            f"{s['ours']['median']:,.0f}/s",
            f"{s['presidio']['median']:,.0f}/s (Presidio)",
            f"{s['ours']['median'] / s['presidio']['median']:.2f}",
            "-",
            "-",
        )
    )
    return rows


def markdown(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"## Name scrubbing against Presidio\n\nSkipped: {result['skipped']}.\n"
    a, s = result["accuracy"], result["speed"]
    lines = [
        "## Name scrubbing against Presidio",
        "",
        f"Command: `.venv/bin/python bench/scrub_baseline.py` (`bench/scrub_baseline.py`, presidio-analyzer "
        f"{result['presidio_version']}).",
        "",
        METHOD.format(
            meetings=result["meetings"],
            candidates=result["gold_candidates"],
            true=result["gold_true"],
            which="every other one of those meetings" if result["timed_every"] == 2 else "those meetings",
            turns=s["turns"],
            chars=s["mean_chars"],
            pinning=result["pinning"],
            reps=s["repetitions"],
        ),
        "",
        "| | precision [95% Wilson CI] | recall [95% Wilson CI] | TP / FP / FN |",
        "|---|---|---|---|",
    ]
    names = {
        "ours": "**ours** (`NameScrubber`)",
        "presidio": "Presidio deny-list recognizer",
        "regex": "plain regex deny list (`scrub_eval.deny_list`)",
    }
    for key, label in names.items():
        x = a[key]["all"]
        lines.append(
            f"| {label} | {x['precision']:.4f} [{x['precision_ci'][0]:.4f}, {x['precision_ci'][1]:.4f}] | "
            f"{x['recall']:.4f} [{x['recall_ci'][0]:.4f}, {x['recall_ci'][1]:.4f}] | "
            f"{x['tp']} / {x['fp']} / {x['fn']} |"
        )
    lines.append(f"| target | >= {result['target_precision']} | >= {result['target_recall']} | |")
    lines += [
        "",
        f"Of Presidio's misses, {a['presidio']['missed_regex_caught']} are mentions that the plain regex "
        "deny list finds, mostly because it folds the text's diacritics: a deny list matches the text as "
        "written, so a name the roster spells without an accent is missed wherever the transcript writes "
        "it with one (the corpus's `Sian` / `Siân` case).",
        "",
        "By source (precision / recall):",
        "",
        "| source | ours | Presidio deny-list |",
        "|---|---|---|",
    ]
    for source in ("earnings21", "qmsum/committee"):
        o, p = a["ours"][source], a["presidio"][source]
        lines.append(
            f"| {source} | {o['precision']:.4f} / {o['recall']:.4f} | "
            f"{p['precision']:.4f} / {p['recall']:.4f} |"
        )
    o, p = s["ours"], s["presidio"]
    lines += [
        "",
        "| speed | ours | Presidio deny-list | ratio |",
        "|---|---|---|---|",
        f"| turns/s (wall clock, median) | {o['median']:,.0f} | {p['median']:,.0f} | "
        f"{o['median'] / p['median']:.2f} |",
        f"| turns/s (CPU time, median) | {o['median_cpu']:,.0f} | {p['median_cpu']:,.0f} | "
        f"{o['median_cpu'] / p['median_cpu']:.2f} |",
        f"| build per meeting, cold, incl. first call (CPU ms), median / max | {o['build_median_ms']:.1f} / "
        f"{o['build_max_ms']:.0f} | {p['build_median_ms']:.1f} / {p['build_max_ms']:.0f} | |",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 repetitions, every other meeting timed")
    args = parser.parse_args(argv)
    print(f"machine: {machine.line(machine.describe())}")
    print(markdown(run(quick=args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
