"""A bare digest REGISTER over UDP, as an attacker (or a device) would send it (tests/security helpers)."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from gateway.gb28181.sip.auth import build_authorization
from gateway.gb28181.sip.message import SipResponse, parse_message


class _Peer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.responses: asyncio.Queue[SipResponse] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        message = parse_message(data)
        if isinstance(message, SipResponse) and message.status >= 200:
            self.responses.put_nowait(message)


def _register(server_id: str, domain: str, device_id: str, port: int, call_id: str, cseq: int, auth: str) -> bytes:
    token = secrets.token_hex(6)
    lines = [
        f"REGISTER sip:{server_id}@{domain} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK{token}",
        f"From: <sip:{device_id}@{domain}>;tag={token}",
        f"To: <sip:{device_id}@{domain}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{device_id}@127.0.0.1:{port}>",
        "Max-Forwards: 70",
        "Expires: 3600",
    ]
    if auth:
        lines.append(f"Authorization: {auth}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def register_as(sip_port: int, server_id: str, device_id: str, password: str) -> int:
    """REGISTER ``device_id`` at 127.0.0.1:``sip_port`` with ``password``: the final status (after the 401)."""
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(
        _Peer, local_addr=("127.0.0.1", 0), remote_addr=("127.0.0.1", sip_port)
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        domain = server_id[:10]
        call_id = f"{secrets.token_hex(8)}@127.0.0.1"
        transport.sendto(_register(server_id, domain, device_id, port, call_id, 1, ""))
        challenge = await asyncio.wait_for(peer.responses.get(), 30)
        if challenge.status != 401:
            return challenge.status
        header = challenge.headers.get("WWW-Authenticate") or ""
        auth = build_authorization(
            header, "REGISTER", f"sip:{server_id}@{domain}", device_id, password, secrets.token_hex(8)
        )
        transport.sendto(_register(server_id, domain, device_id, port, call_id, 2, auth))
        return (await asyncio.wait_for(peer.responses.get(), 30)).status
    finally:
        transport.close()
