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
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, use_attribute_docstrings=True)


class PurposeSpec(_Strict):
    description: str = Field(min_length=1)
    """One line saying what the purpose is, shown on consent pages and receipts."""
    notice: str = Field(min_length=1)
    """The text a participant is shown before deciding."""
    notice_version: str = Field(min_length=1)
    """Changes whenever the notice changes; a consent names the version the participant saw, and a consent
    to an older version is refused."""


class Delegation(_Strict):
    name: Identifier
    """Named on a consent request (``delegation: guardian``) by someone other than the subject."""
    channels: list[Channel] = Field(default_factory=lambda: list[Channel](["api"]))
    """Channels through which this delegation may be used."""


class ConsentSpec(_Strict):
    channels: list[Channel] = Field(default_factory=lambda: list[Channel](["api", "chat", "consent_page"]))
    """Channels through which consent is accepted; a request through another is refused and recorded."""
    delegations: list[Delegation] = Field(default_factory=list)
    """Who may consent on someone else's behalf. Empty (the default): only the participant themselves."""
    max_age_days: int | None = Field(default=None, ge=1, le=3650)
    """A given consent expires this many days after it was recorded (None: lasts for the meeting)."""


class PendingSpec(_Strict):
    window_seconds: float = Field(default=60.0, ge=0, le=3600)
    """How long segments of a participant with unknown consent are held; 0 drops them at once."""
    release_on_consent: bool = True
    """Whether held segments are forwarded when consent arrives within the window (else they are dropped)."""
    on_expiry: Literal["drop"] = "drop"
    """What happens to held segments when the window ends: they are dropped, and the drop is logged."""
    max_segments_per_participant: int = Field(default=500, ge=0, le=100_000)
    """Held segments per participant at most; beyond it new segments are dropped (``hold_full``)."""
    max_chars_per_meeting: int = Field(default=2_000_000, ge=0, le=100_000_000)
    """Characters held per meeting at most (bounded memory)."""


class RedactionSpec(_Strict):
    speaker: Literal["drop"] = "drop"
    """What happens to a non-consenting speaker's utterance. Only ``drop`` exists: a placeholder in its
    place would still tell the destination when that person spoke (invariant 9)."""
    mentions: Literal["placeholder", "remove"] = "placeholder"
    """Name mentions of non-consenting participants in others' words: ``[participant N]`` or ``[name]``."""
    scrub_names: bool = True
    """Whether names of non-consenting participants are scrubbed from forwarded text."""


class DestinationSpec(_Strict):
    id: Identifier
    """Names the destination in decisions and logs."""
    url: str = Field(pattern=r"^https?://")
    """Where signed JSON is POSTed."""
    purposes: list[Identifier] = Field(min_length=1)
    """Every purpose this service uses content for: a speaker must have consented to all of them."""
    delivery: Literal["stream", "meeting_end"] = "stream"
    """``stream``: each segment as it is decided; ``meeting_end``: the whole transcript once, scrubbed
    against consent as it stands at the end."""
    secret_env: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]*$")
    """Environment variable holding this destination's ``whsec_`` signing secret (else the gateway's)."""
    include_speaker_name: bool = True
    """Whether the (consenting) speaker's display name is sent with their words."""


class AppliesTo(_Strict):
    platforms: list[str] = Field(default_factory=lambda: ["*"])
    """Shell-style patterns on the platform name (``generic``, ``zoom``...)."""
    meetings: list[str] = Field(default_factory=lambda: ["*"])
    """Shell-style patterns on the meeting id."""


class PolicySpec(_Strict):
    policy: Identifier
    """The policy's name, shown beside its revision."""
    description: str = ""
    """Free text for the people who read the policy."""
    applies_to: AppliesTo = AppliesTo()
    """Which meetings this policy governs; with several policies loaded, the first that applies wins, and a
    meeting no policy applies to has nothing forwarded."""
    mode: Mode = "per_speaker"
    """``per_speaker``: each speaker's own consent decides; ``all_party``: nothing is forwarded while anyone
    present lacks consent."""
    jurisdictions: dict[str, Mode] = Field(default_factory=dict)
    """Mode per jurisdiction code given on ``meeting.started``; others use ``mode``."""
    purposes: dict[Identifier, PurposeSpec] = Field(min_length=1)
    """The purposes a participant can consent to, each with its notice."""
    consent: ConsentSpec = ConsentSpec()
    """How consent may be given."""
    pending: PendingSpec = PendingSpec()
    """What happens to the words of someone whose consent is still unknown."""
    unattributed: Literal["drop"] = "drop"
    """Text nobody can be credited with is never forwarded (invariant 2); the key exists to say so."""
    redaction: RedactionSpec = RedactionSpec()
    """How non-consenting people are removed from what is forwarded."""
    destinations: list[DestinationSpec] = Field(default_factory=list)
    """The AI services content may go to."""

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
