"""Opening a registry store from a URL: which backend, which file.

``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (SQLAlchemy's
convention), ``sqlite://`` or ``:memory:`` for a private in-memory database, or
a plain file path open SQLite; ``postgresql://…`` (or ``postgres://``) opens
PostgreSQL (:class:`~gateway.registry.pg_store.PgStore`). Kept apart from
:mod:`gateway.registry.store` (the interface, pure) because it loads the drivers.
"""

from __future__ import annotations

from typing import TypeVar

from gateway.errors import StoreError
from gateway.registry.sqlite_store import SqliteStore
from gateway.registry.store import Store

__all__ = ["open_store", "opened", "postgres_url", "sqlite_path"]

_SQLITE_PREFIX = "sqlite://"
_POSTGRES_PREFIXES = ("postgresql://", "postgres://", "postgresql+")
_POSTGRES_SCHEMES = frozenset({"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"})


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open the store a URL names, migrated unless ``migrate=False``.

    Accepted: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``
    (SQLAlchemy's convention), ``sqlite://`` or ``:memory:`` for a private
    in-memory database, or a plain file path; ``postgresql://user[:pass]@host:port/db``
    (also ``postgres://`` and SQLAlchemy's ``postgresql+psycopg://``) for PostgreSQL.
    """
    pg = postgres_url(url)
    if pg is not None:
        from gateway.registry.pg_store import PgStore  # noqa: PLC0415 (psycopg only when asked for)

        return opened(PgStore(pg), migrate=migrate)
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


def postgres_url(url: str) -> str | None:
    """The libpq URL of a PostgreSQL store URL (SQLAlchemy's ``+driver`` dropped); None for others."""
    if not url.startswith(_POSTGRES_PREFIXES):
        return None
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _POSTGRES_SCHEMES:
        raise StoreError(f"unsupported store URL scheme: {scheme!r}")
    return f"postgresql://{rest}"


def sqlite_path(url: str) -> str:
    """The SQLite file (or ``:memory:``) a store URL names; StoreError for other backends.

    For callers that only exist on SQLite (file beside the database, SQLite-only tools).
    """
    if url.startswith(_POSTGRES_PREFIXES):
        raise StoreError("this needs a SQLite database; a postgresql:// URL is not a SQLite file")
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
