"""A live gateway with two Zoom apps configured, a fake Zoom beside it, and the Zoom test fixtures.

``zoom_gateway`` writes a platforms file naming two Zoom apps (``main`` with RTMS credentials, ``other``
without), sets their secrets' environment variables, and starts the real app through the web harness.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import pytest

from gateway.platforms.zoom import ZOOM, ZoomWebhooks
from tests.fakes.zoom import Delivery, FakeZoom
from tests.web.harness import Dest, LiveGateway, serving

DATA = Path(__file__).resolve().parents[1] / "data" / "zoom"
SECRET = "zoom-test-secret-token"
OTHER_SECRET = "zoom-other-app-secret"
CLIENT_ID = "rtms-client-id"
CLIENT_SECRET = "rtms-client-secret"
UUID = "Wk3bCq0sQ+Ge2mL9pT1xZA=="
"""The meeting uuid of the fixtures in tests/data/zoom."""


def fixture_text(name: str, directory: Path = DATA, **subs: Any) -> str:
    text = (directory / name).read_text(encoding="utf-8")
    return Template(text).safe_substitute({k: str(v) for k, v in subs.items()})


def fixture(name: str, directory: Path = DATA, **subs: Any) -> Any:
    """A JSON fixture with its ``$NAME`` placeholders filled."""
    return json.loads(fixture_text(name, directory, **subs))


def platforms_yaml(download_base: str) -> str:
    return (
        "zoom:\n"
        "  - id: main\n"
        "    webhook_secret_env: CG_TEST_ZOOM_MAIN_SECRET\n"
        f"    client_id: {CLIENT_ID}\n"
        "    client_secret_env: CG_TEST_ZOOM_MAIN_CLIENT_SECRET\n"
        f"    download_base: {download_base}\n"
        "  - id: other\n"
        "    webhook_secret_env: CG_TEST_ZOOM_OTHER_SECRET\n"
        f"    download_base: {download_base}\n"
    )


@dataclass
class ZoomRig:
    gw: LiveGateway
    zoom: FakeZoom

    @property
    def service(self) -> ZoomWebhooks:
        return self.gw.app[ZOOM]

    async def send(self, doc: Any, secret: str = SECRET, **kwargs: Any) -> Delivery:
        return await self.zoom.deliver(self.gw.url, doc, secret, **kwargs)

    async def accept(self, *docs: Any) -> None:
        """Deliver each document, which must be accepted."""
        for doc in docs:
            reply = await self.send(doc)
            assert reply.status == 200 and reply.doc["status"] == "accepted", (doc["event"], reply)


@asynccontextmanager
async def zoom_gateway(
    tmp: Path, monkeypatch: pytest.MonkeyPatch, dests: Sequence[Dest] = (Dest("summariser"),), **kw: Any
) -> AsyncIterator[ZoomRig]:
    monkeypatch.setenv("CG_TEST_ZOOM_MAIN_SECRET", SECRET)
    monkeypatch.setenv("CG_TEST_ZOOM_MAIN_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("CG_TEST_ZOOM_OTHER_SECRET", OTHER_SECRET)
    async with FakeZoom() as zoom:
        path = tmp / "platforms.yaml"
        path.write_text(platforms_yaml(zoom.url))
        async with serving(tmp, dests, platforms_file=path, **kw) as gw:
            gw.app[ZOOM].download_retry_seconds = (0.02, 0.05)
            yield ZoomRig(gw, zoom)


def texts(gw: LiveGateway, destination: str | None = None) -> list[tuple[str | None, str, str]]:
    """(participant_id, kind, text) of every segment a fake AI service accepted, in order."""
    fake = gw.fakes[destination] if destination else gw.fake
    return [(s.get("participant_id"), s["kind"], s["text"]) for s in fake.segments()]
