"""RTSP cameras in the registry store (the v7 ``rtsp_camera`` table, SQLite and PostgreSQL alike).

The stores speak plain tuples in ``sql_rows.RTSP_CAMERA_COLS`` order (the registry may not
import this package); the mapping to :class:`~gateway.rtsp.model.RtspCamera` is here.
Passwords are stored as given: the puller must send them to the camera, so they cannot
be hashed; the API never returns them and logs never show them.
"""

from __future__ import annotations

from typing import Any

from gateway.registry.model import AreaTag
from gateway.registry.store import Store
from gateway.registry.store_thread import StoreThread
from gateway.rtsp.model import RtspCamera

__all__ = ["RtspCameraStore", "camera_from", "camera_row"]


def camera_row(camera: RtspCamera) -> tuple[Any, ...]:
    return (
        camera.channel_id,
        camera.device_id,
        camera.kindergarten_id,
        camera.district_code,
        camera.name,
        camera.area.value,
        camera.url,
        camera.username,
        camera.password,
        1 if camera.enabled else 0,
        camera.created_by,
        camera.created_at,
    )


def camera_from(row: tuple[Any, ...]) -> RtspCamera:
    channel, device, kg, district, name, area, url, user, password, enabled, by, at = row
    return RtspCamera(
        channel_id=str(channel),
        device_id=str(device),
        kindergarten_id=str(kg),
        district_code=str(district),
        name=str(name),
        area=AreaTag(area),
        url=str(url),
        username=str(user),
        password=str(password),
        enabled=bool(enabled),
        created_by=str(by),
        created_at=float(at),
    )


class RtspCameraStore:
    """The table through the store thread (StoreError when the database fails)."""

    def __init__(self, store: StoreThread) -> None:
        self.store = store

    async def save(self, camera: RtspCamera) -> None:
        await self.store.call(_save, camera_row(camera))

    async def delete(self, channel_id: str) -> bool:
        return await self.store.call(_delete, channel_id)

    async def load(self) -> list[RtspCamera]:
        return [camera_from(row) for row in await self.store.call(_load)]


def _save(store: Store, row: tuple[Any, ...]) -> None:
    store.upsert_rtsp_camera(row)


def _delete(store: Store, channel_id: str) -> bool:
    return store.delete_rtsp_camera(channel_id)


def _load(store: Store) -> list[tuple[Any, ...]]:
    return store.load_rtsp_cameras()
