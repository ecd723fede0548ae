"""Measure name scrubbing against a hand-reviewed gold set drawn from the shared corpus.

Gold method (see docs/scrubbing.md): in every Earnings-21 call with real speaker names and every QMSum
committee meeting, each named speaker is a participant and, for evaluation, a target. A broad candidate
generator that does NOT use the scrubber proposes every word that could be a participant mention (name
parts in any case after folding, nicknames, edit distance <= 2 on capitalised words); each candidate is
labelled true (refers to a participant) or false; the scrubber is scored per candidate word.

    .venv/bin/python bench/scrub_eval.py                 # scores, CIs, errors, baseline, throughput, builds
    .venv/bin/python bench/scrub_eval.py --candidates F  # write unlabelled candidates (for annotation)
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import platform
import re
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway import nicknames as nd  # path set up above for `python bench/...`
from gateway.names import NameScrubber, NameTarget, fold, parse_display_name, variants

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus" / "meetings.jsonl.gz"
GOLD = ROOT / "tests" / "data" / "scrub_gold.jsonl"
_TOKEN = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


@dataclass(frozen=True)
class Meeting:
    meeting_id: str
    texts: tuple[str, ...]
    roster: tuple[tuple[str, ...], ...]
    """One entry per person: every raw display name that person has in the meeting."""


def load_meetings(path: Path = CORPUS) -> list[Meeting]:
    """Earnings-21 calls with named speakers and all committee meetings; ICSI/AMI/E22 are anonymised."""
    meetings = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            raw = json.loads(line)
            mid = raw["meeting_id"]
            if mid.startswith("earnings21/"):
                labels = list(raw["meta"].get("speaker_names", {}).values())
            elif mid.startswith("qmsum/committee/"):
                labels = sorted({t["speaker"] for t in raw["turns"] if t["speaker"]})
            else:
                continue
            roster = group_people(labels)
            if roster:
                meetings.append(Meeting(mid, tuple(t["text"] for t in raw["turns"]), roster))
    return meetings


def group_people(labels: list[str]) -> tuple[tuple[str, ...], ...]:
    """Labels that parse to the same name parts are one person ('Hon. X' and 'Hon. X (Minister of Y)')."""
    people: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for label in labels:
        parts = parse_display_name(label).parts
        if parts:
            people[tuple(fold(p)[0].lower() for p in parts)].append(label)
    return tuple(tuple(v) for v in people.values())


def targets_for(meeting: Meeting) -> list[NameTarget]:
    return [NameTarget(f"[participant {i + 1}]", names) for i, names in enumerate(meeting.roster)]


# ----------------------------------------------------------------------------------- candidates


def _tokens_of(name: str) -> set[str]:
    return {t for t in re.findall(r"[a-z]+", fold(name)[0].lower()) if len(t) >= 2}


def roster_vocab(meeting: Meeting) -> tuple[dict[str, set[int]], dict[str, set[int]]]:
    """Name-part tokens per person, and nickname/spelling expansions of them (generator side)."""
    exact: dict[str, set[int]] = defaultdict(set)
    expanded: dict[str, set[int]] = defaultdict(set)
    groups = nd.groups_by_name(nd.NICKNAME_GROUPS + nd.SPELLING_GROUPS)
    for person, names in enumerate(meeting.roster):
        for part in _name_parts(names):
            for tok in _tokens_of(part):
                exact[tok].add(person)
                for alt in groups.get(tok, ()):
                    expanded[alt].add(person)
    return exact, expanded


def _name_parts(names: tuple[str, ...]) -> set[str]:
    """Name parts as the gold candidates were generated: a part that is only a particle is skipped."""
    parts = {p for n in names for p in parse_display_name(n).parts}
    return {p for p in parts if fold(p)[0].lower().strip(".") not in nd.PARTICLES}


def damerau(a: str, b: str, limit: int = 2) -> int:
    """Optimal-string-alignment distance, cut off above ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def candidates(meeting: Meeting) -> Iterator[dict[str, object]]:
    """Every word that could be a participant mention, with the reason it was proposed."""
    exact, expanded = roster_vocab(meeting)
    long_tokens = [t for t in exact if len(t) >= 4]
    for ti, text in enumerate(meeting.texts):
        folded = fold(text)[0]
        for m in _TOKEN.finditer(folded):
            yield from _candidate(meeting.meeting_id, ti, m, exact, expanded, long_tokens)


