"""The compiled policy: an immutable value the decision core evaluates, built once per load.

Rule ids cited by decisions are the policy paths that produced them (``destinations.summariser.purposes``,
``pending.window_seconds``...), so an auditor can find the exact line behind each decision.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gateway.model import DestinationId, Purpose
from gateway.policy.schema import (
    Delegation,
    DestinationKind,
    DestinationSpec,
    Mode,
    PolicySpec,
    PurposeSpec,
)


@dataclass(frozen=True, slots=True)
class Destination:
    id: DestinationId
    url: str
    """Where content goes: the POST or WebSocket URL, or for ``openai_summary`` the API's ``base_url``."""
    purposes: tuple[Purpose, ...]
    delivery: str
    secret_env: str | None
    include_speaker_name: bool
    kind: DestinationKind = "http"
    model: str | None = None
    prompt: str | None = field(default=None, repr=False)
    api_key_env: str | None = None
    summary_url: str | None = None
    erasure_url: str | None = None
    retention_hours: float = 24.0
    timeout_seconds: float = 10.0
    batch_max_segments: int | None = None
    """``batched`` delivery: segments per request at most (None: one request per item)."""
    batch_seconds: float = 0.0
    """``batched`` delivery: how long a segment may wait for others to join its request."""
    notices: tuple[str | None, ...] = ()
    """The notice version of each of ``purposes`` (same order): consent counts under these only."""

    @property
    def rule_id(self) -> str:
        return f"destinations.{self.id}.purposes"


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    revision: str
    source: str
    spec: PolicySpec
    destinations: tuple[Destination, ...]
    purposes: Mapping[Purpose, PurposeSpec]
    delegations: Mapping[str, Delegation]

    @property
    def short_revision(self) -> str:
        return self.revision[:12]

    def destination(self, dest_id: DestinationId) -> Destination:
        for dest in self.destinations:
            if dest.id == dest_id:
                return dest
        raise KeyError(dest_id)

    def mode_for(self, jurisdiction: str | None) -> Mode:
        if jurisdiction is not None:
            return self.spec.jurisdictions.get(jurisdiction, self.spec.mode)
        return self.spec.mode

    def mode_rule(self, jurisdiction: str | None) -> str:
        if jurisdiction is not None and jurisdiction in self.spec.jurisdictions:
            return f"jurisdictions.{jurisdiction}"
        return "mode"

    def applies(self, platform: str, meeting_id: str) -> bool:
        scope = self.spec.applies_to
        return any(fnmatch.fnmatchcase(platform, p) for p in scope.platforms) and any(
            fnmatch.fnmatchcase(meeting_id, m) for m in scope.meetings
        )

    def notice_version(self, purpose: Purpose) -> str | None:
        spec = self.purposes.get(purpose)
        return spec.notice_version if spec else None


def compile_spec(spec: PolicySpec, *, revision: str, source: str) -> Policy:
    destinations = tuple(
        Destination(
            id=d.id,
            url=d.url or d.base_url or "",  # the schema requires one of them for each kind
            purposes=tuple(dict.fromkeys(d.purposes)),
            delivery=d.delivery,
            secret_env=d.secret_env,
            include_speaker_name=d.include_speaker_name,
            kind=d.kind,
            model=d.model,
            prompt=d.prompt,
            api_key_env=d.api_key_env,
            summary_url=d.summary_url,
            erasure_url=None if d.erasure_url is None else str(d.erasure_url),
            retention_hours=d.retention_hours,
            timeout_seconds=d.timeout_seconds,
            **_batching(d),
            notices=tuple(_notice(spec, p) for p in dict.fromkeys(d.purposes)),
        )
        for d in spec.destinations
    )
    return Policy(
        name=spec.policy,
        revision=revision,
        source=source,
        spec=spec,
        destinations=destinations,
        purposes=MappingProxyType(dict(spec.purposes)),
        delegations=MappingProxyType({d.name: d for d in spec.consent.delegations}),
    )


def _notice(spec: PolicySpec, purpose: Purpose) -> str | None:
    found = spec.purposes.get(purpose)
    return found.notice_version if found else None


BATCH_SECONDS = 5.0
"""A ``batched`` destination's ``batch_seconds`` where the policy gives none."""
BATCH_MAX_SEGMENTS = 50
"""A ``batched`` destination's ``batch_max_segments`` where the policy gives none."""


def _batching(d: DestinationSpec) -> dict[str, Any]:
    if d.delivery != "batched":
        return {}
    return {
        "batch_max_segments": BATCH_MAX_SEGMENTS if d.batch_max_segments is None else d.batch_max_segments,
        "batch_seconds": BATCH_SECONDS if d.batch_seconds is None else d.batch_seconds,
    }
