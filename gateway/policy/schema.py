"""The policy file schema: what an operator may write in ``policies/*.yaml``.

Strict on purpose: unknown or misspelt keys are errors (``extra="forbid"``), types are not coerced, and
cross-field rules (a destination naming an undeclared purpose) are checked here so that a policy that
loads is a policy that means what it says. The loader maps every error back to file, line and key.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
Mode = Literal["per_speaker", "all_party"]
Channel = Literal["api", "chat", "consent_page", "standing"]


class _Strict(BaseModel):
    # strict: YAML's "yes" must not become True, nor 60 become "60"; lists stay lists (the compiled
    # policy turns them into tuples).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PurposeSpec(_Strict):
    description: str = Field(min_length=1)
    notice: str = Field(min_length=1)
    """The text a participant is shown before deciding."""
    notice_version: str = Field(min_length=1)


class Delegation(_Strict):
    name: Identifier
    """Named on a consent request (``delegation: guardian``) by someone other than the subject."""
    channels: list[Channel] = Field(default_factory=lambda: ["api"])


class StandingConsent(_Strict):
    allowed: bool = False
    max_days: int = Field(default=365, ge=1, le=3650)


class ConsentSpec(_Strict):
    channels: list[Channel] = Field(default_factory=lambda: ["api", "chat", "consent_page"])
    delegations: list[Delegation] = Field(default_factory=list)
    standing: StandingConsent = StandingConsent()
    max_age_days: int | None = Field(default=None, ge=1, le=3650)
    """A given consent expires this many days after it was recorded (None: lasts for the meeting)."""


class PendingSpec(_Strict):
    window_seconds: float = Field(default=60.0, ge=0, le=3600)
    """How long segments of a participant with unknown consent are held; 0 drops them at once."""
    release_on_consent: bool = True
    on_expiry: Literal["drop"] = "drop"
    max_segments_per_participant: int = Field(default=500, ge=0, le=100_000)
    max_chars_per_meeting: int = Field(default=2_000_000, ge=0, le=100_000_000)


class RedactionSpec(_Strict):
    speaker: Literal["drop"] = "drop"
    """What happens to a non-consenting speaker's utterance. Only ``drop`` exists: a placeholder in its
    place would still tell the destination when that person spoke (invariant 9)."""
    mentions: Literal["placeholder", "remove"] = "placeholder"
    """Name mentions of non-consenting participants in others' words: ``[participant N]`` or ``[name]``."""
    scrub_names: bool = True


class DestinationSpec(_Strict):
    id: Identifier
    url: str = Field(pattern=r"^https?://")
    purposes: list[Identifier] = Field(min_length=1)
    delivery: Literal["stream", "meeting_end"] = "stream"
    secret_env: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]*$")
    """Environment variable holding this destination's ``whsec_`` signing secret (else the gateway's)."""
    include_speaker_name: bool = True


class RetentionSpec(_Strict):
    queued_seconds: float = Field(default=86_400.0, gt=0)
    """Content not delivered by then is dropped with a logged reason."""


class AppliesTo(_Strict):
    platforms: list[str] = Field(default_factory=lambda: ["*"])
    meetings: list[str] = Field(default_factory=lambda: ["*"])
    """Shell-style patterns on the meeting id."""


class PolicySpec(_Strict):
    policy: Identifier
    description: str = ""
    applies_to: AppliesTo = AppliesTo()
    mode: Mode = "per_speaker"
    jurisdictions: dict[str, Mode] = Field(default_factory=dict)
    """Mode per jurisdiction code given on ``meeting.started``; others use ``mode``."""
    purposes: dict[Identifier, PurposeSpec] = Field(min_length=1)
    consent: ConsentSpec = ConsentSpec()
    pending: PendingSpec = PendingSpec()
    unattributed: Literal["drop"] = "drop"
    """Text nobody can be credited with is never forwarded (invariant 2); the key exists to say so."""
    redaction: RedactionSpec = RedactionSpec()
    destinations: list[DestinationSpec] = Field(default_factory=list)
    retention: RetentionSpec = RetentionSpec()

    @field_validator("jurisdictions")
    @classmethod
    def _jurisdiction_codes(cls, value: dict[str, Mode]) -> dict[str, Mode]:
        for code in value:
            if not re.fullmatch(r"[A-Z]{2}(-[A-Z0-9]{1,3})?", code):
                raise ValueError(f"jurisdiction code {code!r} is not ISO 3166 (e.g. US-CA)")
        return value

    @model_validator(mode="after")
    def _cross_references(self) -> PolicySpec:
        seen: set[str] = set()
        for dest in self.destinations:
            if dest.id in seen:
                raise ValueError(f"destination id {dest.id!r} appears twice")
            seen.add(dest.id)
            unknown = [p for p in dest.purposes if p not in self.purposes]
            if unknown:
                raise ValueError(f"destination {dest.id!r} names undeclared purposes {unknown}")
        return self
