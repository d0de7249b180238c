"""Fixture: real RTSP cameras (GStreamer's RTSP server, simulators/rtsp_server.py) on free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from simulators.rtsp_server import RtspServer, available

RtspServerFactory = Callable[..., RtspServer]


@pytest.fixture
def rtsp_server_factory() -> Iterator[RtspServerFactory]:
    """Start RTSP cameras: ``factory(codec="h264", user="", password="", ...)``; all stopped at the end."""
    missing = available()
    if missing is not None:
        pytest.fail(f"the RTSP test server cannot run: {missing}")
    from tests.conftest import free_ports

    servers: list[RtspServer] = []

    def make(**options: Any) -> RtspServer:
        server = RtspServer(free_ports(), **options)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def rtsp_server(rtsp_server_factory: RtspServerFactory) -> RtspServer:
    """One H.264 camera without credentials."""
    return rtsp_server_factory()
