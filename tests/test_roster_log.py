"""The shared roster's pure half: folding changes in any order, and what a stored change holds.

Replicas fold their own changes at once and others' when notified, so each sees the same changes in its own
order. Whatever that order, every replica must end with the presence, display names and jurisdiction that the
newest changes set, and must know every name anyone was called (a name it lacks is a name it cannot scrub).
The database half (sealed rows, notifications, two replicas) is in ``tests/test_replication.py`` and
``tests/test_replicas.py``.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import engine, roster_log
from gateway.events import (
    MeetingEnded,
    MeetingStarted,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantRenamed,
)
from gateway.meeting import MeetingState
from gateway.roster_log import Latest, RosterChange, RosterEvent, StoredChange
from gateway.sealing import Keyring, SealingError

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
PIDS = ("p1", "p2", "p3")


def _event(kind: str, pid: str, name: str, jurisdiction: str | None) -> RosterEvent:
    if kind == "joined":
        return ParticipantJoined("generic", "m1", pid, name, NOW, f"{pid}@example.org")
    if kind == "left":
        return ParticipantLeft("generic", "m1", pid, NOW)
    if kind == "renamed":
        return ParticipantRenamed("generic", "m1", pid, name, NOW)
    if kind == "ended":
        return MeetingEnded("generic", "m1", NOW)
    return MeetingStarted("generic", "m1", NOW, jurisdiction=jurisdiction)


@st.composite
def histories(draw: st.DrawFn) -> list[RosterChange]:
    """A meeting's changes in sequence order; each participant's first change is a join, as on a platform.
    Ordinals as the store gives them: a participant's first join or rename takes the next one."""
    joined: set[str] = set()
    ordinals: dict[str, int] = {}
    changes: list[RosterChange] = []
    for seq in range(1, draw(st.integers(1, 14)) + 1):
        pid = draw(st.sampled_from(PIDS))
        kinds = ["joined", "left", "renamed", "started", "ended"] if pid in joined else ["joined", "started"]
        kind = draw(st.sampled_from(kinds))
        name = draw(st.sampled_from(["Ana Silva", "Ana S.", "Bo Chen", "Bob Chen", "Siân Evans", "Sian"]))
        jurisdiction = draw(st.sampled_from([None, "US-CA", "DE"]))
        if kind == "joined":
            joined.add(pid)
        ordinal = 0
        if kind in ("joined", "renamed"):
            ordinal = ordinals.setdefault(pid, len(ordinals) + 1)
        changes.append(RosterChange(seq, f"c{seq}", _event(kind, pid, name, jurisdiction), ordinal))
    return changes


def _fold_all(changes: list[RosterChange]) -> MeetingState:
    state, latest = engine.new_meeting("generic", "m1"), Latest()
    for change in changes:
        state = roster_log.fold(state, change, latest)
    return state


@given(histories(), st.randoms(use_true_random=False))
def test_any_order_of_folding_ends_where_the_newest_changes_say(
    history: list[RosterChange], rnd: random.Random
) -> None:
    shuffled = list(history)
    rnd.shuffle(shuffled)
    in_order, any_order = _fold_all(history), _fold_all(shuffled)
    for pid in {c.subject for c in history if c.subject}:
        mine = [c for c in history if c.subject == pid]
        presence = [c for c in mine if isinstance(c.event, ParticipantJoined | ParticipantLeft)][-1]
        naming = [c.event for c in mine if isinstance(c.event, ParticipantJoined | ParticipantRenamed)]
        person = any_order.participants[pid]
        assert person.present is isinstance(presence.event, ParticipantJoined)
        assert person.present is in_order.participants[pid].present
        assert person.name == naming[-1].name == in_order.participants[pid].name
        assert {e.name for e in naming} <= set(person.names)  # no name anyone used is lost
        assert person.ordinal == in_order.participants[pid].ordinal == next(c.ordinal for c in mine)
    started = [c.event for c in history if isinstance(c.event, MeetingStarted) and c.event.jurisdiction]
    assert any_order.jurisdiction == in_order.jurisdiction == (started[-1].jurisdiction if started else None)


@given(histories())
def test_folding_a_change_twice_changes_nothing(history: list[RosterChange]) -> None:
    state, latest = engine.new_meeting("generic", "m1"), Latest()
    for change in history:
        state = roster_log.fold(state, change, latest)
    for change in history:
        assert roster_log.fold(state, change, latest) is state


def test_in_order_the_fold_agrees_with_the_engine() -> None:
    """What a replica folds from the log is what the replica that received the events folded."""
    events: list[RosterEvent] = [
        MeetingStarted("generic", "m1", NOW, jurisdiction="US-CA"),
        ParticipantJoined("generic", "m1", "p1", "Ana Silva", NOW, "ana@example.org"),
        ParticipantJoined("generic", "m1", "p2", "Bo Chen", NOW),
        ParticipantRenamed("generic", "m1", "p2", "Bob Chen", NOW),
        ParticipantLeft("generic", "m1", "p1", NOW),
    ]
    from tests.test_engine import policy

    local = engine.new_meeting("generic", "m1")
    for event in events:
        local = engine.on_event(local, event, policy(), NOW).state
    ordinals = {"p1": 1, "p2": 2}
    folded = _fold_all(
        [
            RosterChange(n, f"c{n}", e, ordinals.get(getattr(e, "participant_id", ""), 0))
            for n, e in enumerate(events, 1)
        ]
    )
    assert folded.participants == local.participants
    assert folded.jurisdiction == local.jurisdiction


@pytest.mark.parametrize(
    "event",
    [
        ParticipantJoined("zoom", "m1", "p1", "Ana Silva", NOW, "ana@example.org", email_verified=True),
        ParticipantJoined("zoom", "m1", "p1", "Ana Silva", NOW),
        ParticipantLeft("zoom", "m1", "p1", NOW),
        ParticipantRenamed("zoom", "m1", "p1", "Ana S.", NOW),
        MeetingStarted("zoom", "m1", NOW, jurisdiction="DE"),
        MeetingStarted("zoom", "m1", NOW),
        MeetingEnded("zoom", "m1", NOW),
    ],
)
def test_a_stored_change_opens_to_the_event_it_was(event: RosterEvent) -> None:
    keyring = Keyring.generate()
    row = StoredChange(7, "c7", "zoom", "m1", 3, roster_log.seal(keyring, "c7", event))
    assert roster_log.opened(keyring, row) == RosterChange(7, "c7", event, 3)


def test_a_stored_change_holds_no_name_in_clear_and_opens_only_as_itself() -> None:
    keyring = Keyring.generate()
    event = ParticipantJoined("zoom", "m1", "p1", "Zanzibar Quixote", NOW, "zq@example.org")
    sealed = roster_log.seal(keyring, "c1", event)
    assert b"Zanzibar" not in sealed and b"zq@example" not in sealed
    with pytest.raises(SealingError):  # moved to another change's row
        roster_log.opened(keyring, StoredChange(2, "c2", "zoom", "m1", 1, sealed))
    with pytest.raises(SealingError):  # a replica that does not share the outbox keys
        roster_log.opened(Keyring.generate(), StoredChange(1, "c1", "zoom", "m1", 1, sealed))
