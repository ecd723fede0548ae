"""Name scrubbing measured on the hand-labelled gold set over the shared corpus (see docs/scrubbing.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import shared_dir

pytestmark = pytest.mark.corpus

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_gold_precision_and_recall_meet_targets() -> None:
    """On the gold set, recall is at least 0.99 and precision at least 0.95."""
    corpus = shared_dir("corpus") / "meetings.jsonl.gz"
    sys.path.insert(0, str(BENCH))
    try:
        import scrub_eval
    finally:
        sys.path.remove(str(BENCH))
    meetings = scrub_eval.load_meetings(corpus)
    gold = scrub_eval.load_gold()
    counts = scrub_eval.score(gold, scrub_eval.predict(meetings, gold, scrub_eval.ours))
    recall = counts["tp"] / (counts["tp"] + counts["fn"])
    precision = counts["tp"] / (counts["tp"] + counts["fp"])
    assert recall >= 0.99, counts
    assert precision >= 0.95, counts
