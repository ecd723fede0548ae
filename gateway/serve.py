"""``consent-gateway serve``: settings, logs, secrets, then the aiohttp app until a signal stops it.

aiohttp's runner stops accepting on SIGINT/SIGTERM and runs the app's cleanup, which drains delivery.
SIGHUP reloads every policy file, all or nothing (``gateway.reload``).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

import structlog
from aiohttp import web

from gateway import logs, reload
from gateway.app import create_app
from gateway.policy.load import PolicyError
from gateway.settings import SettingsError, load_settings, redacted_url, with_generated_secrets
from gateway.web.keys import GATEWAY

_BACKLOG = 1024
_GC_THRESHOLDS = (20_000, 20, 10)
"""Cyclic-GC thresholds while serving (CPython's defaults: 700, 10, 10). Each request allocates a few hundred
objects, so with the defaults a young collection ran every couple of segments and an older one often
enough to cost ~13% of the gateway's CPU in the ingest benchmark. Collections are not needed that often:
almost everything a request allocates is freed by reference counting as soon as it is answered."""


def serve(flags: Mapping[str, Any]) -> int:
    try:
        settings = with_generated_secrets(load_settings(flags))
        logs.configure(settings.log_format, settings.log_level, final=True)
        app = create_app(settings)
    except (SettingsError, PolicyError) as exc:
        print(f"consent-gateway: cannot start:\n{exc}", file=sys.stderr)
        return 2
    log = structlog.get_logger("gateway.serve")
    log.info(
        "gateway.starting",
        host=settings.host,
        port=settings.port,
        database=redacted_url(settings.database),
        policies=[str(p) for p in settings.policies],
        secrets_file=str(settings.secrets_file),
    )
    app.on_startup.append(_sighup)
    app.cleanup_ctx.append(_collect_less)  # last: after the Gateway and its policies are built
    # backlog: a platform reconnecting many streams at once (1,000 in bench/streams.py) overflows the
    # default of 128, and each refused SYN costs its client a one-second retransmit
    web.run_app(
        app, host=settings.host, port=settings.port, print=None, shutdown_timeout=10, backlog=_BACKLOG
    )
    return 0


async def _sighup(app: web.Application) -> None:
    # on_startup runs before cleanup_ctx has built the Gateway, so it is looked up when the signal comes
    remove = reload.install_sighup(lambda: app[GATEWAY], app[reload.POLICIES])

    async def uninstall(_: web.Application) -> None:
        remove()

    app.on_cleanup.append(uninstall)


async def _collect_less(_: web.Application) -> AsyncIterator[None]:
    """Once started: move everything built so far (policies, name tables, schemas) out of the collector's
    reach, since it lives as long as the process, and collect less often from then on."""
    gc.collect()
    gc.freeze()
    before = gc.get_threshold()
    gc.set_threshold(*_GC_THRESHOLDS)
    yield
    gc.set_threshold(*before)
    gc.unfreeze()
