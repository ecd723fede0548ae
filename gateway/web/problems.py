"""HTTP error mapping, in one place: every error leaves as ``application/problem+json`` (RFC 9457).

Handlers raise ``Problem`` (or let aiohttp raise its HTTP exceptions, or let storage fail); the middleware
turns each into a problem document. Internal errors answer 500 or 503 without details and are logged with
the exception type only: an exception's message could, through a bug, carry content.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from gateway.store.base import StorageError

log = structlog.get_logger("gateway.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PROBLEM_JSON = "application/problem+json"
_TYPE_BASE = "https://consent-gateway.dev/problems/"


class Problem(Exception):
    def __init__(
        self, status: int, kind: str, title: str, *, detail: str | None = None, **extra: Any
    ) -> None:
        super().__init__(title)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.extra = extra

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"type": _TYPE_BASE + self.kind, "title": self.title, "status": self.status}
        if self.detail:
            doc["detail"] = self.detail
        return {**doc, **self.extra}

    def response(self) -> web.Response:
        body = json.dumps(self.document())
        return web.Response(status=self.status, text=body, content_type=PROBLEM_JSON)


def invalid(exc: ValidationError, prefix: Sequence[str | int] = (), tag: str | None = None) -> Problem:
    """400 naming each invalid field by its path (``events[2].participant.id``), never echoing values.

    ``tag``: the event's ``type`` when ``exc`` comes from the discriminated event union, whose error
    locations start with it; the field the client must fix is named without it."""
    errors = [
        {"field": field_path((*prefix, *event_loc(e["loc"], tag))), "message": e["msg"]} for e in exc.errors()
    ]
    first = errors[0]["field"] if errors else ""
    return Problem(
        400, "invalid-event", "Invalid event", detail=f"{first}: {errors[0]['message']}", errors=errors
    )


def event_loc(loc: Sequence[Any], tag: str | None) -> tuple[Any, ...]:
    """An error location without the discriminated union's tag (``("segment", "text")`` -> ``("text",)``)."""
    return tuple(loc[1:]) if tag is not None and loc and loc[0] == tag else tuple(loc)


def field_path(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as exc:
        return exc.response()
    except web.HTTPRequestEntityTooLarge as exc:
        return Problem(413, "too-large", "Request body too large", detail=exc.text).response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return Problem(exc.status, "http", exc.reason).response()
    except StorageError:
        log.error("storage.unavailable", path=request.path)
        return Problem(503, "storage-unavailable", "Storage unavailable; nothing was forwarded").response()
    except Exception as exc:
        log.error("internal.error", path=request.path, error=type(exc).__name__)
        return Problem(500, "internal", "Internal error; nothing was forwarded").response()
