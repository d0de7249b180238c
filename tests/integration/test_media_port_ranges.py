"""Media sockets in a configured port range skip busy ports under both event loops.

This used to fail under uvloop, which ``kgw gateway`` runs: uvloop reports a busy
UDP port as ``OSError(errno=None)``, so ``bind_in_range`` raised instead of trying
the next port, and with ``media_ports`` set only one live stream worked at a time.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from gateway.io.rtp_io import UdpRtpReceiverTransport
from gateway.io.rtp_send_io import TcpRtpSender, UdpRtpSender
from gateway.io.rtp_tcp_io import TcpPassiveRtpReceiver

Runner = Callable[[Coroutine[Any, Any, None]], None]
SPAN = 20  # ports after the busy one; at least one of them is free on a test machine


class _Sink:
    def feed(self, data: bytes, source: tuple[str, int]) -> None:
        pass

    def on_closed(self, reason: str) -> None:
        pass


def _run_in_thread(runner: Runner, coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` on a fresh loop of ``runner`` in its own thread (the suite's loop stays untouched)."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            runner(coro)
        except BaseException as exc:  # re-raised in the test's thread
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the scenario did not finish in 60 s"
    if failure:
        raise failure[0]


async def _every_media_socket_skips(kind: socket.SocketKind) -> None:
    with socket.socket(socket.AF_INET, kind) as busy:
        busy.bind(("127.0.0.1", 0))
        if kind is socket.SOCK_STREAM:
            busy.listen()
        low = busy.getsockname()[1]
        ports = (low, min(low + SPAN, 65535))
        if kind is socket.SOCK_DGRAM:
            opened: list[Any] = [
                await UdpRtpReceiverTransport.open(_Sink(), ports=ports),
                await UdpRtpSender.open("127.0.0.1", ("127.0.0.1", 9), ports=ports),
            ]
        else:
            opened = [
                await TcpPassiveRtpReceiver.open(_Sink(), ports=ports),
                await TcpRtpSender.listen("127.0.0.1", ports=ports),
                await TcpRtpSender.bind("127.0.0.1", ("127.0.0.1", 9), ports=ports),
            ]
        try:
            for transport in opened:
                assert low < transport.port <= ports[1], f"{type(transport).__name__} took {transport.port}"
        finally:
            for transport in opened:
                transport.close()


@pytest.mark.parametrize("runner", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM], ids=["udp", "tcp"])
def test_a_busy_port_of_the_range_is_skipped(runner: Runner, kind: socket.SocketKind) -> None:
    _run_in_thread(runner, _every_media_socket_skips(kind))
