"""Figures the reliability suite reports: each test appends what it measured, `make reliability` collects.

When ``RELIABILITY_FIGURES`` names a file, ``record`` appends one JSON line per figure to it; otherwise it
does nothing (a plain ``pytest`` run). ``bench/reliability.py`` turns the file into ``docs/reliability.md``.
Figures are counts, ids and outcomes only: never transcript text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

VARIABLE = "RELIABILITY_FIGURES"


def scale(default: int, full: int) -> int:
    """A size for this run: ``full`` under ``make reliability`` (RELIABILITY_FULL=1), else ``default``."""
    return full if os.environ.get("RELIABILITY_FULL") == "1" else default


def record(section: str, name: str, value: object, detail: str = "") -> None:
    """Append one figure (``value`` must be JSON-able) under ``section`` of docs/reliability.md."""
    target = os.environ.get(VARIABLE)
    if not target:
        return
    line = json.dumps({"section": section, "name": name, "value": value, "detail": detail}, sort_keys=True)
    with Path(target).open("a", encoding="utf-8") as out:
        out.write(line + "\n")
