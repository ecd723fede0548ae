"""Operational logs: structlog, JSON lines when not on a terminal, and a guard against content.

Transcript text must never reach a log (invariant 6). Code never passes it, and ``ContentGuard`` is the
second line: any event field whose name suggests content is replaced by its length before rendering.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

Processor = structlog.types.Processor

CONTENT_KEYS = frozenset({"text", "transcript", "body", "content", "payload", "message_content", "words"})


class ContentGuard:
    """Replace content-like fields with ``<withheld: N chars>``; an event name is never content."""

    def __init__(self, keys: frozenset[str] = CONTENT_KEYS) -> None:
        self.keys = keys

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in self.keys & event.keys():
            value = event[key]
            size = len(value) if isinstance(value, str | bytes | list | dict) else 0
            event[key] = f"<withheld: {size} chars>"
        return event


def configure(fmt: str = "auto", level: str = "info", stream: Any = None, *, final: bool = False) -> None:
    """Set up structlog. ``final``: this process will not reconfigure logging again (``serve``), so each
    module's logger is built once instead of on every call, which profiles showed at ~7 µs a log call,
    filtered debug calls included. Tests reconfigure between cases and leave it off."""
    stream = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            ContentGuard(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=final,
    )
