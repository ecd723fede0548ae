"""bench/scrub_baseline.py: the Presidio deny list built from a roster, and the report built from a result."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import scrub_baseline  # noqa: E402 - bench/ is not a package; path set up above
from scrub_eval import Meeting  # noqa: E402

MEETING = Meeting(
    "synthetic/1",
    ("Thanks, Siân. Over to you, Mr. Rota.", "Nothing to scrub here."),
    (("The Chair (Hon. Anthony Rota)", "Hon. Anthony Rota"), ("Siân Gwenllian",)),
)


def test_deny_list_has_full_names_and_parts_as_written_and_folded() -> None:
    words = set(scrub_baseline.deny_list(MEETING))
    assert {"Anthony Rota", "Anthony", "Rota", "Siân Gwenllian", "Sian Gwenllian", "Siân", "Sian"} <= words
    assert not words & {"The", "Chair", "Hon", "Hon."}  # roles and titles are not names


def test_report_from_a_result() -> None:
    score = {
        "tp": 9,
        "fp": 1,
        "fn": 1,
        "tn": 5,
        "precision": 0.9,
        "recall": 0.9,
        "precision_ci": (0.6, 0.98),
        "recall_ci": (0.6, 0.98),
    }
    tool = {"all": score, "earnings21": score, "qmsum/committee": score}
    rate = {
        "median": 2000.0,
        "median_cpu": 2100.0,
        "runs": [2000],
        "build_median_ms": 1.0,
        "build_max_ms": 2.0,
    }
    result = {
        "presidio_version": "x",
        "meetings": 1,
        "turns": 2,
        "gold_candidates": 16,
        "gold_true": 10,
        "timed_every": 1,
        "target_precision": 0.95,
        "target_recall": 0.99,
        "pinning": "pinned to CPU 0",
        "accuracy": {"ours": tool, "presidio": {**tool, "missed_regex_caught": 0}, "regex": tool},
        "speed": {
            "meetings": 1,
            "turns": 2,
            "mean_chars": 20.0,
            "repetitions": 1,
            "ours": rate,
            "presidio": {**rate, "median": 1000.0},
        },
    }
    rows = scrub_baseline.headline(result)
    assert [r[5] for r in rows] == ["**no**", "**no**", "-"]
    assert rows[2][3] == "2.00"
    assert "| turns/s (wall clock, median) | 2,000 | 1,000 | 2.00 |" in scrub_baseline.markdown(result)
    assert scrub_baseline.headline({"skipped": "why"}) == []
