"""Who may send events: a bearer token, or a Standard Webhooks signature over the raw body.

Checked on the raw bytes before anything is parsed. A signed delivery whose id was already accepted within
the timestamp window (by this process, another replica sharing the store, or this process before a restart:
``gateway.web.replays``) is a replay and is refused with 409. Refusals are logged without the body.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping, Sequence

import structlog

from gateway import signing
from gateway.web.problems import Problem
from gateway.web.replays import DeliveryClaims, Replays

log = structlog.get_logger("gateway.auth")
_TOLERANCE = 300
REPLAY_WINDOW = 2 * _TOLERANCE
"""How long an accepted id is refused again: longer than a signature over it verifies (the timestamp may be
up to the tolerance in the future, and up to it in the past)."""


class Authenticator:
    def __init__(
        self,
        token: str | None,
        webhook_secrets: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        *,
        store: DeliveryClaims | None = None,
        scope: str = "events",
    ) -> None:
        """``store``: where accepted delivery ids are claimed for every replica (None: this process only);
        ``scope``: the endpoint, so that ids of different endpoints' senders never collide there."""
        self._token = token.encode() if token else None
        self._secrets = tuple(webhook_secrets)
        self._clock = clock
        self.replays = Replays(scope, REPLAY_WINDOW, store, clock)

    async def check(self, headers: Mapping[str, str], body: bytes) -> str:
        """The caller's identity for the record, or a 401/409 Problem."""
        scheme, _, credentials = headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self._token is not None:  # schemes are case-insensitive (RFC 9110)
            if hmac.compare_digest(credentials.strip().encode("utf-8", "surrogatepass"), self._token):
                return "bearer"
            return self._refuse("bad_token")
        if self._secrets and _signed(headers):
            return await self._check_signature(headers, body)
        return self._refuse("missing_credentials")

    async def _check_signature(self, headers: Mapping[str, str], body: bytes) -> str:
        now = int(self._clock())
        result = signing.verify(self._secrets, headers, body, now, tolerance=_TOLERANCE)
        if not result.ok:
            return self._refuse(result.reason or "bad_signature")
        # the id the signature covers: a header beside it (a webhook-id added to a signed svix-* set) is
        # the sender's to choose, and keying replays on it would let a captured delivery be sent again
        msg_id = result.msg_id or ""
        if not await self.replays.claim(msg_id):
            log.warning("ingest.replayed", msg_id=msg_id)
            raise Problem(
                409, "replayed", "This delivery was already accepted", detail="webhook-id seen before"
            )
        return f"webhook:{msg_id}"

    def accepted(self, caller: str) -> None:
        """The request of a signed delivery was applied: its id stays claimed for the whole window."""
        if caller.startswith("webhook:"):
            self.replays.confirm(caller.removeprefix("webhook:"))

    def release(self, caller: str) -> None:
        """Forget the delivery id of a request that was not accepted (bad body, storage down): the
        platform's retry of it is not a replay and must not be refused as one."""
        if caller.startswith("webhook:"):
            self.replays.release(caller.removeprefix("webhook:"))

    def _refuse(self, reason: str) -> str:
        log.warning("ingest.unauthenticated", reason=reason)
        raise Problem(401, "unauthenticated", "Missing or invalid credentials", detail=reason)


def _signed(headers: Mapping[str, str]) -> bool:
    return "webhook-signature" in headers or "svix-signature" in headers
