"""Consent channels as properties over random sequences, through ``runtime.Gateway`` with real SQLite.

1. Nothing participant A does through any channel (chat messages of every kind, consent API calls about
   anyone, naming delegations, standing consent for any e-mail) changes participant B's consent: neither
   B's entries in the live meeting state nor the accepted records about B or B's e-mail in the ledger.
2. A refused delegation never forwards anything: a participant whose only consent attempts were made by
   others, under delegations the policy refuses, never has a word forwarded, whatever else happens.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.consent.standing import StandingSubmitted
from gateway.events import (
    ConsentSubmitted,
    MeetingEnded,
    ParticipantJoined,
    ParticipantLeft,
    SegmentReceived,
)
from gateway.model import ConsentChoice, ContentKind, RecordOutcome, Segment
from gateway.policy.load import parse_policy
from gateway.runtime import Gateway, PolicySet
from gateway.sinks import CollectSink
from gateway.store.base import Store
from tests.conftest import fresh_store

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
MEETING = "m-props"
A, B = "p-a", "p-b"
EMAILS = {A: "a@example.org", B: "b@example.org"}
POLICY = """\
policy: channels
purposes:
  summary: {description: s, notice: n, notice_version: "s1"}
  training: {description: t, notice: n, notice_version: "t1"}
consent:
  channels: [api, chat, consent_page, standing]
  delegations:
    - {name: guardian, channels: [consent_page]}
  standing: {allowed: true, max_days: 30}
pending: {window_seconds: 20, max_segments_per_participant: 5}
destinations:
  - {id: live, url: "http://127.0.0.1:9/x", purposes: [summary]}
  - {id: trainer, url: "http://127.0.0.1:9/y", purposes: [summary, training], delivery: meeting_end}
"""
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

purposes = st.lists(st.sampled_from(["summary", "training"]), min_size=1, unique=True).map(tuple)
choices = st.sampled_from(list(ConsentChoice))
chat_texts = st.sampled_from(
    [
        "/consent summary",
        "/consent training",
        "/consent summary training",
        "/consent all",
        "/optout",
        "/consent status",
        "  /CONSENT ALL ",
        "yes",
        "I agree",
        "ok",
        "/consent b",
        "/consent for p-b",
    ]
)

# Steps A may take. ("api", subject, purposes, choice, delegation, channel) is a consent API call A makes
# (indicated_by A) about any subject; ("standing", email, purposes, choice) a standing-consent call by A.
a_steps = st.one_of(
    st.tuples(st.just("chat"), chat_texts),
    st.tuples(st.just("say"), st.just("words")),
    st.tuples(
        st.just("api"),
        st.sampled_from([A, B]),
        purposes,
        choices,
        st.sampled_from([None, "guardian", "admin"]),
        st.sampled_from(["api", "chat", "standing"]),
    ),
    st.tuples(st.just("standing"), st.sampled_from(list(EMAILS.values())), purposes, choices),
    st.tuples(st.just("rejoin")),
    st.tuples(st.just("wait"), st.integers(min_value=1, max_value=30)),
)
# B's own consent first, so that there is something of B's for A to try to change.
b_setup = st.lists(st.tuples(purposes, choices, st.sampled_from(["api", "chat", "consent_page"])), max_size=3)


class Driver:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.now = T0
        self.n = 0

    def tick(self, seconds: int = 1) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    async def handle(self, event: Any) -> None:
        await self.gateway.handle("generic", event, now=self.now)
        await self.gateway.tick(self.now)

    async def join(self, pid: str) -> None:
        await self.handle(ParticipantJoined("generic", MEETING, pid, pid, self.tick(), EMAILS[pid], True))

    async def consent(
        self, subject: str, by: str, ps: tuple[str, ...], choice: ConsentChoice, **kw: Any
    ) -> None:
        await self.handle(ConsentSubmitted("generic", MEETING, subject, ps, choice, by, at=self.tick(), **kw))

    async def segment(self, pid: str, text: str, kind: ContentKind = ContentKind.SPEECH) -> None:
        self.n += 1
        seg = Segment(MEETING, f"x{self.n}", pid, text, self.tick(), kind=kind)
        await self.handle(SegmentReceived("generic", seg))

    async def step(self, step: tuple[Any, ...]) -> None:
        kind = step[0]
        if kind == "chat":
            await self.segment(A, step[1], ContentKind.CHAT)
        elif kind == "say":
            await self.segment(A, step[1])
        elif kind == "api":
            _, subject, ps, choice, delegation, channel = step
            await self.consent(subject, A, ps, choice, channel=channel, delegation=delegation)
        elif kind == "standing":
            _, email, ps, choice = step
            submitted = StandingSubmitted("generic", email, ps, choice, EMAILS[A], self.tick())
            await self.gateway.record_standing(submitted, now=self.now)
        elif kind == "rejoin":
            await self.handle(ParticipantLeft("generic", MEETING, A, self.tick()))
            await self.join(A)
        elif kind == "wait":
            self.tick(step[1])


async def _b_view(gateway: Gateway, store: Store) -> tuple[Any, ...]:
    state = gateway.meeting("generic", MEETING)
    assert state is not None
    entries = tuple(sorted((k, v) for k, v in state.consents.items() if k[0] == B))
    records = [e.record for e in await store.ledger_entries()]
    about_b = tuple(
        r.record_id
        for r in records
        if r.subject in (B, f"email:{EMAILS[B]}") and r.outcome is RecordOutcome.ACCEPTED
    )
    return entries, about_b


async def _a_cannot_change_b(setup: Sequence[Any], steps: Sequence[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with fresh_store(Path(tmp)) as store:
            policy = parse_policy(POLICY.encode(), "channels.yaml")
            driver = Driver(Gateway(PolicySet([policy]), store, CollectSink()))
            await driver.join(A)
            await driver.join(B)
            for ps, choice, channel in setup:
                await driver.consent(B, B, ps, choice, channel=channel)
            before = await _b_view(driver.gateway, store)
            for step in steps:
                await driver.step(step)
            assert await _b_view(driver.gateway, store) == before
            about_b = [e.record for e in await store.ledger_entries() if e.record.subject == B]
            assert all(r.indicated_by == B for r in about_b if r.outcome is RecordOutcome.ACCEPTED)


@PROPS
@given(b_setup, st.lists(a_steps, min_size=1, max_size=25))
def test_nothing_participant_a_does_changes_participant_bs_consent(
    setup: list[Any], steps: list[tuple[Any, ...]]
) -> None:
    """No sequence of chat messages, consent API calls or standing-consent calls by A changes B's consent."""
    asyncio.run(_a_cannot_change_b(setup, steps))


