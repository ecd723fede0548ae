"""``consent-gateway serve``: settings, logs, secrets, then the aiohttp app until a signal stops it.

aiohttp's runner stops accepting on SIGINT/SIGTERM and runs the app's cleanup, which drains delivery.
SIGHUP reloads every policy file, all or nothing (``gateway.reload``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import structlog
from aiohttp import web

from gateway import logs, reload
from gateway.app import create_app
from gateway.policy.load import PolicyError
from gateway.settings import SettingsError, load_settings, redacted_url, with_generated_secrets
from gateway.web.keys import GATEWAY

_BACKLOG = 1024


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
