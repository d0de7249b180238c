"""Opening a registry store from a URL: which backend, which file.

``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (SQLAlchemy's
convention), ``sqlite://`` or ``:memory:`` for a private in-memory database, or
a plain file path open SQLite; ``postgresql://…`` raises :class:`StoreError`
until that backend exists. Kept apart from :mod:`gateway.registry.store` (the
interface, pure) because it loads the database drivers.
"""

from __future__ import annotations

from typing import TypeVar

from gateway.errors import StoreError
from gateway.registry.sqlite_store import SqliteStore
from gateway.registry.store import Store

__all__ = ["open_store", "opened", "sqlite_path"]

_SQLITE_PREFIX = "sqlite://"
_POSTGRES_PREFIXES = ("postgresql://", "postgres://", "postgresql+")


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open the store a URL names, migrated unless ``migrate=False``.

    Accepted: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``
    (SQLAlchemy's convention), ``sqlite://`` or ``:memory:`` for a private
    in-memory database, or a plain file path. ``postgresql://…`` raises
    :class:`StoreError`: the PostgreSQL backend is not available yet.
    """

    return opened(SqliteStore(sqlite_path(url)), migrate=migrate)


StoreT = TypeVar("StoreT", bound=Store)


def opened(store: StoreT, *, migrate: bool = True) -> StoreT:
    """``store`` connected and (unless ``migrate=False``) migrated; closed again if migrating fails."""
    store.open()
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store


def sqlite_path(url: str) -> str:
    """The SQLite file (or ``:memory:``) a store URL names; StoreError for other backends."""
    if url.startswith(_POSTGRES_PREFIXES):
        raise StoreError("PostgreSQL backend not available yet")
    if url.startswith(_SQLITE_PREFIX):
        path = url[len(_SQLITE_PREFIX) :]
        path = path[1:] if path.startswith("/") else path
        path = path or ":memory:"
    elif "://" in url:
        raise StoreError(f"unsupported store URL scheme: {url.split('://', 1)[0]!r}")
    else:
        path = url
    if not path:
        raise StoreError("empty store path")
    return path
