"""Delivery: the last stage of the flow, sending allowed content to AI services.

``items`` holds the values (parts, items, destination settings, results), ``retry`` the pure retry policy,
``http`` one signed request, ``dispatcher`` the ordered lanes with retries and purge on withdrawal.
"""

from gateway.delivery.dispatcher import Allowed, Dispatcher, OnResult
from gateway.delivery.items import DestinationConfig, Item, Part, Result, Status

__all__ = ["Allowed", "DestinationConfig", "Dispatcher", "Item", "OnResult", "Part", "Result", "Status"]
