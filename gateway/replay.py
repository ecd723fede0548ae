"""``consent-gateway replay``: a recorded meeting through the same core and shell, with no server.

Events are the generic API's, one JSON object a line. Time is each event's ``at`` (so pending windows
behave as they did), record ids are sequential, storage is a throw-away SQLite file, and every destination's
would-be request bodies are written as JSON lines. Operators use it to try a policy on a real transcript
before deploying it; tests use it to show that live serving forwards exactly the same content.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from gateway.delivery.items import Item, body
from gateway.model import Decision
from gateway.policy.compiled import Policy
from gateway.policy.load import PolicyError, load_policy
from gateway.runtime import Gateway, PolicySet, Result
from gateway.sinks import CollectSink
from gateway.store.sqlite import SQLiteStore
from gateway.web.problems import event_loc, field_path
from gateway.wire import EVENT_ADAPTER, is_known, to_event


class ReplayError(Exception):
    """A line of the events file that is not a valid event; the message names line and field."""


@dataclass(frozen=True, slots=True)
class ReplayOutput:
    items: list[Item]
    decisions: list[Decision]
    results: list[Result]


async def replay(policy: Policy, lines: Iterable[str], platform: str = "generic") -> ReplayOutput:
    """Run events through a fresh gateway; returns what each destination would receive, and every decision."""
    counter = itertools.count(1)
    sink = CollectSink()
    with tempfile.TemporaryDirectory(prefix="consent-gateway-replay-") as tmp:
        store = SQLiteStore(Path(tmp) / "replay.db")
        await store.open()
        try:
            gateway = Gateway(PolicySet([policy]), store, sink, new_id=lambda: f"replay-{next(counter):06d}")
            results, last = [], None
            for event in parse_events(lines):
                last = event.at
                results.append(await gateway.handle(platform, to_event(event, platform), now=event.at))
            if last is not None:
                await gateway.tick(last + timedelta(seconds=policy.spec.pending.window_seconds + 1))
            decisions = await store.decision_records()
        finally:
            await store.close()
    return ReplayOutput(sink.items, decisions, results)


def parse_events(lines: Iterable[str]) -> Iterator[Any]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nesting too deep to decode
            raise ReplayError(f"line {number}: not valid JSON") from None
        if not is_known(raw):
            continue
        try:
            yield EVENT_ADAPTER.validate_python(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = field_path(event_loc(err["loc"], raw["type"]))
            raise ReplayError(f"line {number}: {field}: {err['msg']}") from None


def summary(output: ReplayOutput) -> str:
    counts = Counter((d.destination, str(d.action)) for d in output.decisions)
    reasons = Counter(r for d in output.decisions for r in d.reasons)
    lines = ["destination        action    count"]
    lines += [f"{dest:<18} {action:<9} {n:>5}" for (dest, action), n in sorted(counts.items())]
    lines.append("reasons: " + ", ".join(f"{r}={n}" for r, n in sorted(reasons.items())))
    lines.append(f"requests a destination would receive: {len(output.items)}")
    return "\n".join(lines)


async def replay_file(
    policy_path: Path, events: Path, out_dir: Path | None, platform: str, stdout: TextIO, stderr: TextIO
) -> int:
    try:
        policy = load_policy(policy_path)
        with events.open(encoding="utf-8") as fh:
            output = await replay(policy, fh, platform)
    except (PolicyError, ReplayError, OSError) as exc:
        print(f"consent-gateway replay: {exc}", file=stderr)
        return 1 if isinstance(exc, PolicyError | ReplayError) else 2
    write_items(output.items, out_dir, stdout)
    print(summary(output), file=stderr)
    return 0


def write_items(items: list[Item], out_dir: Path | None, stdout: TextIO) -> None:
    if out_dir is None:
        for item in items:
            doc = {
                "destination": item.destination,
                "idempotency_key": item.idempotency_key,
                "body": json.loads(body(item, item.parts)),
            }
            stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for dest in sorted({i.destination for i in items}):
        with (out_dir / f"{dest}.jsonl").open("w", encoding="utf-8") as fh:
            for item in (i for i in items if i.destination == dest):
                fh.write(body(item, item.parts).decode() + "\n")
