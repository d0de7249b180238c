"""One way to reach kgw's PostgreSQL database: URL check and a psycopg 3 connection pool.

Why psycopg 3 (not asyncpg): kgw's stores are synchronous by design — each runs on
its own worker thread so a backend never sees two calls at once (see
:mod:`gateway.registry.store`) — and psycopg 3 has a first-class synchronous API
with server-side parameter binding, ``executemany`` pipelining and a maintained
pool (psycopg_pool), while asyncpg is asyncio-only and would force every store to
be rewritten as coroutines on the event loop the alarms must keep free.
"""

from __future__ import annotations

import psycopg
from psycopg_pool import ConnectionPool

from gateway.errors import StoreError

__all__ = ["POSTGRES_PREFIXES", "is_postgres_url", "open_pool"]

POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def is_postgres_url(url: str) -> bool:
    """Whether a store URL names a PostgreSQL database."""
    return url.startswith(POSTGRES_PREFIXES)


def open_pool(url: str, *, name: str, min_size: int = 1, max_size: int = 4, timeout: float = 10.0) -> ConnectionPool:
    """An open pool of connections to ``url`` (checked by connecting once); StoreError if unreachable.

    Connections are in autocommit mode off (psycopg's default): use
    ``with pool.connection() as conn, conn.transaction(): ...``.
    """
    if not is_postgres_url(url):
        raise StoreError(f"not a PostgreSQL URL: {url.split('://', 1)[0]!r}")
    # One direct connection first: a refused connection, a wrong password or an unknown database
    # fails now with the server's own words, instead of the pool retrying until its timeout.
    try:
        psycopg.connect(url, connect_timeout=max(1, round(timeout)), application_name=f"kgw-{name}").close()
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to PostgreSQL ({_safe(url)}): {_first_line(exc)}") from exc
    pool = ConnectionPool(
        url,
        name=name,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        open=False,
        # Checked on every checkout: after the server restarted, a dead connection is replaced, not used.
        check=ConnectionPool.check_connection,
        kwargs={"application_name": f"kgw-{name}"},
    )
    try:
        pool.open(wait=True, timeout=timeout)
    except Exception as exc:  # PoolTimeout, OperationalError: the server is not there or refuses us
        pool.close()
        raise StoreError(f"cannot connect to PostgreSQL ({_safe(url)}): {exc}") from exc
    return pool


def _first_line(exc: BaseException) -> str:
    """libpq's message without its hint lines (they repeat the host)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _safe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    scheme, _, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}@{host}"
