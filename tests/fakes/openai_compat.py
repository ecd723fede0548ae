"""A fake OpenAI-compatible API: ``POST {base}/chat/completions`` as a real aiohttp server on 127.0.0.1.

It checks what the documented API checks (a bearer key; a JSON body with ``model`` and ``messages`` of
``{role, content}``), records each valid request, and answers in the documented shape
(``{"id", "object": "chat.completion", "created", "model", "choices": [{"index", "message": {"role",
"content"}, "finish_reason"}], "usage"}``) with a summary that says how many transcript lines it read.
It can be told to fail the next requests (with the API's ``{"error": {...}}`` body and ``Retry-After``),
hang, or answer something that is not a completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from tests.fakes.loopback import serve

PREFIX = "/v1"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "user", "assistant", "developer"]
    content: str


class _Request(BaseModel):
    # The real API accepts many more parameters; the gateway sends only these, so anything else is a bug.
    model_config = ConfigDict(extra="forbid", strict=True)
    model: str
    messages: list[_Message]


@dataclass(frozen=True)
class Completion:
    """One accepted request: its model, system prompt and user message."""

    model: str
    system: str
    user: str
    headers: dict[str, str]


@dataclass(frozen=True)
class _Plan:
    status: int = 200
    retry_after: str | None = None
    hang: float = 0.0
    raw: bytes | None = None


@dataclass
class FakeOpenAI:
    api_key: str
    requests: list[Completion] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    """Statuses of requests refused before any plan applied (401 bad key, 400 bad body)."""
    answer_model: str = "fake-model-2026-01-01"
    """The ``model`` the answers name (a provider's dated version of the one requested)."""
    _plans: deque[_Plan] = field(default_factory=deque)
    _runner: web.AppRunner | None = None
    _port: int = 0
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post(f"{PREFIX}/chat/completions", self._handle)
        self._runner, self._port = await serve(app)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}{PREFIX}"

    # -- programming failures --------------------------------------------------------------------------

    def fail_next(self, n: int, status: int, retry_after: str | None = None) -> None:
        self._plans.extend(_Plan(status, retry_after) for _ in range(n))

    def hang_next(self, n: int, seconds: float) -> None:
        self._plans.extend(_Plan(hang=seconds) for _ in range(n))

    def answer_next_raw(self, raw: bytes) -> None:
        """Answer the next request 200 with ``raw`` as its body."""
        self._plans.append(_Plan(raw=raw))

    # -- the endpoint ----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            self.refused.append(401)
            return _error(401, "invalid_api_key", "Incorrect API key provided.")
        try:
            sent = _Request.model_validate_json(await request.read())
        except ValidationError:
            self.refused.append(400)
            return _error(400, "invalid_request_error", "The request body is not a chat completion request.")
        system = "\n".join(m.content for m in sent.messages if m.role == "system")
        user = "\n".join(m.content for m in sent.messages if m.role == "user")
        self.requests.append(Completion(sent.model, system, user, dict(request.headers)))
        plan = self._plans.popleft() if self._plans else _Plan()
        if plan.hang:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), plan.hang)
        if plan.raw is not None:
            return web.Response(body=plan.raw, content_type="application/json")
        if plan.status != 200:
            extra = {} if plan.retry_after is None else {"Retry-After": plan.retry_after}
            return _error(plan.status, "server_error", "The server had an error.", extra)
        return web.json_response(self._completion(user))

    def _completion(self, user: str) -> dict[str, Any]:
        lines = user.splitlines()
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": 1_790_000_000,
            "model": self.answer_model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": f"{len(lines)} lines.",
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": len(user.split()), "completion_tokens": 6, "total_tokens": 0},
        }


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )
