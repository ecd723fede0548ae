"""A stateful Hypothesis test of the whole service through its real HTTP API (issue 7).

Random meetings, joins, leaves, renames, consents, refusals, withdrawals, consent attempts on someone else's
behalf, segments (one by one and in batches), destination failures and clean restarts are sent to the real
aiohttp app on 127.0.0.1 port 0, on the suite's database (SQLite, or PostgreSQL), with fake AI services as a
``delivery: stream`` destination (``summariser``: summary), a ``delivery: batched`` one (``trainer``: summary
and training; segments several to a request, each under its own key) and a ``delivery: meeting_end`` one
(``minutes``: summary; each meeting's transcript when it ends, which must hold every part consented and not
withdrawn by then, across restarts). Events go through ``POST /v1/events`` with the
bearer token, as a platform sends them.

``tests.reliability.service_model`` is told what the gateway acknowledged. After every step the verifier
checks that no segment of a participant who had not consented, or who refused or withdrew, reached a
destination (nor anything queued before a withdrawal, once it was acknowledged; an attempt already on the
wire at that moment may land once, as the dispatcher's contract says). At ``settle`` steps and at the end
of each example, once delivery has drained (waiting for state, never for time), every consented segment
must have arrived, under one idempotency key (exactly once after de-duplication).

The policy has no pending window (``window_seconds: 0``): a segment of someone who has not decided is
dropped at once, so what may leave is fixed when the segment is acknowledged. Restarts are clean (the app
shuts down and drains for at most its own 5 s; a new app on the same database and outbox key delivers what
was left): killing a process mid-delivery is ``tests/test_outbox_faults.py``'s job. At the default size
destinations fail only transiently (a few 5xx or 429 answers, or a hung request: short backoffs, the circuit
stays closed); the full size (RELIABILITY_FULL=1) adds outages that last until a ``recover`` step: 503 to
everything, or the destination stopped (a ``Switch`` relay in front of each fake refuses connections and
cuts open ones, then listens again on the same port).

Rule arguments are small integers that pick from the model's own lists, so a falsifying example that
Hypothesis prints carries ids and counts, never words. The last test replays, step by step, the smallest loss
the machine found (content recovered after a restart, dropped as "withdrawn" when its meeting's first event
arrives while it is retried).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pydantic import SecretStr

from gateway.delivery import Dispatcher
from gateway.sealing import new_key_spec
from gateway.web.keys import GATEWAY
from tests.conftest import fresh_database
from tests.fakes.ai_service import FakeAIService
from tests.reliability.figures import record, scale
from tests.reliability.service_model import Model, Problem
from tests.web.harness import (
    SIGNING_SECRET,
    Dest,
    LiveGateway,
    Reply,
    event,
    policy_yaml,
    serving_policy,
    wait_for,
)

pytestmark = pytest.mark.reliability

FULL = scale(0, 1) == 1
EXAMPLES = scale(15, 200)
STEPS = scale(20, 50)
DESTINATIONS = (
    Dest("summariser", ("summary",)),
    Dest("trainer", ("summary", "training"), delivery="batched", batch_seconds=0.02, batch_max=4),
    Dest("minutes", ("summary",), delivery="meeting_end"),
)
STREAMED = ("summariser", "trainer")
"""Where faults are injected (a failed batch is retried whole, less what was withdrawn meanwhile).
``minutes`` gets each meeting's transcript at its end and is never made to fail: what it checks is that
parts kept for a transcript survive restarts and honour withdrawals."""
PURPOSE_SETS = (("summary", "training"), ("summary",), ("training",))
"""Choices by index; Hypothesis starts from (and shrinks towards) the first of a list, so it comes first."""
ON_JOINING = (("given", 0), ("given", 1), None, ("refused", 0))
"""What someone decides as they join: yes to both purposes, yes to summaries, not yet, no to both."""
DECISIONS = ("given", "given", "given", "refused", "withdrawn")
"""Mostly yes: much of what is said must then arrive, and each no has something to stop."""
NAMES = ("Ada", "Bob", "Cleo", "Dev", "Eve", "Finn", "Gus", "Hana", "Ivo", "Jun")
VOCABULARY = ("agenda", "budget", "ship", "review", "next", "week", "thanks", "later", "risk", "plan")
FAILURES = (500, 502, 503, 429)
BUDGET = 4
"""Failures planned per destination between settles (the circuit opens at five in a row)."""
DRAIN_LIMIT = 120.0
"""Seconds a settle may wait for delivery (an outage can leave backoffs of up to 30 s, plus the circuit)."""

T = TypeVar("T")
pick = st.integers(min_value=0, max_value=10_000)


@dataclass
class Tally:
    """What all examples of one run did, for the figures."""

    examples: int = 0
    steps: int = 0
    restarts: int = 0
    failures_injected: int = 0
    settles: int = 0
    outages: int = 0
    stopped_on_the_way: int = 0
    """(segment, destination) pairs a refusal or withdrawal caught before they reached the destination."""
    segments: int = 0
    required: int = 0
    forbidden: int = 0
    problems: list[str] = field(default_factory=list)


TALLY = Tally()


class Switch:
    """A TCP relay in front of a fake AI service that can be switched off (new connections refused, open
    ones cut mid-request) and on again on the same port: a destination process that stops, then returns."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    @property
    def on(self) -> bool:
        return self._server is not None

    async def switch_on(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def switch_off(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await server.wait_closed()
        await asyncio.gather(*self._links, return_exceptions=True)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just before the switch went off: reset, as a dead process would
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        ends = [writer]
        self._writers.add(writer)
        try:
            upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
            ends.append(upstream)
            self._writers.add(upstream)
            await asyncio.gather(_pipe(reader, upstream), _pipe(upstream_reader, writer))
        except OSError:
            pass  # the other end went away: so does this connection
        finally:
            for end in ends:
                self._writers.discard(end)
                end.transport.abort()
            self._links.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.transport.abort()


@dataclass
class Person:
    meeting_id: str
    participant_id: str
    name: int
    present: bool = True
    former: list[int] = field(default_factory=list)


class ServiceMachine(RuleBasedStateMachine):
    """One gateway (restarted now and then) on one database, two fake AI services, many meetings."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        TALLY.examples += 1
        self.root = root / f"example-{TALLY.examples}"
        self.root.mkdir()
        self.loop = asyncio.new_event_loop()
        self.stack = AsyncExitStack()
        self.live_stack: AsyncExitStack | None = None
        self.live: LiveGateway | None = None
        self.fakes: dict[str, FakeAIService] = {}
        self.switches: dict[str, Switch] = {}
        self.key = SecretStr(new_key_spec())
        self.database = ""
        self.policy = ""
        at_end = [d.id for d in DESTINATIONS if d.delivery == "meeting_end"]
        self.model = Model({d.id: d.purposes for d in DESTINATIONS}, at_end)
        self.meetings: list[str] = []
        self.ended: set[str] = set()
        self.people: list[Person] = []
        self.down: set[str] = set()
        self.planned = {d.id: 0 for d in DESTINATIONS}
        self.serial = 0
        self.since_restart = 0
        self.since_settle = 0
        self.broken = False
        self._run(self._start())

    # --- the loop this machine owns ---------------------------------------------------------------

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        try:
            return self.loop.run_until_complete(work)
        except BaseException:
            self.broken = True
            raise

    async def _start(self) -> None:
        self.database = await self.stack.enter_async_context(fresh_database(self.root))
        for dest in DESTINATIONS:
            fake = self.fakes[dest.id] = await self.stack.enter_async_context(FakeAIService(SIGNING_SECRET))
            switch = self.switches[dest.id] = Switch(urlsplit(fake.url).port or 0)
            await switch.switch_on()
            self.stack.push_async_callback(switch.switch_off)
        self.policy = policy_yaml({d: s.url for d, s in self.switches.items()}, DESTINATIONS, window=0)
        await self._serve()

    async def _serve(self) -> None:
        stack = AsyncExitStack()
        served = serving_policy(
            self.root, self.policy, fakes=self.fakes, database=self.database, outbox_keys=(self.key,)
        )
        self.live = await stack.enter_async_context(served)
        self.live_stack = stack

    async def _shut_down(self) -> None:
        stack, self.live_stack, self.live = self.live_stack, None, None
        if stack is not None:
            await stack.aclose()

    def teardown(self) -> None:
        try:
            if not self.broken:
                self._run(self._settle())  # the last word: everything consented arrived, nothing else
        finally:
            try:
                self.loop.run_until_complete(self._shut_down())
            finally:
                try:
                    self.loop.run_until_complete(self.stack.aclose())
                    self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                    self.loop.run_until_complete(self.loop.shutdown_default_executor())
                finally:
                    self.loop.close()
            counts = self.model.counts()
            TALLY.segments += counts["segments"]
            TALLY.required += counts["required"]
            TALLY.forbidden += counts["forbidden"]

    # --- talking to the gateway like a platform --------------------------------------------------

    @property
    def gateway(self) -> LiveGateway:
        assert self.live is not None, "the gateway is not serving"
        return self.live

    def _post(self, *events: dict[str, Any]) -> Reply:
        TALLY.steps += 1
        self.since_restart += 1
        self.since_settle += 1
        return self._run(self.gateway.post(*events))

    def _accepted(self, *events: dict[str, Any]) -> None:
        reply = self._post(*events)
        assert reply.status == 200, (events[0]["type"], reply.status)
        statuses = {r["status"] for r in reply.doc["results"]}
        assert statuses == {"accepted"}, (events[0]["type"], statuses)

    def _next(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}{self.serial}"

    def _counts(self) -> dict[str, int]:
        return {dest: len(fake.received) for dest, fake in self.fakes.items()}

    def _open(self) -> list[str]:
        return [m for m in self.meetings if m not in self.ended]

    def _present(self) -> list[Person]:
        return [p for p in self.people if p.present and p.meeting_id not in self.ended]

    def _text(self, person: Person, words: list[int]) -> str:
        """Words from a small vocabulary and the names (current and former) of people in the meeting."""
        names = [
            NAMES[n] for p in self.people if p.meeting_id == person.meeting_id for n in (p.name, *p.former)
        ]
        pool = (*VOCABULARY, *names)
        return " ".join(pool[w % len(pool)] for w in words) or VOCABULARY[0]

    # --- meetings and roster ------------------------------------------------------------------------

    @initialize(
        names=st.tuples(st.integers(0, len(NAMES) - 1), st.integers(0, len(NAMES) - 1)),
        choices=st.tuples(st.integers(0, len(ON_JOINING) - 1), st.integers(0, len(ON_JOINING) - 1)),
        opening=st.lists(
            st.tuples(st.booleans(), st.lists(st.integers(0, 63), min_size=1, max_size=4)), max_size=4
        ),
    )
    def first_meeting(
        self, names: tuple[int, int], choices: tuple[int, int], opening: list[tuple[bool, list[int]]]
    ) -> None:
        """Every example starts with a meeting of two people who may have decided already
        (``ON_JOINING``) and a few words from them, so that its steps have something to move (Hypothesis
        enables a random subset of the rules in each example, which may leave out every ``say``)."""
        self.start_meeting()
        for name, choice in zip(names, choices, strict=True):
            self.join(0, name, choice)
        if opening:
            self._say([(self.people[int(second)], words) for second, words in opening])

    @precondition(lambda self: len(self._open()) < 3)
    @rule()
    def start_meeting(self) -> None:
        meeting = self._next("m")
        self._accepted(event("meeting.started", meeting))
        self.meetings.append(meeting)

    @precondition(lambda self: len(self._open()) > 1)
    @rule(which=pick)
    def end_meeting(self, which: int) -> None:
        meeting = self._open()[which % len(self._open())]
        self._accepted(event("meeting.ended", meeting))
        self.ended.add(meeting)
        self.model.acknowledged_end(meeting)

    @precondition(lambda self: bool(self._open()))
    @rule(which=pick, name=st.integers(0, len(NAMES) - 1), choice=st.integers(0, len(ON_JOINING) - 1))
    def join(self, which: int, name: int, choice: int) -> None:
        """Someone joins, and may decide at once (``ON_JOINING``)."""
        meeting = self._open()[which % len(self._open())]
        person = Person(meeting, self._next("p"), name)
        self._accepted(self._joined(person, name))
        self.people.append(person)
        decided = ON_JOINING[choice]
        if decided is not None:
            self.decide(len(self.people) - 1, *decided)

    @staticmethod
    def _joined(person: Person, name: int) -> dict[str, Any]:
        return event(
            "participant.joined",
            person.meeting_id,
            participant={"id": person.participant_id, "name": NAMES[name]},
        )

    @precondition(lambda self: any(p.meeting_id not in self.ended for p in self.people))
    @rule(which=pick, name=st.integers(0, len(NAMES) - 1), as_join=st.booleans())
    def rename(self, which: int, name: int, as_join: bool) -> None:
        """A new display name: ``participant.joined`` again with the same id (also a rejoin), or
        ``participant.renamed``."""
        people = [p for p in self.people if p.meeting_id not in self.ended]
        person = people[which % len(people)]
        if as_join:
            self._accepted(self._joined(person, name))
            person.present = True
        else:
            renamed = {"participant_id": person.participant_id, "name": NAMES[name]}
            self._accepted(event("participant.renamed", person.meeting_id, **renamed))
        if name != person.name:
            person.former.append(person.name)
            person.name = name

    @precondition(lambda self: bool(self._present()))
    @rule(which=pick)
    def leave(self, which: int) -> None:
        person = self._present()[which % len(self._present())]
        self._accepted(event("participant.left", person.meeting_id, participant_id=person.participant_id))
        person.present = False

    # --- consent ------------------------------------------------------------------------------------

    @precondition(lambda self: bool(self.people))
    @rule(
        which=pick,
        decision=st.sampled_from(DECISIONS),
        purposes=st.integers(0, len(PURPOSE_SETS) - 1),
    )
    def decide(self, which: int, decision: str, purposes: int) -> None:
        """The participant's own choice through the integration API (any meeting, even one that ended:
        a withdrawal must work after the call too)."""
        person = self.people[which % len(self.people)]
        chosen = PURPOSE_SETS[purposes]
        self._accepted(self._consent(person, decision, chosen, person.participant_id))
        # no await since the answer came back: what is on the wire now was on the wire when it came
        in_flight = _on_the_wire(self.gateway.dispatcher, person.meeting_id, person.participant_id)
        taken = self.model.acknowledged_consent(
            person.meeting_id, person.participant_id, chosen, decision, self._counts(), in_flight
        )
        seen = {dest: self.model.seen(fake.received) for dest, fake in self.fakes.items()}
        TALLY.stopped_on_the_way += sum(sid not in seen[dest] for sid, dest in taken)

    @precondition(lambda self: len(self.people) > 1)
    @rule(which=pick, by=pick, purposes=st.integers(0, len(PURPOSE_SETS) - 1))
    def consent_on_behalf(self, which: int, by: int, purposes: int) -> None:
        """Someone else (a host, a bot) says yes for a participant: refused, and nothing changes."""
        person = self.people[which % len(self.people)]
        others = [p for p in self.people if p is not person]
        other = others[by % len(others)]
        reply = self._post(self._consent(person, "given", PURPOSE_SETS[purposes], other.participant_id))
        assert reply.status == 403, reply.status
        assert reply.doc["detail"] == "indicated_by_other", reply.doc["detail"]

    @staticmethod
    def _consent(person: Person, decision: str, purposes: tuple[str, ...], by: str) -> dict[str, Any]:
        return event(
            "consent",
            person.meeting_id,
            participant_id=person.participant_id,
            purposes=list(purposes),
            decision=decision,
            indicated_by=by,
            channel="api",
        )

    # --- what people say ----------------------------------------------------------------------------

    @precondition(lambda self: bool(self._present()))
    @rule(
        which=pick,
        words=st.lists(st.integers(0, 63), min_size=1, max_size=6),
        consenting=st.sampled_from([True, False]),
    )
    def say(self, which: int, words: list[int], consenting: bool) -> None:
        """Someone present speaks (``consenting``: someone whose words may leave, if anyone is)."""
        people = (consenting and self._speakers()) or self._present()
        self._say([(people[which % len(people)], words)])

    @precondition(lambda self: bool(self._present()))
    @rule(
        lines=st.lists(
            st.tuples(pick, st.lists(st.integers(0, 63), min_size=1, max_size=4)), min_size=2, max_size=6
        )
    )
    def say_in_a_batch(self, lines: list[tuple[int, list[int]]]) -> None:
        """Several segments, from several speakers of several meetings, in one request."""
        present = self._present()
        self._say([(present[which % len(present)], words) for which, words in lines])

    def _say(self, lines: list[tuple[Person, list[int]]]) -> None:
        events, ids = [], []
        for person, words in lines:
            sid = self._next("s")
            text = self._text(person, words)
            events.append(
                event(
                    "segment",
                    person.meeting_id,
                    segment_id=sid,
                    participant_id=person.participant_id,
                    text=text,
                )
            )
            ids.append((sid, person))
        self._accepted(*events)
        for sid, person in ids:
            self.model.acknowledged_segment(sid, person.meeting_id, person.participant_id)

    # --- faults -------------------------------------------------------------------------------------

    def _steady(self) -> list[str]:
        """Destinations that may be told to fail once more before the next settle: at most ``BUDGET``
        failures each, so that they never open the circuit (five in a row), whose 5 s cooldown would cost
        more time than the default size has. Decided from this machine's own count, never from timing."""
        return [d for d in STREAMED if self.planned[d] < BUDGET]

    def _plan(self, dest: str, count: int) -> int:
        count = min(count, BUDGET - self.planned[dest])
        self.planned[dest] += count
        TALLY.failures_injected += count
        return count

    @precondition(lambda self: bool(self._steady()))
    @rule(which=pick, count=st.integers(1, 3), status=st.sampled_from(FAILURES), now=st.booleans())
    def destination_fails(self, which: int, count: int, status: int, now: bool) -> None:
        """The next requests to a destination fail: answered with ``Retry-After: 0`` (retried at once), or
        without it (backoffs of at most 0.2, 0.4... s)."""
        dest = self._steady()[which % len(self._steady())]
        self.fakes[dest].fail_next(self._plan(dest, count), status=status, retry_after=0 if now else None)

    @precondition(lambda self: bool(self._steady()))
    @rule(which=pick, tenths=st.integers(1, 3))
    def destination_slow(self, which: int, tenths: int) -> None:
        """The next request to a destination hangs for a moment, then fails (504): what comes after it
        queues up behind it, so that consent changes meet content still on its way."""
        dest = self._steady()[which % len(self._steady())]
        self.fakes[dest].hang_next(self._plan(dest, 1), tenths / 10)

    def _speakers(self) -> list[Person]:
        """Present people whose words some destination may receive now."""
        dests = [d.id for d in DESTINATIONS]
        return [
            p
            for p in self._present()
            if any(self.model.allows(p.meeting_id, p.participant_id, d) for d in dests)
        ]

    @precondition(lambda self: bool(self._steady()) and bool(self._speakers()))
    @rule(
        which=pick,
        lines=st.lists(st.lists(st.integers(0, 63), min_size=1, max_size=4), min_size=1, max_size=3),
        decision=st.sampled_from(("refused", "withdrawn")),
        purposes=st.integers(0, len(PURPOSE_SETS) - 1),
        tenths=st.integers(1, 3),
    )
    def changes_mind_while_sent(
        self, which: int, lines: list[list[int]], decision: str, purposes: int, tenths: int
    ) -> None:
        """A destination is slow; someone who consented speaks, then refuses or withdraws while their words
        are still on the way (the random rules reach this only rarely): what was not sent must never be."""
        person = self._speakers()[which % len(self._speakers())]
        for dest in self._steady():
            self.fakes[dest].hang_next(self._plan(dest, 1), tenths / 10)
        self._say([(person, words) for words in lines])
        self.decide(self.people.index(person), decision, purposes)

    @precondition(lambda self: FULL)
    @rule(dest=st.sampled_from(STREAMED), stopped=st.booleans())
    def outage(self, dest: str, stopped: bool) -> None:
        """``dest`` answers 503 to everything, or is stopped (connections refused, open ones cut), until it
        recovers. Full size only: recovery costs the circuit breaker's cooldown and up to 30 s of backoff."""
        TALLY.outages += 1
        if stopped:
            self._run(self.switches[dest].switch_off())
        else:
            self.fakes[dest].fail_next(10_000, status=503)
        self.down.add(dest)

    @precondition(lambda self: bool(self.down))
    @rule(which=pick)
    def recover(self, which: int) -> None:
        dest = sorted(self.down)[which % len(self.down)]
        self._run(self._recover(dest))

    async def _recover(self, dest: str) -> None:
        self.fakes[dest].recover()
        await self.switches[dest].switch_on()
        self.down.discard(dest)

    @precondition(lambda self: self.since_restart >= 6)
    @rule()
    def restart(self) -> None:
        """A clean restart on the same database and outbox key: the new app delivers what the old one
        acknowledged and had not delivered yet."""
        TALLY.restarts += 1
        self._run(self._restart())

    async def _restart(self) -> None:
        self.since_restart = 0
        await self._shut_down()
        await self._serve()

    @precondition(lambda self: self.since_settle >= 6)
    @rule()
    def settle(self) -> None:
        """Destinations recover, delivery drains: every consented segment has arrived, once."""
        self._run(self._settle())

    async def _settle(self) -> None:
        TALLY.settles += 1
        self.since_settle = 0
        for dest in list(self.down):
            await self._recover(dest)
        for fake in self.fakes.values():
            fake.recover()  # failures planned and not met yet
        self.planned = dict.fromkeys(self.fakes, 0)
        live = self.gateway
        await wait_for(_drained(live), "delivery to drain and nothing to be held", DRAIN_LIMIT)
        problems = [p for dest, fake in self.fakes.items() for p in self.model.lost(dest, fake.received)]
        _fail_on(problems)

    # --- after every step ---------------------------------------------------------------------------

    @invariant()
    def nothing_leaked(self) -> None:
        problems: list[Problem] = []
        for dest, fake in self.fakes.items():
            problems += self.model.leaks(dest, fake.received)
            problems += self.model.duplicates(dest, fake.received)
        if problems:
            self.broken = True
        _fail_on(problems)


def _on_the_wire(
    dispatcher: Dispatcher, meeting_id: str, participant_id: str
) -> dict[tuple[str, str], set[str]]:
    """Idempotency keys of the attempts carrying the participant's segments that are on the wire now, by
    (destination, segment id): such an attempt began before a restriction acknowledged now took effect and
    cannot be recalled (the dispatcher's contract), so it may land at the destination after the answer."""
    wire: dict[tuple[str, str], set[str]] = {}
    for destination, segment_id, key in dispatcher.on_the_wire(meeting_id, participant_id):
        wire.setdefault((destination, segment_id), set()).add(key)
    return wire


def _drained(live: LiveGateway) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        if live.dispatcher.depth():
            return False
        return not any(state.held for state in live.app[GATEWAY].meetings())

    return check


def _fail_on(problems: list[Problem]) -> None:
    if problems:
        TALLY.problems += [str(p) for p in problems]
        raise AssertionError("; ".join(sorted({str(p) for p in problems})[:20]))


def test_the_service_never_leaks_and_never_loses(tmp_path: Path) -> None:
    """Random meetings, consent changes, faults and restarts: nothing leaks, nothing consented is lost."""
    started = time.monotonic()
    run_state_machine_as_test(
        lambda: ServiceMachine(tmp_path),  # type: ignore[arg-type]  # a factory is documented to work too
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            derandomize=not FULL,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    elapsed = time.monotonic() - started
    detail = (
        f"{EXAMPLES} examples x up to {STEPS} steps; one destination each stream, batched and meeting-end;"
        f" {elapsed:.0f} s"
    )
    record("stateful", "examples run", TALLY.examples, detail)
    record("stateful", "events posted", TALLY.steps, "requests to POST /v1/events")
    record("stateful", "segments checked", TALLY.segments, "acknowledged segments, every one verified")
    record("stateful", "deliveries required", TALLY.required, "(segment, destination) pairs due to arrive")
    record("stateful", "deliveries forbidden", TALLY.forbidden, "(segment, destination) pairs that must not")
    caught = "consented (segment, destination) pairs not sent yet when a refusal or withdrawal came"
    record("stateful", "withdrawn on the way", TALLY.stopped_on_the_way, caught)
    record("stateful", "restarts", TALLY.restarts, "clean restarts on the same database")
    record("stateful", "failures injected", TALLY.failures_injected, "failed or hung requests planned")
    record("stateful", "outages", TALLY.outages, "destination down until a recover step (full size)")
    record("stateful", "settles", TALLY.settles, "checkpoints where delivery drained and loss was checked")
    record("stateful", "leaks found", sum(p.startswith(("leak", "stranger")) for p in TALLY.problems))
    record("stateful", "lost segments", sum(p.startswith("lost") for p in TALLY.problems))
    record("stateful", "duplicates", sum(p.startswith("duplicate") for p in TALLY.problems))
    assert not TALLY.problems


def test_an_event_while_recovered_content_is_retried_loses_nothing(tmp_path: Path) -> None:
    """A restart leaves a consented segment in the outbox; the first event of its meeting reaches the new app
    while the recovered item is retried: the segment still arrives (a loss the stateful test found)."""
    machine = ServiceMachine(tmp_path)
    try:
        machine.first_meeting(names=(0, 1), choices=(1, 1), opening=[])  # both: yes to summaries
        machine.outage("summariser", stopped=True)
        machine.say(0, [1], consenting=False)  # acknowledged, consented, not deliverable yet
        machine.restart()  # the old app drains for 5 s, the new one recovers the segment from the outbox
        machine.recover(0)
        machine.fakes["summariser"].fail_next(4, status=503, retry_after=0)  # retried at once, four times
        machine.say(1, [2], consenting=False)  # the meeting's first event in the new app
        machine.settle()
    finally:
        machine.teardown()
