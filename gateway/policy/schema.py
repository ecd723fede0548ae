"""The policy file schema: what an operator may write in ``policies/*.yaml``.

Strict on purpose: unknown or misspelt keys are errors (``extra="forbid"``), types are not coerced, and
cross-field rules (a destination naming an undeclared purpose) are checked here so that a policy that
loads is a policy that means what it says. The loader maps every error back to file, line and key.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
Mode = Literal["per_speaker", "all_party"]
Channel = Literal["api", "chat", "consent_page", "standing"]


class _Strict(BaseModel):
    # strict: YAML's "yes" must not become True, nor 60 become "60"; lists stay lists (the compiled
    # policy turns them into tuples).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, use_attribute_docstrings=True)


Language = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$")]


class PurposeTranslation(_Strict):
    description: str = Field(min_length=1)
    """``description`` in this language."""
    notice: str = Field(min_length=1)
    """``notice`` in this language: it must say the same as the original (its version is shared)."""


class PurposeSpec(_Strict):
    description: str = Field(min_length=1)
    """One line saying what the purpose is, shown on consent pages and receipts."""
    notice: str = Field(min_length=1)
    """The text a participant is shown before deciding."""
    notice_version: str = Field(min_length=1)
    """Changes whenever the notice changes; a consent names the version the participant saw, and a consent
    to an older version is refused. A consent counts only under the notice it was given to: after a reload
    that changes a purpose's version, those who consented under the old one are treated as undecided for
    it (their words wait, as pending) and are asked again."""
    translations: dict[Language, PurposeTranslation] = Field(default_factory=dict)
    """The description and notice in each further language of ``languages`` (same notice version)."""


class Delegation(_Strict):
    name: Identifier
    """Named on a consent request (``delegation: guardian``) by someone other than the subject."""
    channels: list[Channel] = Field(default_factory=lambda: list[Channel](["api"]))
    """Channels through which this delegation may be used."""


CommandText = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^\S+( \S+)*$")]


class ChatCommandsSpec(_Strict):
    give: CommandText = "/consent"
    """Followed by one or more purpose names (``/consent summary``): gives consent to those purposes."""
    all: CommandText = "/consent all"
    """Gives consent to every purpose of the policy."""
    optout: CommandText = "/optout"
    """Withdraws every given consent and refuses every other purpose."""
    status: CommandText = "/consent status"
    """Replies with the sender's current choices; changes nothing."""

    @model_validator(mode="after")
    def _distinct(self) -> ChatCommandsSpec:
        words = [c.casefold().split() for c in (self.give, self.all, self.optout, self.status)]
        if len({tuple(w) for w in words}) != len(words):
            raise ValueError("chat commands must differ from each other")
        return self


class StandingSpec(_Strict):
    allowed: bool = False
    """Whether a participant with a verified e-mail may hold a consent across meetings (also needs
    ``standing`` in ``consent.channels``)."""
    max_days: int = Field(default=365, ge=1, le=3650)
    """A standing consent lapses this many days after it was recorded, at the latest."""


class ConsentSpec(_Strict):
    channels: list[Channel] = Field(default_factory=lambda: list[Channel](["api", "chat", "consent_page"]))
    """Channels through which consent is given; a consent through another is refused and recorded. A
    refusal or withdrawal is accepted through any channel."""
    delegations: list[Delegation] = Field(default_factory=list)
    """Who may consent on someone else's behalf. Empty (the default): only the participant themselves."""
    max_age_days: int | None = Field(default=None, ge=1, le=3650)
    """A given consent expires this many days after it was recorded (None: lasts for the meeting)."""
    link_ttl_hours: int = Field(default=24, ge=1, le=24 * 90)
    """How long a participant's personal consent link works after it was sent."""
    chat_commands: ChatCommandsSpec = ChatCommandsSpec()
    """The exact chat messages (case-insensitive) that change the sender's own consent; any other chat
    message is content, never consent."""
    standing: StandingSpec = StandingSpec()
    """Consent held by a verified identity across meetings."""


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


DestinationKind = Literal["http", "websocket", "openai_summary"]
EnvName = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$")]
HttpUrl = Annotated[str, Field(pattern=r"^https?://")]
Text = Annotated[str, Field(min_length=1)]

KIND_FIELDS: dict[str, frozenset[str]] = {
    "http": frozenset({"url"}),
    "websocket": frozenset({"url"}),
    "openai_summary": frozenset({"base_url", "model", "prompt", "api_key_env", "summary_url"}),
}
"""The keys each destination kind needs; a key of another kind is an error, not silently ignored."""
_URL_SCHEMES = {"websocket": ("ws://", "wss://")}


