"""Notices: what the gateway must tell one participant privately, through the platform side.

A consent request carrying the participant's personal consent link when they join (or when a new purpose
appears), and a reply to their chat command. The core and the shell produce ``Notice`` values; how they
reach the platform (a signed callback, the platform's own API, the generic stream) is the notifier's job.
Notices carry links and gateway-written text only, never transcript text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

NoticeKind = Literal["consent_request", "chat_reply"]


@dataclass(frozen=True, slots=True)
class Notice:
    platform: str
    meeting_id: str
    participant_id: str
    kind: NoticeKind
    data: Mapping[str, Any] = field(default_factory=dict)


Notify = Callable[[Notice], None]
"""Hands a notice on without blocking (the shell's ``Gateway.notify``)."""


def discard(_: Notice) -> None:
    """The notifier of a gateway with nowhere to send notices (offline replay)."""
