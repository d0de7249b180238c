"""A bare SIP user agent on a real UDP socket, for the alarm attack tests (C3, C4, M1).

It speaks as any device ID it likes from its own address: it can REGISTER with
the digest password (the way a real device proves itself), and it can send
``Notify/Alarm`` MESSAGEs without registering (the way an attacker forges one).
Requests from the gateway (its Response/Alarm MESSAGEs) are answered 200 so the
gateway's transactions end cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from datetime import datetime

from gateway.gb28181.manscdp import AlarmNotify
from gateway.gb28181.manscdp.xmlmap import serialize
from gateway.gb28181.requests import build_message, build_register, register_uri
from gateway.gb28181.sip.auth import build_authorization
from gateway.gb28181.sip.message import SipRequest, SipResponse, make_response, parse_message

__all__ = ["AlarmUa", "gb_time"]

_branches = itertools.count(1)


def gb_time(when: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` (GB/T 28181 local time, no zone)."""
    return when.strftime("%Y-%m-%dT%H:%M:%S")


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, ua: AlarmUa) -> None:
        self.ua = ua

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(Exception):
            self.ua.received(parse_message(data), addr)


class AlarmUa:
    """One UDP socket on 127.0.0.1 talking to the gateway at ``gateway_port``."""

    def __init__(self, gateway_port: int, *, gateway_id: str, realm: str) -> None:
        self.gateway = ("127.0.0.1", gateway_port)
        self.gateway_id = gateway_id
        self.realm = realm
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self._waiting: dict[str, asyncio.Future[SipResponse]] = {}
        self._cseq = itertools.count(1)
        self.alarm_responses = 0  # Response/Alarm MESSAGEs the gateway sent us

    async def open(self) -> AlarmUa:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), local_addr=("127.0.0.1", 0))
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def received(self, message: SipRequest | SipResponse | object, addr: tuple[str, int]) -> None:
        if isinstance(message, SipResponse):
            if message.status < 200:
                return
            waiter = self._waiting.get(message.headers.get("Call-ID") or "")
            if waiter is not None and not waiter.done():
                waiter.set_result(message)
        elif isinstance(message, SipRequest):
            if b"<CmdType>Alarm</CmdType>" in message.body:
                self.alarm_responses += 1
            assert self.transport is not None
            self.transport.sendto(bytes(make_response(message, 200, to_tag=uuid.uuid4().hex[:8])), addr)

    async def _send(self, request: SipRequest, timeout: float = 20.0) -> SipResponse:
        assert self.transport is not None
        call_id = request.headers["Call-ID"]
        request.headers.prepend("Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bK-ua{next(_branches)}")
        waiter: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = waiter
        data = bytes(request)
        try:
            async with asyncio.timeout(timeout):
                while True:  # UDP: resend every 0.5 s like a SIP client until a final answer
                    self.transport.sendto(data, self.gateway)
                    done, _ = await asyncio.wait({waiter}, timeout=0.5)
                    if done:
                        return waiter.result()
        finally:
            self._waiting.pop(call_id, None)

    async def register(self, device_id: str, password: str, expires: int = 3600) -> int:
        """REGISTER as ``device_id`` from this socket, answering the digest challenge; the final status."""
        call_id = uuid.uuid4().hex
        tag = uuid.uuid4().hex[:8]
        domain = device_id[:10]

        def request(authorization: str | None) -> SipRequest:
            return build_register(
                device_id=device_id,
                domain=domain,
                server_id=self.gateway_id,
                contact_host="127.0.0.1",
                contact_port=self.port,
                from_tag=tag,
                call_id=call_id,
                cseq=next(self._cseq),
                expires=expires,
                authorization=authorization,
            )

        answer = await self._send(request(None))
        if answer.status != 401:
            return answer.status
        challenge = answer.headers["WWW-Authenticate"]
        authorization = build_authorization(
            challenge, "REGISTER", register_uri(self.gateway_id, domain), device_id, password, uuid.uuid4().hex[:16]
        )
        return (await self._send(request(authorization))).status

    async def alarm(
        self,
        device_id: str,
        *,
        sn: int,
        source_id: str | None = None,
        method: str = "1",
        priority: str = "1",
        alarm_type: str | None = None,
        alarm_time: str | None = None,
        description: str = "一键报警按钮按下",
        wait: bool = True,
    ) -> int | None:
        """Send one ``Notify/Alarm`` claiming to come from ``device_id``; its final status (None if not waited)."""
        body = serialize(
            AlarmNotify(
                sn=sn,
                device_id=source_id or device_id,
                priority=priority,
                method=method,
                alarm_time=alarm_time or gb_time(datetime.now()),
                description=description,
                alarm_type=alarm_type,
            )
        )
        request = build_message(
            from_id=device_id,
            from_domain=device_id[:10],
            from_tag=uuid.uuid4().hex[:8],
            to_id=self.gateway_id,
            request_uri=f"sip:{self.gateway_id}@{self.realm}",
            to_domain=self.realm,
            call_id=uuid.uuid4().hex,
            cseq=next(self._cseq),
            body=body,
        )
        if not wait:
            assert self.transport is not None
            request.headers.prepend(
                "Via", f"SIP/2.0/UDP 127.0.0.1:{self.port};rport;branch=z9hG4bK-ua{next(_branches)}"
            )
            self.transport.sendto(bytes(request), self.gateway)
            return None
        return (await self._send(request)).status
