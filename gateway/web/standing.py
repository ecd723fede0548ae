"""``POST /v1/standing-consents``: a platform records a standing consent for an identity it has verified.

Authenticated like ``/v1/events`` (the credential is the platform vouching for the e-mail, and the record's
evidence names it). The body is validated whole before anything is recorded; the choice is recorded in the
consent ledger either way, and a refusal or withdrawal applies at once in every live meeting the identity
is in (``Gateway.record_standing``).
"""

from __future__ import annotations

import json
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.consent.standing import StandingSubmitted
from gateway.instant import Instant
from gateway.model import ConsentChoice
from gateway.web.ingest import caller_evidence
from gateway.web.keys import AUTH, GATEWAY
from gateway.web.problems import Problem, invalid

Short = Annotated[str, Field(min_length=1, max_length=64)]
Email = Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]


class StandingConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    platform: Short
    email: Email
    purposes: Annotated[list[Short], Field(min_length=1, max_length=32)]
    decision: ConsentChoice
    indicated_by: Annotated[str, Field(min_length=1, max_length=320)]
    at: Instant
    notice_version: Short | None = None
    delegation: Short | None = None
    evidence: Annotated[str, Field(max_length=256)] | None = None


async def post_standing(request: web.Request) -> web.Response:
    body = await request.read()
    auth = request.app[AUTH]
    caller = await auth.check(request.headers, body)
    try:
        doc = _parse(body)
        submitted = StandingSubmitted(
            platform=doc.platform,
            email=doc.email,
            purposes=tuple(doc.purposes),
            choice=doc.decision,
            indicated_by=doc.indicated_by,
            at=doc.at,
            evidence=caller_evidence(caller, doc.evidence),
            notice_version=doc.notice_version,
            delegation=doc.delegation,
        )
        result = await request.app[GATEWAY].record_standing(submitted)
    except BaseException:
        auth.release(caller)
        raise
    auth.accepted(caller)
    if result.status == "ignored":
        raise Problem(409, "no-policy", "No loaded policy governs this platform", detail="platform")
    if result.status == "rejected":
        raise Problem(
            403,
            "consent-refused",
            "Consent request refused",
            detail=result.reason,
            record_id=result.record_id,
        )
    return web.json_response({"status": result.status, "record_id": result.record_id})


def _parse(body: bytes) -> StandingConsentIn:
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Problem(400, "malformed-json", "Body is not valid JSON", detail="body") from None
    try:
        return StandingConsentIn.model_validate(raw)
    except ValidationError as exc:
        raise invalid(exc) from None
