"""A simulated ONVIF camera as a pytest fixture (import ``onvif_camera`` into a test module).

``onvif_camera`` is a factory: ``await onvif_camera(rtsp_url=..., **options)`` starts an
:class:`~simulators.onvif_camera.OnvifCamera` on 127.0.0.1 (ephemeral HTTP and
discovery ports) and stops it after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from simulators.onvif_camera import OnvifCamera, OnvifCameraOptions

CameraFactory = Callable[..., Awaitable[OnvifCamera]]


@pytest.fixture
async def onvif_camera() -> AsyncIterator[CameraFactory]:
    started: list[OnvifCamera] = []

    async def make(rtsp_url: str = "rtsp://127.0.0.1:8554/cam1", **options: Any) -> OnvifCamera:
        camera = OnvifCamera(OnvifCameraOptions(rtsp_url=rtsp_url, **options))
        await camera.start()
        started.append(camera)
        return camera

    yield make
    for camera in reversed(started):
        await camera.stop()
