"""Queries to devices that a caller can await: DeviceInfo, DeviceStatus, and Catalog requests.

Device access sends a query and later reports its answer (or failure) as an
event; the broker pairs the two by (device, CmdType, SN) so that an HTTP
handler can ``await`` the answer. A catalog is not awaited: it arrives in many
MESSAGEs and updates the directory when complete, so asking for one returns
its SN at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from gateway.gb28181.manscdp import DeviceInfoResponse, DeviceStatusResponse

__all__ = ["DeviceQueries", "QueryBroker", "QueryKind"]

QueryKind = str  # "DeviceInfo", "DeviceStatus" or "Catalog": the MANSCDP CmdType
Answer = DeviceInfoResponse | DeviceStatusResponse


class DeviceQueries(Protocol):
    """What the broker needs of device access."""

    def query_device_info(self, device_id: str, now: float) -> int | None: ...
    def query_device_status(self, device_id: str, now: float) -> int | None: ...
    def query_catalog(self, device_id: str, now: float) -> int | None: ...
    def is_registered(self, device_id: str) -> bool: ...


class QueryBroker:
    """Sends queries through device access and hands their answers to whoever awaits them."""

    def __init__(self, access: DeviceQueries, timeout: float) -> None:
        self.access = access
        self.timeout = timeout
        self._waiters: dict[tuple[str, str, int], asyncio.Future[Answer | None]] = {}

    def is_registered(self, device_id: str) -> bool:
        """Whether the device has a live registration (queries to others cannot be sent)."""
        return self.access.is_registered(device_id)

    async def device_info(self, device_id: str, timeout: float | None = None) -> DeviceInfoResponse | None:
        """The device's DeviceInfo answer, or None (not registered, refused, or no answer in time)."""
        answer = await self._ask(device_id, "DeviceInfo", self.access.query_device_info, timeout)
        return answer if isinstance(answer, DeviceInfoResponse) else None

    async def device_status(self, device_id: str, timeout: float | None = None) -> DeviceStatusResponse | None:
        """The device's DeviceStatus answer, or None."""
        answer = await self._ask(device_id, "DeviceStatus", self.access.query_device_status, timeout)
        return answer if isinstance(answer, DeviceStatusResponse) else None

    def request_catalog(self, device_id: str) -> int | None:
        """Ask for the device's catalog; its SN, or None when the device is not registered."""
        return self.access.query_catalog(device_id, asyncio.get_running_loop().time())

    async def ask(self, device_id: str, cmd_type: QueryKind) -> Answer | int | None:
        """By CmdType (the HTTP API's ``/query/{cmd}``): an answer, a catalog's SN, or None."""
        if cmd_type == "DeviceInfo":
            return await self.device_info(device_id)
        if cmd_type == "DeviceStatus":
            return await self.device_status(device_id)
        if cmd_type == "Catalog":
            return self.request_catalog(device_id)
        raise ValueError(f"not a query: {cmd_type!r}")

    def resolve(self, device_id: str, cmd_type: QueryKind, sn: int, answer: Answer | None) -> None:
        """An answer (or a failure: None) arrived; whoever awaits it gets it."""
        future = self._waiters.get((device_id, cmd_type, sn))
        if future is not None and not future.done():
            future.set_result(answer)

    async def _ask(
        self, device_id: str, cmd_type: str, send: Callable[[str, float], int | None], timeout: float | None
    ) -> Answer | None:
        sn = send(device_id, asyncio.get_running_loop().time())
        if sn is None:
            return None
        key = (device_id, cmd_type, sn)
        future: asyncio.Future[Answer | None] = asyncio.get_running_loop().create_future()
        self._waiters[key] = future
        try:
            async with asyncio.timeout(timeout if timeout is not None else self.timeout + 1):
                return await future
        except TimeoutError:
            return None
        finally:
            self._waiters.pop(key, None)
