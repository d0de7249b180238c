"""L2: a TCP reset before ``connection_made`` must not log a 12-line ERROR each time.

The review saw a traceback per connection that was reset (RST) before the loop handed it
to the SIP protocol: ``getpeername`` fails on a dead socket. Here many connections to the
SIP/TCP port (and the HTTP port) are reset at once with SO_LINGER 0; the captured logs may
hold at most short lines, no ERROR and no traceback, and the gateway still serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct

from tests.conftest import http_json


def _reset_storm(port: int, count: int) -> None:
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            sock.connect(("127.0.0.1", port))
        sock.close()  # linger 0: RST, before the server has (or just as it has) accepted


async def test_reset_connections_log_no_error(gateway_factory, caplog):
    caplog.set_level(logging.DEBUG)
    service = await gateway_factory()
    await asyncio.to_thread(_reset_storm, service.sip_port, 300)
    await asyncio.to_thread(_reset_storm, service.http_port, 100)
    status, _ = await http_json(f"http://127.0.0.1:{service.http_port}/healthz")
    assert status == 200
    await asyncio.sleep(0.2)  # let the loop run the accepts it still has
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, f"{len(bad)} ERROR/traceback records, first: {bad[0].getMessage()[:200]}"
