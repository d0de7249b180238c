"""Raw SIP peers for the issue-10 security tests: a real device and an attacker, each its own UDP socket.

Built on the bad-input tests' raw peers (tests/integration/test_bad_input.py);
``127.0.0.2`` is a second loopback address, i.e. "another host".
"""

from __future__ import annotations

import asyncio

from gateway.app import GatewayService
from gateway.gb28181.sip.message import SipMessage, SipRequest, SipResponse, parse_message
from tests.integration.test_bad_input import (
    DEVICE_ID,
    RawUdp,
    _token,
    answer,
    manscdp_message,
    register,
    sip_request,
)

__all__ = [
    "DEVICE_ID",
    "Peer",
    "alarm_body",
    "catalog_body",
    "keepalive_body",
]


class Peer(RawUdp):
    """A raw UDP peer that can bind any loopback address and keeps every packet it got (bytes)."""

    packets: list[bytes]

    @classmethod
    async def bind(cls, service: GatewayService, host: str = "127.0.0.1") -> Peer:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            cls, local_addr=(host, 0), remote_addr=("127.0.0.1", service.sip_port)
        )
        proto.port = transport.get_extra_info("sockname")[1]
        proto.packets = []
        return proto

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets.append(data)
        super().datagram_received(data, addr)

    async def next_request(self, timeout: float = 30.0) -> SipRequest:
        """The next request the gateway sends us (queries), answers skipped."""
        while True:
            if self.requests:
                message = self.requests.pop(0)
                assert isinstance(message, SipRequest)
                return message
            data = await asyncio.wait_for(self.received.get(), timeout)
            parsed: SipMessage = parse_message(data)
            if isinstance(parsed, SipRequest):
                return parsed

    async def register(self, service: GatewayService, device_id: str, password: str | None = None) -> tuple[int, bytes]:
        """Digest-register; returns the final status and the authenticated REGISTER's bytes (to replay)."""
        call_id = f"{_token()}@127.0.0.1"
        challenge = await self.request(register(service, self, device_id, call_id, 1))
        if challenge.status != 401:
            return challenge.status, b""
        auth = answer(service, challenge, device_id, password or service.config.password)
        data = register(service, self, device_id, call_id, 2, auth)
        final = await self.request(data)
        return final.status, data

    async def message(self, service: GatewayService, device_id: str, body: bytes) -> SipResponse:
        """Send a MANSCDP MESSAGE claiming ``device_id``; its final answer."""
        return await self.request(manscdp_message(service, self, device_id, body))

    async def options(self, service: GatewayService) -> SipResponse:
        return await self.request(sip_request("OPTIONS", service=service, from_user=DEVICE_ID, port=self.port))


def keepalive_body(device_id: str, sn: int = 1) -> bytes:
    return (
        f'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n<SN>{sn}</SN>\r\n'
        f"<DeviceID>{device_id}</DeviceID>\r\n<Status>OK</Status>\r\n</Notify>\r\n"
    ).encode()


def alarm_body(device_id: str, sn: int = 7) -> bytes:
    return (
        f'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Alarm</CmdType>\r\n<SN>{sn}</SN>\r\n'
        f"<DeviceID>{device_id}</DeviceID>\r\n<AlarmPriority>1</AlarmPriority>\r\n<AlarmMethod>2</AlarmMethod>\r\n"
        f"<AlarmTime>2024-05-20T10:00:00</AlarmTime>\r\n<AlarmDescription>forged</AlarmDescription>\r\n</Notify>\r\n"
    ).encode()


def catalog_body(device_id: str, channel_id: str, name: str, sn: int = 9) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\r\n<Response>\r\n<CmdType>Catalog</CmdType>\r\n<SN>{sn}</SN>\r\n'
        f'<DeviceID>{device_id}</DeviceID>\r\n<SumNum>1</SumNum>\r\n<DeviceList Num="1">\r\n<Item>\r\n'
        f"<DeviceID>{channel_id}</DeviceID>\r\n<Name>{name}</Name>\r\n<Manufacturer>x</Manufacturer>\r\n"
        f"<Status>ON</Status>\r\n<ParentID>{device_id}</ParentID>\r\n</Item>\r\n</DeviceList>\r\n</Response>\r\n"
    ).encode()
