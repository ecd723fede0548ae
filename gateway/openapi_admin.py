"""The OpenAPI description of the admin API (``/admin/v1``), merged into ``gateway.openapi``'s document.

Built from ``gateway.web.admin.ROUTES`` so that a route cannot exist undescribed (a test checks both ways).
"""

from __future__ import annotations

from typing import Any

from gateway.web.admin import PREFIX, ROUTES

_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_SECURITY: list[dict[str, list[str]]] = [{"adminBearer": []}]
SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "An admin token (read-write) or an auditor token (read-only) from the settings "
    "`admin_tokens` / `auditor_tokens`. The ingest token is refused.",
}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": _PROBLEM}}}


def _q(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


_TIME = {"type": "string", "format": "date-time"}
_FILTERS = [
    _q("meeting_id", "Only this meeting"),
    _q("participant_id", "Only this participant (the consent subject; the speaker of a decision)"),
    _q("purpose", "Only records naming this purpose (decisions: of destinations serving it)"),
    _q("since", "At or after this time (with a UTC offset)", _TIME),
    _q("until", "Before this time (with a UTC offset)", _TIME),
    _q("limit", "At most this many (1 to 10000, default 1000)", {"type": "integer"}),
    _q("offset", "Skip this many first", {"type": "integer"}),
]
_DECISION_FILTERS = [
    *_FILTERS,
    _q("action", "forward, redact, drop or hold", {"enum": ["forward", "redact", "drop", "hold"]}),
    _q("destination", "Only this destination id"),
    _q("shadow", "true: only shadow-policy decisions; false: only real ones", {"type": "boolean"}),
]
_PATH_PARAMS = {
    "platform": "Platform name (generic, zoom, teams...)",
    "meeting_id": "The platform's meeting id",
    "what": "ledger or decisions",
}

_DOCS: dict[str, dict[str, Any]] = {
    "/meetings": {"summary": "Live meetings with participant counts", "json": True},
    "/meetings/{platform}/{meeting_id}": {
        "summary": "A live meeting: participants (ids, join order, presence) and consent state per purpose",
        "json": True,
        "404": "No live meeting with this id",
    },
    "/ledger": {
        "summary": "Consent ledger entries with their chain hashes",
        "params": _FILTERS,
        "json": True,
    },
    "/ledger/verify": {
        "summary": "Verify the ledger's hash chain (optionally against a head kept elsewhere)",
        "params": [_q("expect_head", "The head hash recorded earlier; its absence is reported")],
        "json": True,
    },
    "/decisions": {
        "summary": "Decision-log records (ids, actions, reasons, rule ids; never text)",
        "params": _DECISION_FILTERS,
        "json": True,
    },
    "/export/{what}": {
        "summary": "Stream the whole ledger or decision log as JSON lines (re-verifiable) or CSV",
        "params": [_q("format", "jsonl (default) or csv", {"enum": ["jsonl", "csv"]})],
        "content": ["application/x-ndjson", "text/csv"],
        "404": "Unknown log",
    },
    "/policy": {
        "summary": "Loaded policy files and revisions, load time, shadow candidates, last reload",
        "json": True,
    },
    "/policy/reload": {
        "summary": "Reload every policy file, all or nothing (admin token only)",
        "json": True,
        "422": "A file does not load: the old policies keep serving; `errors` name file:line:column: key",
    },
    "/policy/shadow": {
        "summary": "Evaluate candidate policy files beside the active ones; `paths: []` stops (admin only)",
        "body": {
            "type": "object",
            "required": ["paths"],
            "additionalProperties": False,
            "properties": {"paths": {"type": "array", "items": {"type": "string"}, "maxItems": 16}},
        },
        "json": True,
        "422": "A candidate does not load; nothing changes",
    },
}


def _operation(path: str, role: str) -> dict[str, Any]:
    doc = _DOCS[path]
    params = [
        {"name": n, "in": "path", "required": True, "description": d, "schema": {"type": "string"}}
        for n, d in _PATH_PARAMS.items()
        if "{" + n + "}" in path
    ]
    ok: dict[str, Any] = {"description": "OK"}
    if doc.get("json"):
        ok["content"] = {"application/json": {"schema": {"type": "object"}}}
    for ctype in doc.get("content", ()):
        ok.setdefault("content", {})[ctype] = {"schema": {"type": "string"}}
    responses: dict[str, Any] = {"200": ok, "400": _problem("An invalid query parameter, named in `detail`")}
    responses["401"] = _problem("No token, the ingest token, or an unknown token")
    if role == "admin":
        responses["403"] = _problem("An auditor (read-only) token")
    for code in ("404", "422"):
        if code in doc:
            responses[code] = _problem(doc[code])
    op: dict[str, Any] = {"summary": doc["summary"], "security": _SECURITY, "tags": ["admin"]}
    op["parameters"] = params + doc.get("params", [])
    if "body" in doc:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": doc["body"]}}}
    op["responses"] = responses
    return op


def admin_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for method, path, _, role in ROUTES:
        paths.setdefault(PREFIX + path, {})[method.lower()] = _operation(path, role)
    paths["/metrics"] = {
        "get": {
            "summary": "Prometheus metrics (counts and latencies; bounded labels, no ids or text)",
            "security": [],
            "responses": {"200": {"description": "Prometheus text format"}},
        }
    }
    return paths
