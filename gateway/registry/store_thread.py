"""The registry store on its own worker thread: how async code reaches the synchronous store.

The store never sees two calls at once (one thread), so a backend needs no
locking, and the event loop never waits on a disk. The write-behind writer,
the start-up restore, provisioning and the HTTP API's history queries all go
through :meth:`StoreThread.call`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Concatenate, ParamSpec, TypeVar

from gateway.registry.backends import open_store
from gateway.registry.store import Store

__all__ = ["StoreThread"]

T = TypeVar("T")
P = ParamSpec("P")


class StoreThread:
    """One store, one thread."""

    def __init__(self, url: str, store: Store | None = None) -> None:
        self.url = url
        self._store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kgw-store")

    async def open(self) -> None:
        """Open (and migrate) the store the URL names, unless one was given; a file's folder is made."""
        if self._store is not None:
            return
        url = self.url
        if url != ":memory:" and not url.startswith(("sqlite:", "postgresql:", "postgres:")):
            os.makedirs(os.path.dirname(os.path.abspath(url)), exist_ok=True)
        self._store = await self._run(open_store, url)

    @property
    def store(self) -> Store:
        """The store (after :meth:`open`); call it only on this thread, through :meth:`call`."""
        assert self._store is not None, "StoreThread.open() first"
        return self._store

    async def call(self, fn: Callable[Concatenate[Store, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(store, *args, **kwargs)`` on the store's thread."""
        store = self.store
        return await self._run(lambda: fn(store, *args, **kwargs))

    async def close(self) -> None:
        """Close the store and end the thread (a second call does nothing)."""
        if self._store is not None:
            await self._run(self._store.close)
            self._store = None
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