def _candidate(
    mid: str,
    ti: int,
    m: re.Match[str],
    exact: dict[str, set[int]],
    expanded: dict[str, set[int]],
    long_tokens: list[str],
) -> Iterator[dict[str, object]]:
    word = m.group()
    for piece in re.finditer(r"[^\W\d_]+", word):
        key = piece.group().lower()
        if key in ("s",):
            continue
        start, end = m.start() + piece.start(), m.start() + piece.end()
        if key in exact:
            why = "exact"
        elif key in expanded:
            why = "nickname"
        elif piece.group()[0].isupper() and len(key) >= 4 and any(damerau(key, t) <= 2 for t in long_tokens):
            why = "fuzzy"
        else:
            continue
        yield {"meeting_id": mid, "turn": ti, "start": start, "end": end, "why": why}


# ----------------------------------------------------------------------------------- evaluation


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def load_gold(path: Path = GOLD) -> list[dict[str, object]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def covered(spans: tuple[tuple[int, int], ...], start: int, end: int) -> bool:
    return any(s < end and start < e for s, e in spans)


def predict(
    meetings: list[Meeting], gold: list[dict[str, object]], scrubber_for: object
) -> dict[tuple[str, int, int], bool]:
    """Scrubbed-or-not per gold candidate, with one scrubber per meeting."""
    by_turn: dict[tuple[str, int], list[dict[str, object]]] = defaultdict(list)
    for g in gold:
        by_turn[(str(g["meeting_id"]), int(g["turn"]))].append(g)  # type: ignore[call-overload]
    out: dict[tuple[str, int, int], bool] = {}
    for meeting in meetings:
        scrub = scrubber_for(meeting)  # type: ignore[operator]
        for ti, text in enumerate(meeting.texts):
            items = by_turn.get((meeting.meeting_id, ti))
            if not items:
                continue
            spans = scrub(text)
            for g in items:
                key = (meeting.meeting_id, ti, int(g["start"]))  # type: ignore[call-overload]
                out[key] = covered(spans, int(g["start"]), int(g["end"]))  # type: ignore[call-overload]
    return out


def ours(meeting: Meeting) -> object:
    scrubber = NameScrubber.build(targets_for(meeting))
    return lambda text: tuple((s.start, s.end) for s in scrubber.scrub(text)[1])


def deny_list(meeting: Meeting) -> object:
    """Presidio-style deny list: every roster name part as a whole word, any case, diacritics folded."""
    words = sorted(
        {t for names in meeting.roster for t in _tokens_of(" ".join(_name_parts(names)))},
        key=len,
        reverse=True,
    )
    pattern = re.compile(r"\b(?:" + "|".join(words) + r")\b", re.IGNORECASE) if words else None
    return lambda text: tuple(m.span() for m in pattern.finditer(fold(text)[0])) if pattern else ()


def score(gold: list[dict[str, object]], pred: dict[tuple[str, int, int], bool]) -> Counter[str]:
    """Confusion counts over every gold candidate (each candidate word is labelled, none sampled)."""
    counts: Counter[str] = Counter()
    for g in gold:
        hit = pred[(str(g["meeting_id"]), int(g["turn"]), int(g["start"]))]  # type: ignore[call-overload]
        counts["tp" if g["label"] and hit else "fn" if g["label"] else "fp" if hit else "tn"] += 1
    return counts


def report(name: str, c: Counter[str]) -> tuple[float, float]:
    """Print precision and recall with 95% Wilson intervals; return both."""
    n_p, n_r = c["tp"] + c["fp"], c["tp"] + c["fn"]
    p, r = c["tp"] / n_p if n_p else 1.0, c["tp"] / n_r if n_r else 1.0
    (p_lo, p_hi), (r_lo, r_hi) = wilson(c["tp"], n_p), wilson(c["tp"], n_r)
    print(
        f"{name}: precision {p:.4f} [95% Wilson {p_lo:.4f}, {p_hi:.4f}] (tp={c['tp']}, fp={c['fp']})  "
        f"recall {r:.4f} [{r_lo:.4f}, {r_hi:.4f}] (fn={c['fn']})"
    )
    return p, r


def errors_by_category(gold: list[dict[str, object]], pred: dict[tuple[str, int, int], bool]) -> None:
    counts: Counter[tuple[str, str]] = Counter()
    for g in gold:
        hit = pred[(str(g["meeting_id"]), int(g["turn"]), int(g["start"]))]  # type: ignore[call-overload]
        if bool(g["label"]) != hit:
            counts[("missed" if g["label"] else "false positive", str(g["category"]))] += 1
    for (kind, cat), n in sorted(counts.items()):
        print(f"  {kind:15} {cat:28} {n}")


def throughput(meetings: list[Meeting]) -> float:
    """Turns per second through scrub() over every evaluated turn (scrubber built beforehand)."""
    work = [(NameScrubber.build(targets_for(m)), m.texts) for m in meetings]
    n = sum(len(texts) for _, texts in work)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for scrubber, texts in work:
            for text in texts:
                scrubber.scrub(text)
        best = max(best, n / (time.perf_counter() - t0))
    return best


MEMOS = (
    variants.compile_heads,
    variants.wildcard_heads,
    variants.exact_forms,
    variants.orthographic_forms,
    parse_display_name,
)


def build_times(meetings: list[Meeting]) -> tuple[list[float], list[float]]:
    """CPU milliseconds per ``NameScrubber.build`` (CPU time: the wall clock of a shared machine varies).

    Cold: a fresh roster with every memo cleared. After a consent change: half the roster moved to the
    consenting participants, so the forms and the compiled pattern are the same."""
    cold, change = [], []
    for meeting in meetings:
        targets = targets_for(meeting)
        re.purge()
        for memo in MEMOS:
            memo.cache_clear()
        start = time.process_time()
        NameScrubber.build(targets)
        cold.append((time.process_time() - start) * 1000)
        half = len(targets) // 2 or 1
        start = time.process_time()
        NameScrubber.build(targets[:half], others=[t.names for t in targets[half:]])
        change.append((time.process_time() - start) * 1000)
    return cold, change


def corpus_throughput(meetings: list[Meeting], path: Path = CORPUS) -> tuple[float, int]:
    """Turns/s over all corpus turns (every source) with one 10-person roster from Earnings-21 names."""
    names = [names for m in meetings if m.meeting_id.startswith("earnings21/") for names in m.roster]
    scrubber = NameScrubber.build([NameTarget(f"[participant {i}]", n) for i, n in enumerate(names[:10])])
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        texts = [t["text"] for line in fh for t in json.loads(line)["turns"]]
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for text in texts:
            scrubber.scrub(text)
        best = max(best, len(texts) / (time.perf_counter() - t0))
    return best, len(texts)


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    info = Path("/proc/cpuinfo")
    if info.exists():
        names = [
            ln.split(":", 1)[1].strip() for ln in info.read_text().splitlines() if ln.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return f"{platform.platform()}; {cpu}; Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--candidates", type=Path, help="write candidates (unlabelled) to this file")
    args = parser.parse_args()
    meetings = load_meetings()
    if args.candidates:
        with args.candidates.open("w", encoding="utf-8") as fh:
            for meeting in meetings:
                for c in candidates(meeting):
                    fh.write(json.dumps(c) + "\n")
        return
    gold = load_gold()
    print(f"machine: {machine()}")
    print(
        f"gold: {len(gold)} candidates, {sum(bool(g['label']) for g in gold)} true, meetings {len(meetings)}"
    )
    mine, base = predict(meetings, gold, ours), predict(meetings, gold, deny_list)
    report("scrubber", score(gold, mine))
    report("deny-list baseline", score(gold, base))
    print("scrubber errors by category:")
    errors_by_category(gold, mine)
    n_turns = sum(len(m.texts) for m in meetings)
    print(
        f"throughput, gold meetings (own rosters, up to 66 people): {throughput(meetings):,.0f} turns/s "
        f"over {n_turns} turns"
    )
    rate, n_all = corpus_throughput(meetings)
    print(f"throughput, every corpus turn, 10-person roster: {rate:,.0f} turns/s over {n_all} turns")
    cold, change = build_times(meetings)
    print(
        f"build per gold meeting (CPU time): cold median {statistics.median(cold):.2f} ms, "
        f"max {max(cold):.1f} ms; after a consent change median {statistics.median(change):.2f} ms, "
        f"max {max(change):.1f} ms"
    )


if __name__ == "__main__":
    main()
