"""The OpenAPI description of the ingest API, built from the same pydantic models that validate requests.

``python -m gateway.openapi > docs/openapi.yaml`` regenerates the file; a test fails if it is stale, so
the document and the validator cannot drift apart.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from gateway import __version__
from gateway.openapi_admin import SECURITY_SCHEME as ADMIN_SECURITY_SCHEME
from gateway.openapi_admin import admin_paths
from gateway.web.standing import StandingConsentIn
from gateway.wire import EVENT_ADAPTER

_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": _PROBLEM}}}


def build() -> dict[str, Any]:
    event_schema = EVENT_ADAPTER.json_schema(ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = event_schema.pop("$defs")
    schemas["Event"] = event_schema
    schemas["Batch"] = {
        "type": "object",
        "required": ["events"],
        "additionalProperties": False,
        "properties": {
            "events": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1000,
                "items": {"$ref": "#/components/schemas/Event"},
            }
        },
    }
    schemas["Results"] = {
        "type": "object",
        "properties": {
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": {"enum": ["accepted", "ignored", "rejected"]},
                        "reason": {"type": "string"},
                        "record_id": {"type": "string", "description": "Ledger record of a consent event"},
                    },
                },
            }
        },
    }
    schemas["StandingConsent"] = StandingConsentIn.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    schemas["Problem"] = {
        "type": "object",
        "description": "RFC 9457 problem details. `errors` names each invalid field by its path.",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "consent-gateway ingest API",
            "version": __version__,
            "description": "Meeting events in; only consented content out. See docs/api.md.",
        },
        "components": {
            "securitySchemes": {
                "adminBearer": ADMIN_SECURITY_SCHEME,
                "bearer": {"type": "http", "scheme": "bearer"},
                "standardWebhooks": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "webhook-signature",
                    "description": "Standard Webhooks: webhook-id, webhook-timestamp and "
                    "webhook-signature over the raw body",
                },
            },
            "schemas": schemas,
        },
        "security": [{"bearer": []}, {"standardWebhooks": []}],
        "paths": {**_paths(), **_channel_paths(), **admin_paths()},
    }


def _paths() -> dict[str, Any]:
    body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [{"$ref": "#/components/schemas/Event"}, {"$ref": "#/components/schemas/Batch"}]
                }
            }
        },
    }
    return {
        "/v1/events": {
            "post": {
                "summary": "Submit one event or a batch of events",
                "description": "Events apply in order. A batch with one invalid event changes nothing. "
                "Unknown "
                "`type` values are acknowledged with status `ignored`.",
                "requestBody": body,
                "responses": {
                    "200": {
                        "description": "Per-event results",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Results"}}},
                    },
                    "400": _problem("Malformed JSON or an invalid event; `errors[].field` names the field"),
                    "401": _problem("Missing or invalid bearer token or signature"),
                    "403": _problem("A single consent event the policy refuses (recorded in the ledger)"),
                    "409": _problem("A signed delivery whose webhook-id was already accepted"),
                    "413": _problem("Body larger than max_body_bytes (default 1 MiB)"),
                    "503": _problem("Storage unavailable: nothing was forwarded; retry"),
                },
            }
        },
        "/v1/stream": {
            "get": {
                "summary": "WebSocket: one event or batch per text message, one results or error reply each",
                "responses": {
                    "101": {"description": "Switching protocols"},
                    "401": _problem("Missing or invalid credentials"),
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "security": [],
                "responses": {"200": {"description": "The process answers"}},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: storage reachable, a policy loaded, workers alive",
                "security": [],
                "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}},
            }
        },
    }


def _channel_paths() -> dict[str, Any]:
    """The consent channels' integration endpoints (the consent page itself is HTML for participants)."""
    return {
        "/v1/meetings/{meeting_id}/participants/{participant_id}/consent-link": {
            "get": {
                "summary": "The participant's current personal consent link, to deliver to them privately",
                "parameters": [
                    {
                        "name": "platform",
                        "in": "query",
                        "required": False,
                        "description": "The platform the ids are of; needed only when two platforms use them",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {"description": "platform, meeting_id, participant_id, url, purposes, expires_at"},
                    "401": _problem("Missing or invalid credentials"),
                    "404": _problem("No current link for this participant"),
                    "409": _problem("The ids name a participant on several platforms: pass platform"),
                },
            }
        },
        "/v1/standing-consents": {
            "post": {
                "summary": "Record a standing consent for a platform-verified e-mail, if the policy allows",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/StandingConsent"}}
                    },
                },
                "responses": {
                    "200": {"description": "status and record_id"},
                    "400": _problem("Invalid body; the field is named"),
                    "401": _problem("Missing or invalid credentials"),
                    "403": _problem("Refused by the policy (the refusal is recorded)"),
                    "409": _problem(
                        "No loaded policy governs this platform (consent to give only: a refusal or "
                        "withdrawal is recorded even so)"
                    ),
                },
            }
        },
    }


def render() -> str:
    return yaml.safe_dump(build(), sort_keys=False, allow_unicode=True, width=110)


if __name__ == "__main__":
    sys.stdout.write(render())
