"""Policy hot reload and shadow candidates: all or nothing, and a broken file keeps the old revision serving.

``PolicyManager.reload`` reads and compiles *every* configured policy file before touching anything; only if
all compile, and their destinations are the ones delivery was started with, is a new ``PolicySet`` swapped
onto the ``Gateway`` in one assignment. The swap happens with no ``await`` between the check and the
assignment, so an event sees either the old set or the new one, never a mix. Triggered by ``SIGHUP``
(installed by ``serve``) or ``POST /admin/v1/policy/reload``. Errors name file, line and key.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from gateway.delivery.items import DestinationConfig
from gateway.policy.compiled import Policy
from gateway.policy.load import PolicyError, load_policy
from gateway.runtime import Gateway, PolicySet
from gateway.settings import SettingsError
from gateway.shadow import OnDifference, Shadow

log = structlog.get_logger("gateway.reload")

Configs = Callable[[Sequence[Policy]], Mapping[str, DestinationConfig]]
"""The delivery configs a policy set needs (``app.destination_configs`` bound to the settings)."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """One policy file as loaded: where it came from and which revision it is."""

    file: str
    name: str
    revision: str

    @classmethod
    def of(cls, policy: Policy) -> Loaded:
        return cls(policy.source, policy.name, policy.revision)


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    revisions: tuple[Loaded, ...]
    """What is serving after the attempt (the old set if it failed)."""
    errors: tuple[str, ...] = ()
    """``file:line:column: key: message`` per problem."""

    def document(self) -> dict[str, Any]:
        policies = [_loaded_json(p) for p in self.revisions]
        return {"ok": self.ok, "policies": policies, "errors": list(self.errors)}


def _loaded_json(loaded: Loaded) -> dict[str, str]:
    return {"file": loaded.file, "name": loaded.name, "revision": loaded.revision}


def _load_all(files: Sequence[Path]) -> tuple[list[Policy], list[str]]:
    policies: list[Policy] = []
    errors: list[str] = []
    for path in files:
        try:
            policies.append(load_policy(path))
        except PolicyError as exc:
            errors.extend(str(issue) for issue in exc.issues)
    return policies, errors


class PolicyManager:
    """Which policy files serve, since when, and the last reload's outcome; reloads and sets shadows."""

    def __init__(
        self,
        files: Sequence[Path],
        configs: Configs,
        running: Mapping[str, DestinationConfig],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_difference: OnDifference | None = None,
        on_reload: Callable[[bool], None] | None = None,
    ) -> None:
        self.files = tuple(files)
        self._configs = configs
        self._running = dict(running)
        self._clock = clock
        self._on_difference = on_difference
        self._on_reload = on_reload
        self.loaded_at = clock()
        self.last_attempt: Outcome | None = None
        self.last_attempt_at: datetime | None = None
        self.shadow_files: tuple[Path, ...] = ()

    def reload(self, gateway: Gateway) -> Outcome:
        """Load every file; swap only if all load and delivery can serve them. Synchronous on purpose."""
        policies, errors = _load_all(self.files)
        if not errors:
            errors = self._destination_problems(policies)
        if errors:
            outcome = Outcome(False, self.status_of(gateway), tuple(errors))
            log.error("policy.reload_failed", errors=list(errors))
        else:
            gateway.policies = PolicySet(policies)  # the one atomic swap
            self.loaded_at = self._clock()
            outcome = Outcome(True, self.status_of(gateway))
            log.info("policy.reloaded", revisions=[p.revision for p in policies])
        self.last_attempt, self.last_attempt_at = outcome, self._clock()
        if self._on_reload is not None:
            self._on_reload(outcome.ok)
        return outcome

    def _destination_problems(self, policies: Sequence[Policy]) -> list[str]:
        try:
            wanted = dict(self._configs(policies))
        except SettingsError as exc:
            return [str(exc)]
        changed = _changed(_fixed(wanted), _fixed(self._running))
        if changed:
            # delivery lanes, secrets and URLs are fixed at start; changing them safely needs a restart
            return [f"destinations: {changed} differ from the running ones; restart to change them"]
        return []

    def set_shadow(self, gateway: Gateway, files: Sequence[Path]) -> Outcome:
        """Evaluate ``files`` beside the active policies (none: stop shadowing); all or nothing too."""
        policies, errors = _load_all(files)
        if errors:
            log.error("policy.shadow_failed", errors=errors)
            return Outcome(False, self.shadow_of(gateway), tuple(errors))
        gateway.shadow = Shadow(policies, self._on_difference) if policies else None
        self.shadow_files = tuple(files)
        log.info("policy.shadow_set", revisions=[p.revision for p in policies])
        return Outcome(True, self.shadow_of(gateway))

    @staticmethod
    def status_of(gateway: Gateway) -> tuple[Loaded, ...]:
        return tuple(Loaded.of(p) for p in gateway.policies.policies)

    @staticmethod
    def shadow_of(gateway: Gateway) -> tuple[Loaded, ...]:
        shadow = gateway.shadow
        return tuple(Loaded.of(p) for p in shadow.policies) if shadow else ()

    def status(self, gateway: Gateway) -> dict[str, Any]:
        last = self.last_attempt
        return {
            "policies": [_loaded_json(p) for p in self.status_of(gateway)],
            "loaded_at": self.loaded_at.isoformat(),
            "shadow": [_loaded_json(p) for p in self.shadow_of(gateway)],
            "last_reload": None
            if last is None or self.last_attempt_at is None
            else {"at": self.last_attempt_at.isoformat(), "ok": last.ok, "errors": list(last.errors)},
        }


POLICIES = web.AppKey("policy_manager", PolicyManager)


def install_sighup(gateway_of: Callable[[], Gateway], manager: PolicyManager) -> Callable[[], None]:
    """Reload on SIGHUP; returns the function that removes the handler."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, lambda: manager.reload(gateway_of()))

    def remove() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return remove


def _changed(wanted: Mapping[str, DestinationConfig], running: Mapping[str, DestinationConfig]) -> str:
    """What differs, by destination id and setting name only (a URL or secret may embed credentials)."""
    if wanted.keys() != running.keys():
        return "ids"
    names = [field.name for field in fields(DestinationConfig)]
    found = [
        f"{key}.{name}"
        for key, config in wanted.items()
        for name in names
        if getattr(config, name) != getattr(running[key], name)
    ]
    return ", ".join(found)


def _fixed(configs: Mapping[str, DestinationConfig]) -> dict[str, DestinationConfig]:
    """What of the delivery configs is fixed at start: all but the purposes, which delivery reads from the
    live policies (a destination whose purposes grow is checked against the new ones at once)."""
    return {key: replace(config, purposes=()) for key, config in configs.items()}
