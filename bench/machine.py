"""The machine a benchmark ran on, printed beside every figure so that figures are never read without it."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
    }


def line(info: dict[str, Any]) -> str:
    return (
        f"{info['platform']}, {info['cpu']}, {info['cores']} cores "
        f"({info['usable_cores']} usable), {info['python']}"
    )
