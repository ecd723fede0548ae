"""Signed delivery ids, claimed in the store for as long as a signature over them can still verify.

A platform's signed delivery may be sent again by whoever captured it, within the signature's timestamp
window. Each process remembers what it accepted, but a replica behind the same load balancer, or this
process after a restart, would accept it again: a replayed consent would undo a later withdrawal. So the
id is also claimed here, in the store every replica shares, before anything of the delivery is applied.
Keys are hashes (``key_of``): no platform id is kept at rest. Plain SQL with ``?`` placeholders
(``outbox.numbered`` turns them into PostgreSQL's).
"""

from __future__ import annotations

import hashlib

SQLITE_TABLE = (
    "CREATE TABLE deliveries (key TEXT PRIMARY KEY, until REAL NOT NULL)",
    "CREATE INDEX deliveries_until ON deliveries (until)",
)
POSTGRES_TABLE = (
    "CREATE TABLE deliveries (key TEXT PRIMARY KEY, until DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX deliveries_until ON deliveries (until)",
)
CLAIM = (
    "INSERT INTO deliveries (key, until) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET until = excluded.until WHERE deliveries.until < ?"
    " RETURNING key"
)
"""A row back: claimed now (new, or the earlier claim had expired). None: a live claim holds it."""
FORGET_EXPIRED = "DELETE FROM deliveries WHERE until < ?"
RELEASE = "DELETE FROM deliveries WHERE key = ?"
EXTEND = "UPDATE deliveries SET until = ? WHERE key = ?"
"""A claim made for as long as applying its delivery may take, kept for its full window once applied."""


def key_of(scope: str, delivery_id: str) -> str:
    """The stored key of a delivery id in a scope (an endpoint and its senders): a hash, never the id."""
    # surrogatepass: ids are opaque platform text and may hold lone surrogates
    return hashlib.sha256(f"{scope}\x1f{delivery_id}".encode("utf-8", "surrogatepass")).hexdigest()
