"""``consent-gateway policy test``: policy files ship with test cases, run through the real core.

A test file names the policy it tests (relative to itself) and lists cases. Each case is a short meeting in
the generic event format (``meeting_id`` may be omitted; ``at`` may be seconds from the meeting start) and
the expected outcome per segment and destination: the final action, optionally the forwarded text and
reasons, or the exact sequence of segment ids a destination receives. Cases run through ``replay``, so a
policy test exercises exactly what serving would do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TextIO

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.delivery.items import Item
from gateway.policy.compiled import Policy
from gateway.policy.load import PolicyError, load_policy
from gateway.replay import ReplayError, ReplayOutput, replay

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
MEETING = "policy-test"


class Expectation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    destination: str
    segment: str | None = None
    action: Literal["forward", "redact", "drop", "hold"] | None = None
    text: str | None = None
    reasons: list[str] = Field(default_factory=list)
    receives: list[str] | None = None
    """Segment ids the destination receives, in order (across all its requests)."""


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    events: list[dict[str, Any]]
    expect: list[Expectation]


class TestFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: str
    cases: list[Case] = Field(min_length=1)


async def run_directory(directory: Path, out: TextIO) -> int:
    files = _files(directory)
    if not files:
        print(f"no policy tests in {directory}", file=out)
        return 1
    passed = failed = 0
    for path in files:
        for name, problem in await run_file(path):
            print(f"{'PASS' if problem is None else 'FAIL'} {path.name}: {name}", file=out)
            if problem is not None:
                print(f"     {problem}", file=out)
            passed, failed = passed + (problem is None), failed + (problem is not None)
    print(f"{passed} passed, {failed} failed", file=out)
    return 1 if failed else 0


async def run_file(path: Path) -> list[tuple[str, str | None]]:
    """(case name, None if it passed or why it failed) for every case in a test file."""
    try:
        spec, policy = _load(path)
    except (OSError, yaml.YAMLError, ValidationError, PolicyError) as exc:
        return [(path.name, f"cannot load: {exc}")]
    results: list[tuple[str, str | None]] = []
    for case in spec.cases:
        try:
            output = await replay(policy, _lines(case.events))
        except ReplayError as exc:
            results.append((case.name, f"bad event: {exc}"))
            continue
        problems = [p for e in case.expect if (p := check(e, output)) is not None]
        results.append((case.name, "; ".join(problems) or None))
    return results


def _load(path: Path) -> tuple[TestFile, Policy]:
    spec = TestFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    return spec, load_policy(path.parent / spec.policy)


def _files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.yaml")) if directory.is_dir() else [directory]


def _lines(events: list[dict[str, Any]]) -> Iterator[str]:
    for event in events:
        event = {"meeting_id": MEETING, **event}
        if isinstance(event.get("at"), int | float):
            event["at"] = (EPOCH + timedelta(seconds=event["at"])).isoformat()
        yield json.dumps(event)


def check(expect: Expectation, output: ReplayOutput) -> str | None:
    if expect.receives is not None:
        got = [p.segment_id for i in output.items if i.destination == expect.destination for p in i.parts]
        return (
            None
            if got == expect.receives
            else f"{expect.destination} received {got}, expected {expect.receives}"
        )
    final = [
        d for d in output.decisions if d.segment_id == expect.segment and d.destination == expect.destination
    ]
    where = f"{expect.segment} -> {expect.destination}"
    if not final:
        return f"{where}: no decision"
    last = final[-1]
    if expect.action is not None and str(last.action) != expect.action:
        return f"{where}: action {last.action} ({', '.join(last.reasons)}), expected {expect.action}"
    missing = [r for r in expect.reasons if r not in last.reasons]
    if missing:
        return f"{where}: reasons {list(last.reasons)} lack {missing}"
    if expect.text is not None:
        return _check_text(expect, output.items, where)
    return None


def _check_text(expect: Expectation, items: list[Item], where: str) -> str | None:
    texts = [
        p.payload.get("text")
        for i in items
        if i.destination == expect.destination
        for p in i.parts
        if p.segment_id == expect.segment
    ]
    if not texts:
        return f"{where}: nothing received, expected text {expect.text!r}"
    return None if texts[-1] == expect.text else f"{where}: text {texts[-1]!r}, expected {expect.text!r}"
