"""C3 over TCP: a device session registered over TCP is bound to its connection (issue 10).

The UDP tests (test_c3_message_from_other_address.py) bind a session to the
sender's address. Over TCP the binding is the connection itself
(``Peer.conn_id``): a second connection from the same host, or a new
connection that reuses the registered connection's very address and port
after it dropped, is not the device until it registers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct

from gateway.app import GatewayService
from gateway.gb28181.sip.message import SipMessage, SipRequest, SipResponse, make_response, parse_message
from gateway.gb28181.sip.transport import Peer as SipPeer
from gateway.gb28181.sip.transport import Transport
from tests.conftest import http_json
from tests.integration.test_bad_input import _token, answer, sip_request
from tests.security.sip_attacker import DEVICE_ID, alarm_body, catalog_body, keepalive_body

CHANNEL_ID = "12010100111310000199"


class TcpPeer:
    """A raw SIP/TCP connection: sends requests, frames what comes back, sets aside the gateway's requests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.port: int = writer.get_extra_info("sockname")[1]
        self.requests: list[SipRequest] = []

    @classmethod
    async def connect(cls, service: GatewayService, local_port: int = 0) -> TcpPeer:
        """Connect to the gateway's SIP/TCP port from 127.0.0.1 (``local_port``: reuse that exact port)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", local_port))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", service.sip_port))
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    async def _read(self, timeout: float) -> SipMessage:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() in (b"content-length", b"l"):
                length = int(value.strip())
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout) if length else b""
        return parse_message(head + body)

    async def request(self, data: bytes, timeout: float = 30.0) -> SipResponse:
        """Send ``data``; its final response (the gateway's own requests meanwhile are kept)."""
        self.writer.write(data)
        await self.writer.drain()
        while True:
            message = await self._read(timeout)
            if isinstance(message, SipRequest):
                self.requests.append(message)
            elif isinstance(message, SipResponse) and message.status >= 200:
                return message

    async def next_request(self, timeout: float = 30.0) -> SipRequest:
        """The next request the gateway sends on this connection."""
        while True:
            if self.requests:
                return self.requests.pop(0)
            message = await self._read(timeout)
            if isinstance(message, SipRequest):
                return message

    async def register(self, service: GatewayService, device_id: str) -> int:
        """Digest-register over this connection; the final status."""
        call_id = f"{_token()}@127.0.0.1"
        challenge = await self.request(self._register(service, device_id, call_id, 1, None))
        if challenge.status != 401:
            return challenge.status
        auth = answer(service, challenge, device_id, service.config.password)
        return (await self.request(self._register(service, device_id, call_id, 2, auth))).status

    def _register(self, service: GatewayService, device_id: str, call_id: str, cseq: int, auth: str | None) -> bytes:
        extra = [("Contact", f"<sip:{device_id}@127.0.0.1:{self.port};transport=tcp>"), ("Expires", "3600")]
        if auth is not None:
            extra.append(("Authorization", auth))
        return sip_request(
            "REGISTER",
            service=service,
            from_user=device_id,
            port=self.port,
            transport="TCP",
            call_id=call_id,
            cseq=cseq,
            extra=extra,
        )

    async def message(self, service: GatewayService, device_id: str, body: bytes) -> SipResponse:
        """A MANSCDP MESSAGE claiming ``device_id``; its final answer."""
        data = sip_request(
            "MESSAGE",
            service=service,
            from_user=device_id,
            port=self.port,
            transport="TCP",
            body=body,
            extra=[("Content-Type", "Application/MANSCDP+xml")],
        )
        return await self.request(data)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()

    def reset(self) -> None:
        """Drop the connection with a RST (no TIME_WAIT), so its address and port can be used again at once."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


def device_status_body(sn: int) -> bytes:
    return (
        f'<?xml version="1.0" encoding="GB2312"?>\r\n<Response>\r\n<CmdType>DeviceStatus</CmdType>\r\n<SN>{sn}</SN>\r\n'
        f"<DeviceID>{DEVICE_ID}</DeviceID>\r\n<Result>OK</Result>\r\n<Online>ONLINE</Online>\r\n"
        f"<Status>OK</Status>\r\n</Response>\r\n"
    ).encode()


async def _registered_device(service: GatewayService) -> TcpPeer:
    device = await TcpPeer.connect(service)
    assert await device.register(service, DEVICE_ID) == 200
    assert (await device.message(service, DEVICE_ID, keepalive_body(DEVICE_ID))).status == 200
    return device


def _tcp_peer(peer: SipPeer | None) -> tuple[str, int] | None:
    assert peer is None or peer.transport is Transport.TCP
    return None if peer is None else (peer.host, peer.port)


async def test_second_connection_cannot_speak_for_a_tcp_device(gateway_factory):
    service = await gateway_factory()
    device = await _registered_device(service)
    attacker = await TcpPeer.connect(service)  # same host, another connection (another local port)
    try:
        bound = service.sip.peer_of(DEVICE_ID)
        assert _tcp_peer(bound) == ("127.0.0.1", device.port)

        forged_keepalive = await attacker.message(service, DEVICE_ID, keepalive_body(DEVICE_ID, 2))
        forged_catalog = await attacker.message(
            service, DEVICE_ID, catalog_body(DEVICE_ID, CHANNEL_ID, "午睡室·大门口")
        )

        assert forged_keepalive.status == 404
        assert forged_catalog.status == 404
        assert CHANNEL_ID not in service.directory.channels
        assert service.sip.peer_of(DEVICE_ID) == bound  # same connection id too
        assert (await device.message(service, DEVICE_ID, keepalive_body(DEVICE_ID, 3))).status == 200

        # The next query goes down the first connection, not the second; the device's answer completes it.
        url = f"http://127.0.0.1:{service.http_port}/api/devices/{DEVICE_ID}/query/DeviceStatus"
        asked = asyncio.create_task(http_json(url, {}, method="POST"))
        while b"<CmdType>DeviceStatus<" not in (query := await device.next_request()).body:
            pass  # the initial DeviceInfo/Catalog queries come first
        assert query.method == "MESSAGE"
        device.writer.write(bytes(make_response(query, 200, to_tag=_token())))
        sn = re.search(rb"<SN>(\d+)</SN>", query.body)
        assert sn is not None
        assert (await device.message(service, DEVICE_ID, device_status_body(int(sn[1])))).status == 200
        status, result = await asyncio.wait_for(asked, 60)
        assert status == 200, (status, result)
        assert not any(b"DeviceStatus" in r.body for r in attacker.requests)
        # The attacker's connection still works: anything queued for it would have arrived before this.
        probe = sip_request("OPTIONS", service=service, from_user=DEVICE_ID, port=attacker.port, transport="TCP")
        assert (await attacker.request(probe)).status == 200
        assert not any(b"DeviceStatus" in r.body for r in attacker.requests)
        mismatches = service.events.refusal_reasons.labels(reason="address_mismatch")._value.get()
        assert mismatches >= 2
    finally:
        await attacker.close()
        await device.close()


async def test_forged_alarm_on_a_second_connection_is_kept_untrusted(gateway_factory):
    service = await gateway_factory()
    device = await _registered_device(service)
    attacker = await TcpPeer.connect(service)
    try:
        answered = await attacker.message(service, DEVICE_ID, alarm_body(DEVICE_ID))

        assert answered.status == 404
        status, page = await http_json(f"http://127.0.0.1:{service.http_port}/api/alarms")
        assert status == 200
        alarms = [a for a in page["items"] if a["device_id"] == DEVICE_ID]
        assert len(alarms) == 1, page
        assert alarms[0]["verified"] is False
        assert alarms[0]["unverified_reason"] == "address_mismatch"
        assert alarms[0]["sender_registered"] is False
    finally:
        await attacker.close()
        await device.close()


async def test_a_new_connection_from_the_same_address_and_port_is_not_the_device(gateway_factory):
    """Host and port are not enough over TCP: after the device's connection drops, whoever next
    connects from that same 127.0.0.1:port (another process on the host, a NAT reusing the
    port) must register before its keepalives count."""
    service = await gateway_factory()
    device = await _registered_device(service)
    port = device.port
    bound = service.sip.peer_of(DEVICE_ID)
    device.reset()
    reused = await TcpPeer.connect(service, local_port=port)
    try:
        assert reused.port == port  # the very host:port the session was registered from

        forged = await reused.message(service, DEVICE_ID, keepalive_body(DEVICE_ID, 5))

        assert forged.status == 404
        assert service.sip.peer_of(DEVICE_ID) == bound
        # Once it registers on this connection it is the device again, on this connection.
        assert await reused.register(service, DEVICE_ID) == 200
        assert (await reused.message(service, DEVICE_ID, keepalive_body(DEVICE_ID, 6))).status == 200
        now_bound = service.sip.peer_of(DEVICE_ID)
        assert now_bound is not None and bound is not None and now_bound.conn_id != bound.conn_id
    finally:
        await reused.close()
