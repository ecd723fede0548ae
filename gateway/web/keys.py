"""Typed application state: every collaborator a handler may reach, by ``web.AppKey``."""

from __future__ import annotations

from aiohttp import web

from gateway.consent.links import ConsentLinks
from gateway.consent.receipts import ReceiptSigner
from gateway.delivery import Dispatcher
from gateway.notifier import Notifier
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
LINKS = web.AppKey("consent_links", ConsentLinks)
RECEIPTS = web.AppKey("receipt_signer", ReceiptSigner)
NOTIFIER = web.AppKey("notifier", Notifier)
