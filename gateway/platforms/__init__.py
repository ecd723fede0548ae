"""Platform adapters: each verifies a platform's raw traffic and parses it into ``gateway.events`` values.

One module per platform (``zoom``, ``zoom_rtms``, ...). Each offers ``setup(app, installs)``, which adds its
routes and cleanup contexts; ``setup_platforms`` calls the setup of every platform the platforms file
configures. Events reach the core only through ``app[GATEWAY].handle(platform, event)``.
"""

from __future__ import annotations

from aiohttp import web

from gateway.platforms.config import PlatformsConfig


def setup_platforms(app: web.Application, config: PlatformsConfig) -> None:
    """Add the routes and background work of every configured platform installation."""
    if config.zoom:
        from gateway.platforms import zoom

        zoom.setup(app, config.zoom)
    if config.recall:
        from gateway.platforms import recall

        recall.setup(app, config.recall)
    if config.teams:
        from gateway.platforms import teams

        teams.setup(app, config.teams)
    if config.meet:
        from gateway.platforms import meet

        meet.setup(app, config.meet)
