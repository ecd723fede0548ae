"""Chat commands: the in-meeting channel through which a participant changes their own consent.

``parse`` decides, from the text alone and the policy's configured command words, whether a chat message is
a command; it is strict on purpose, so ordinary chat ("yes", "I agree", "ok") is never consent: only an exact
command (case-insensitive, any whitespace between words) is. ``submissions`` turns a command into the
consent requests the shell records through the ordinary consent path, always about the *sender* and
indicated by the sender, and ``reply`` writes the gateway's answer. Pure: no I/O, no clock.

A command message itself is never content: ``dropped`` gives the decisions that say so (reason
``consent_command``), one per destination. Nothing here echoes the message text into a record or a reply.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from gateway.engine import drop_decision
from gateway.events import ConsentSubmitted, SegmentReceived
from gateway.meeting import MeetingState
from gateway.model import ConsentChoice, ConsentState, ContentKind, Decision, Purpose, Segment
from gateway.policy.compiled import Policy
from gateway.policy.schema import ChatCommandsSpec

CHANNEL = "chat"
REASON = "consent_command"
RULE = "consent.chat_commands"
Verb = Literal["give", "all", "optout", "status"]


@dataclass(frozen=True, slots=True)
class Command:
    verb: Verb
    purposes: tuple[Purpose, ...] = ()
    """The purposes named after ``give`` (empty for the other verbs)."""


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.casefold().split())


def parse(text: str, commands: ChatCommandsSpec, purposes: Collection[Purpose]) -> Command | None:
    """The command ``text`` is, or None when it is ordinary chat.

    ``give`` must be followed only by purposes the policy declares; anything else after it (a typo, a
    sentence) is ordinary chat, so that no chat words can end up in the ledger as a purpose name.
    """
    words = _words(text)
    if not words:
        return None
    exact: tuple[tuple[Verb, str], ...] = (
        ("status", commands.status),
        ("all", commands.all),
        ("optout", commands.optout),
    )
    for verb, command in exact:
        if words == _words(command):
            return Command(verb)
    give = _words(commands.give)
    named = words[len(give) :]
    if words[: len(give)] != give or not named or any(w not in purposes for w in named):
        return None
    return Command("give", tuple(dict.fromkeys(named)))


def command_of(event: SegmentReceived, policy: Policy) -> Command | None:
    """The command a chat event carries; speech and chat without a sender never carry one."""
    segment = event.segment
    if segment.kind is not ContentKind.CHAT or segment.participant_id is None:
        return None
    return parse(segment.text, policy.spec.consent.chat_commands, policy.purposes)


def stop_ungoverned(
    event: SegmentReceived, last: Policy | None, held: Sequence[Purpose]
) -> ConsentSubmitted | None:
    """The withdrawal an opt-out typed in a meeting no loaded policy covers makes (a reload narrowed
    ``applies_to``): every channel can withdraw, so the words of the policy that last governed the meeting
    (else the default words) still stop everything, its purposes and ``held`` (every purpose the sender
    has a record for), so that nothing of the sender flows when a later policy covers the meeting again.
    Only the opt-out counts: with no policy, nothing can be given and there is no status to tell."""
    segment = event.segment
    sender = segment.participant_id
    if segment.kind is not ContentKind.CHAT or sender is None:
        return None
    commands = last.spec.consent.chat_commands if last is not None else ChatCommandsSpec()
    command = parse(segment.text, commands, ())
    purposes = tuple(dict.fromkeys((*(last.purposes if last is not None else ()), *held)))
    if command is None or command.verb != "optout" or not purposes:
        return None
    return _submitted(event, sender, purposes, ConsentChoice.WITHDRAWN)


def submissions(
    command: Command, event: SegmentReceived, state: MeetingState, policy: Policy
) -> tuple[ConsentSubmitted, ...]:
    """The consent requests a command makes: about the sender only, indicated by the sender."""
    segment = event.segment
    sender = segment.participant_id
    assert sender is not None
    everything = tuple(policy.purposes)
    if command.verb == "status":
        return ()
    if command.verb == "give":
        return (_submitted(event, sender, command.purposes, ConsentChoice.GIVEN),)
    if command.verb == "all":
        return (_submitted(event, sender, everything, ConsentChoice.GIVEN),)
    # a stop covers every purpose given, also one the policy dropped on a reload (a later reload may bring
    # it back): "nothing of yours will be sent" must stay true
    held = tuple(dict.fromkeys((*everything, *state.purposes_of(sender))))
    given = tuple(p for p in held if state.consent(sender, p).at(segment.at) is ConsentState.GIVEN)
    others = tuple(p for p in everything if p not in given)
    out = []
    if given:
        out.append(_submitted(event, sender, given, ConsentChoice.WITHDRAWN))
    if others:
        out.append(_submitted(event, sender, others, ConsentChoice.REFUSED))
    return tuple(out)


def _submitted(
    event: SegmentReceived, sender: str, purposes: tuple[Purpose, ...], choice: ConsentChoice
) -> ConsentSubmitted:
    segment = event.segment
    return ConsentSubmitted(
        platform=event.platform,
        meeting_id=segment.meeting_id,
        participant_id=sender,
        purposes=purposes,
        choice=choice,
        indicated_by=sender,
        channel=CHANNEL,
        at=segment.at,
        evidence=f"chat:{segment.segment_id}",
    )


def dropped(segment: Segment, policy: Policy, now: datetime) -> tuple[Decision, ...]:
    """A command is addressed to the gateway: no destination receives it, and the log says why."""
    return tuple(drop_decision(segment, dest, policy, now, REASON, RULE) for dest in policy.destinations)


_STATE_WORDS = {
    ConsentState.UNKNOWN: "not decided",
    ConsentState.GIVEN: "yes",
    ConsentState.REFUSED: "no",
    ConsentState.WITHDRAWN: "no (withdrawn)",
    ConsentState.EXPIRED: "expired",
}
_REFUSALS = {
    "channel_not_allowed": "consent by chat is not accepted in this meeting",
    "unknown_purpose": "a purpose named is not one of this meeting's",
}


def reply(
    command: Command,
    rejected: Sequence[str],
    state: MeetingState,
    sender: str,
    policy: Policy,
    now: datetime,
) -> str:
    """The gateway's answer to the sender: what changed (or why not) and where they stand now."""
    if rejected:
        why = "; ".join(dict.fromkeys(_REFUSALS.get(r, r) for r in rejected))
        head = f"Not recorded: {why}. Your consent choices:"
    else:
        head = {
            "status": "Your consent choices:",
            "give": "Recorded. Your consent choices:",
            "all": "Recorded. Your consent choices:",
            "optout": "Recorded: nothing of yours will be sent. Your consent choices:",
        }[command.verb]
    return f"{head} {status_line(state, sender, policy.purposes, now)}"


def status_line(state: MeetingState, sender: str, purposes: Mapping[Purpose, object], now: datetime) -> str:
    return "; ".join(f"{p}: {_STATE_WORDS[state.consent(sender, p).at(now)]}" for p in purposes) + "."
