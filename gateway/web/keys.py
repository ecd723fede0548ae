"""Typed application state: every collaborator a handler may reach, by ``web.AppKey``."""

from __future__ import annotations

from aiohttp import web

from gateway.delivery import Dispatcher
from gateway.runtime import Gateway
from gateway.settings import Settings
from gateway.store.base import Store
from gateway.web.auth import Authenticator

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
GATEWAY = web.AppKey("gateway", Gateway)
AUTH = web.AppKey("authenticator", Authenticator)
MAX_BODY = web.AppKey("max_body_bytes", int)