class DestinationSpec(_Strict):
    id: Identifier
    """Names the destination in decisions and logs."""
    kind: DestinationKind = "http"
    """``http``: signed JSON POSTed to ``url``; ``websocket``: frames on one connection to ``url``,
    acknowledged one by one; ``openai_summary``: at meeting end the transcript goes to an OpenAI-compatible
    chat-completions API and its summary is POSTed to ``summary_url`` (see docs/destinations.md)."""
    # Kind-dependent keys validate their defaults too, so that a missing one is named where it belongs.
    url: str | None = Field(default=None, validate_default=True)
    """``http``: where signed JSON is POSTed (``http://`` or ``https://``); ``websocket``: the WebSocket to
    stream to (``ws://`` or ``wss://``). Required for those kinds, not used by ``openai_summary``."""
    purposes: list[Identifier] = Field(min_length=1)
    """Every purpose this service uses content for: a speaker must have consented to all of them."""
    delivery: Literal["stream", "batched", "meeting_end"] = Field(default="stream", validate_default=True)
    """``stream``: each segment as it is decided; ``batched``: segments decided as for ``stream``, sent
    several to a request (see ``batch_seconds``, ``batch_max_segments``); ``meeting_end``: the whole
    transcript once, scrubbed against consent as it stands at the end (required by ``openai_summary``)."""
    batch_seconds: float | None = Field(default=None, ge=0, le=3600)
    """``batched``: how long a segment may wait for others to join its request (default 5); 0 sends
    whatever is queued at once. The meeting's end and a shutdown send what waits without waiting."""
    batch_max_segments: int | None = Field(default=None, ge=1, le=1000)
    """``batched``: at most this many segments in one request (default 50); a full batch goes at once."""
    secret_env: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]*$")
    """Environment variable holding this destination's ``whsec_`` signing secret (else the gateway's)."""
    include_speaker_name: bool = True
    """Whether the (consenting) speaker's display name is sent with their words."""
    base_url: HttpUrl | None = Field(default=None, validate_default=True)
    """``openai_summary``: the API root; the gateway POSTs to ``{base_url}/chat/completions``."""
    model: Text | None = Field(default=None, validate_default=True)
    """``openai_summary``: the model named in the request."""
    prompt: Text | None = Field(default=None, validate_default=True)
    """``openai_summary``: the system prompt; the transcript is the user message."""
    api_key_env: EnvName | None = Field(default=None, validate_default=True)
    """``openai_summary``: environment variable holding the API key (sent as a bearer token)."""
    summary_url: HttpUrl | None = Field(default=None, validate_default=True)
    """``openai_summary``: where the summary is POSTed, signed like an ``http`` delivery."""
    erasure_url: HttpUrl | None = None
    """Where a deletion request is POSTed (signed, retried like any delivery) when a participant withdraws:
    it lists the segments and idempotency keys this destination received from them or may have received
    (an attempt that timed out or was reset after its body went out). It is owed durably from the moment
    the withdrawal is recorded, so a crash before it is sent does not lose it."""
    timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    """How long one delivery attempt may take in all (connect, send, answer) before it counts as failed and
    is retried; a hanging destination costs at most this per attempt."""
    retention_hours: float = Field(default=24.0, gt=0, le=24 * 90)
    """How long undelivered content waits in the outbox; after it, it is dropped with reason ``expired``."""

    @field_validator("url", "base_url", "model", "prompt", "api_key_env", "summary_url")
    @classmethod
    def _belongs_to_kind(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if kind is None:
            return value  # the kind itself is invalid, and that error names it
        wanted = info.field_name in KIND_FIELDS[kind]
        if wanted and value is None:
            raise ValueError(f"required when kind is {kind}")
        if not wanted and value is not None:
            raise ValueError(f"not used when kind is {kind}")
        if info.field_name == "url" and value is not None:
            schemes = _URL_SCHEMES.get(kind, ("http://", "https://"))
            if not value.startswith(schemes):
                raise ValueError(f"must start with {' or '.join(schemes)} when kind is {kind}")
        return value

    @field_validator("batch_seconds", "batch_max_segments")
    @classmethod
    def _batched_only(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("delivery", "batched") != "batched":
            raise ValueError("only used when delivery is batched")
        return value

    @field_validator("delivery")
    @classmethod
    def _summary_at_end(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("kind") == "openai_summary" and value != "meeting_end":
            raise ValueError(
                "must be meeting_end when kind is openai_summary (a summary needs the transcript)"
            )
        return value


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
    present lacks consent (judged for each segment when it is decided, among those present when it was
    said; a withdrawal later purges the withdrawer's own words everywhere, while words of others already
    decided still go)."""
    jurisdictions: dict[str, Mode] = Field(default_factory=dict)
    """Mode per jurisdiction code given on ``meeting.started``; others use ``mode``."""
    purposes: dict[Identifier, PurposeSpec] = Field(min_length=1)
    """The purposes a participant can consent to, each with its notice."""
    languages: list[Language] = Field(default_factory=lambda: ["en"], min_length=1)
    """Languages of the consent page; the first is the language ``purposes`` are written in, every other
    one needs a translation in each purpose."""
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
    def _translations(self) -> PolicySpec:
        wanted = set(self.languages[1:])
        for name, purpose in self.purposes.items():
            missing = sorted(wanted - set(purpose.translations))
            if missing:
                raise ValueError(f"purpose {name!r} has no translation for languages {missing}")
            extra = sorted(set(purpose.translations) - wanted)
            if extra:
                raise ValueError(f"purpose {name!r} translates into {extra}, which are not in languages[1:]")
        return self

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
