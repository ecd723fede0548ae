"""Storage behind one contract (``gateway.store.base.Store``), chosen by the ``database`` URL."""

from __future__ import annotations

from gateway.store.base import Store

SCHEMES = ("sqlite:///", "postgresql://", "postgres://")


def open_store(url: str, *, read_only: bool = False) -> Store:
    """The store a database URL names (not yet opened): ``sqlite:///PATH`` or ``postgresql://...``.

    Any other scheme raises ``SettingsError`` naming the ``database`` setting (never echoing the URL, which
    may carry a password).
    """
    from gateway.settings import SettingsError

    if url.startswith("sqlite:///"):
        from gateway.store.sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"), read_only=read_only)
    if url.startswith(("postgresql://", "postgres://")):
        from gateway.store.postgres import PostgresStore

        return PostgresStore(url, read_only=read_only)
    scheme = url.split(":", 1)[0] if ":" in url else "(none)"
    raise SettingsError(
        f"database: unsupported URL scheme {scheme!r}; use sqlite:///PATH or postgresql://USER@HOST/DB"
    )