# --- refused delegations ------------------------------------------------------------------------------

# The policy's only delegation is `guardian` through the consent page; these are all refused.
refused = st.tuples(
    st.sampled_from([A, "host-bot", "admin"]),
    purposes,
    st.sampled_from([ConsentChoice.GIVEN, ConsentChoice.GIVEN, ConsentChoice.WITHDRAWN]),
    st.sampled_from([None, "guardian", "admin", "parent"]),
    st.sampled_from(["api", "chat", "standing"]),
)
mixed = st.one_of(
    st.tuples(st.just("refused"), refused),
    st.tuples(st.just("b_says"), st.sampled_from([ContentKind.SPEECH, ContentKind.CHAT])),
    st.tuples(st.just("a_step"), a_steps),
)


async def _refused_never_forwards(steps: Sequence[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sink = CollectSink()
        async with fresh_store(Path(tmp)) as store:
            policy = parse_policy(POLICY.encode(), "channels.yaml")
            driver = Driver(Gateway(PolicySet([policy]), store, sink))
            await driver.join(A)
            await driver.consent(A, A, ("summary", "training"), ConsentChoice.GIVEN, channel="api")
            await driver.join(B)
            for kind, detail in steps:
                if kind == "refused":
                    by, ps, choice, delegation, channel = detail
                    await driver.consent(B, by, ps, choice, channel=channel, delegation=delegation)
                elif kind == "b_says":
                    await driver.segment(B, "b words", detail)
                elif detail[0] not in ("api", "standing"):  # A about B is covered by the first property
                    await driver.step(detail)
            await driver.handle(MeetingEnded("generic", MEETING, driver.tick(60)))
            forwarded = [p for item in sink.items for p in item.parts]
            assert all(p.participant_id != B for p in forwarded)
            about_b = [e.record for e in await store.ledger_entries() if e.record.subject == B]
            assert all(r.outcome is RecordOutcome.REJECTED for r in about_b)


@PROPS
@given(st.lists(mixed, min_size=1, max_size=25))
def test_a_refused_delegation_never_forwards_anything(steps: list[tuple[Any, ...]]) -> None:
    """Consent for B asserted by others under delegations the policy refuses never lets B's words out."""
    asyncio.run(_refused_never_forwards(steps))
