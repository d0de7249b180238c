"""Hostile and broken input on real sockets (docs/design.md §6): the gateway answers or drops, and keeps serving.

Each test sends raw bytes from its own socket, checks the answer (or its
absence), then proves the gateway still works: an OPTIONS gets 200, and at
the end a normal simulated fleet registers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
import time
from pathlib import Path

import pytest

from gateway.app import GatewayService
from gateway.gb28181.sip.auth import build_authorization
from gateway.gb28181.sip.message import SipMessage, SipResponse, parse_message
from gateway.gb28181.sip.transport import Transport
from tests.conftest import wait_for

DEVICE_ID = "12010100111320000101"  # 和平区, IPC (132)
OTHER_DEVICE_ID = "12010100111320000102"

_serial = itertools.count(1)


def _token() -> str:
    """Unique enough for branches, tags and Call-IDs within a run."""
    return f"{next(_serial):06d}{random.getrandbits(32):08x}"


class RawUdp(asyncio.DatagramProtocol):
    """A bare UDP peer: sends bytes, collects whatever comes back."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.requests: list[SipMessage] = []

    @classmethod
    async def open(cls, service: GatewayService) -> RawUdp:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            cls, local_addr=("127.0.0.1", 0), remote_addr=("127.0.0.1", service.sip_port)
        )
        proto.port = transport.get_extra_info("sockname")[1]
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait(data)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data)

    async def recv(self, timeout: float = 30.0) -> SipResponse:
        """The next response; requests the gateway sends us (queries after REGISTER) are set aside."""
        while True:
            data = await asyncio.wait_for(self.received.get(), timeout)
            message = parse_message(data)
            if isinstance(message, SipResponse):
                return message
            self.requests.append(message)

    async def request(self, data: bytes, timeout: float = 30.0) -> SipResponse:
        """Send and return the final response (skipping any 1xx)."""
        self.send(data)
        while True:
            response = await self.recv(timeout)
            if response.status >= 200:
                return response

    async def nothing_answered(self, service: GatewayService) -> bool:
        """True when the gateway sends us nothing before its answer to an OPTIONS sent now.

        The gateway handles datagrams in the order they arrive and answers each as it handles
        it, so an answer to anything we sent before would arrive before this one.
        """
        call_id = f"marker-{_token()}@127.0.0.1"
        self.send(sip_request("OPTIONS", service=service, from_user=DEVICE_ID, port=self.port, call_id=call_id))
        first = parse_message(await asyncio.wait_for(self.received.get(), 30))
        return isinstance(first, SipResponse) and first.call_id == call_id and first.status == 200

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def sip_request(
    method: str,
    *,
    service: GatewayService,
    from_user: str,
    port: int,
    transport: str = "UDP",
    uri: str | None = None,
    call_id: str | None = None,
    cseq: int = 1,
    extra: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    omit: tuple[str, ...] = (),
    content_length: int | None = None,
) -> bytes:
    """Raw request bytes, the way a device would write them."""
    domain = service.config.domain
    headers = [
        ("Via", f"SIP/2.0/{transport} 127.0.0.1:{port};rport;branch=z9hG4bK{_token()}"),
        ("From", f"<sip:{from_user}@{domain}>;tag={_token()}"),
        ("To", f"<sip:{from_user if method == 'REGISTER' else service.config.id}@{domain}>"),
        ("Call-ID", call_id or f"{_token()}@127.0.0.1"),
        ("CSeq", f"{cseq} {method}"),
        ("Max-Forwards", "70"),
        *(extra or []),
        ("Content-Length", str(len(body) if content_length is None else content_length)),
    ]
    lines = [f"{method} {uri or f'sip:{service.config.id}@{domain}'} SIP/2.0"]
    lines += [f"{name}: {value}" for name, value in headers if name not in omit]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def register(
    service: GatewayService,
    peer: RawUdp,
    device_id: str,
    call_id: str,
    cseq: int,
    authorization: str | None = None,
    expires: int = 3600,
) -> bytes:
    extra = [("Contact", f"<sip:{device_id}@127.0.0.1:{peer.port}>"), ("Expires", str(expires))]
    if authorization is not None:
        extra.append(("Authorization", authorization))
    return sip_request(
        "REGISTER", service=service, from_user=device_id, port=peer.port, call_id=call_id, cseq=cseq, extra=extra
    )


def answer(service: GatewayService, challenge: SipResponse, device_id: str, password: str) -> str:
    header = challenge.headers.get("WWW-Authenticate")
    assert header is not None
    uri = f"sip:{service.config.id}@{service.config.domain}"
    return build_authorization(header, "REGISTER", uri, device_id, password, cnonce=_token())


async def register_device(service: GatewayService, peer: RawUdp, device_id: str) -> None:
    """Digest-register ``device_id`` from ``peer`` with the right password."""
    call_id = f"{_token()}@127.0.0.1"
    challenge = await peer.request(register(service, peer, device_id, call_id, 1))
    assert challenge.status == 401
    auth = answer(service, challenge, device_id, service.config.password)
    ok = await peer.request(register(service, peer, device_id, call_id, 2, auth))
    assert ok.status == 200, ok.status


def manscdp_message(service: GatewayService, peer: RawUdp, device_id: str, body: bytes) -> bytes:
    return sip_request(
        "MESSAGE",
        service=service,
        from_user=device_id,
        port=peer.port,
        body=body,
        extra=[("Content-Type", "Application/MANSCDP+xml")],
    )


async def options_ok(service: GatewayService) -> bool:
    """The gateway still answers OPTIONS from a fresh socket."""
    peer = await RawUdp.open(service)
    try:
        response = await peer.request(sip_request("OPTIONS", service=service, from_user=DEVICE_ID, port=peer.port))
        return response.status == 200
    finally:
        peer.close()


class RawTcp:
    """A bare TCP peer with Content-Length framing of what comes back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.port = writer.get_extra_info("sockname")[1]

    @classmethod
    async def open(cls, service: GatewayService) -> RawTcp:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.sip_port)
        return cls(reader, writer)

    async def recv(self, timeout: float = 30.0) -> SipResponse | None:
        """The next response, or None when the gateway closed the connection."""
        try:
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        except asyncio.IncompleteReadError:
            return None
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() in (b"content-length", b"l"):
                length = int(value.strip())
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout) if length else b""
        message = parse_message(head + body)
        assert isinstance(message, SipResponse)
        return message

    async def closed_by_peer(self, timeout: float = 30.0) -> bool:
        """True when the gateway closes (or resets) the connection within ``timeout``."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def tcp_options_ok(conn: RawTcp, service: GatewayService) -> bool:
    conn.writer.write(sip_request("OPTIONS", service=service, from_user=DEVICE_ID, port=conn.port, transport="TCP"))
    await conn.writer.drain()
    response = await conn.recv()
    return response is not None and response.status == 200


@pytest.fixture
async def service(gateway_factory) -> GatewayService:
    # Short liveness timers keep the gateway's timer work going during the attacks, with a
    # 5 s silence limit: a raw-registered device (no keepalives) stays online long enough
    # for the test to see it, even on a busy machine.
    return await gateway_factory(keepalive_interval=1.0, keepalive_missed=5)


# --- UDP garbage -------------------------------------------------------------------------------------


async def test_garbage_datagrams_are_dropped_and_counted(service):
    assert service.sip.access is not None
    stats = service.sip.access.endpoint.stats
    dropped_before = stats["dropped_unparsable"] + stats["dropped_too_large"]
    unparsable_before = stats["dropped_unparsable"]
    rng = random.Random(28181)
    noise = [rng.randbytes(n) for n in (1, 7, 100, 1400, 9000, 65_000)]
    junk = [*noise, b"\r\n\r\n\r\n", b"SIP/2.0\r\n\r\n", b"INVITE\x00\xff\r\n\r\n", b"A" * 65_000]
    peer = await RawUdp.open(service)
    try:
        for datagram in junk:
            peer.send(datagram)
        # asyncio's sendto() skips empty payloads: send the empty datagram from a plain socket.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            raw.sendto(b"", ("127.0.0.1", service.sip_port))

        def dropped() -> int:
            return stats["dropped_unparsable"] + stats["dropped_too_large"]

        assert await wait_for(lambda: dropped() >= dropped_before + len(junk), 30)  # all of it was handled
        assert not any(k.startswith("out_response") for k in stats), "nothing was answered"
        assert await peer.nothing_answered(service), "garbage gets no answer"
    finally:
        peer.close()

    assert dropped() <= dropped_before + len(junk) + 1  # + the empty datagram, if the loop delivers it
    assert stats["dropped_unparsable"] - unparsable_before >= len(noise)
    assert await options_ok(service)


# --- SIP requests that parse but are wrong ----------------------------------------------------------------


@pytest.mark.parametrize("missing", ["Call-ID", "From", "To", "CSeq"])
async def test_request_missing_a_mandatory_header_gets_400(service, missing):
    peer = await RawUdp.open(service)
    try:
        data = sip_request("OPTIONS", service=service, from_user=DEVICE_ID, port=peer.port, omit=(missing,))
        response = await peer.request(data)
        assert response.status == 400
        assert service.sip.access is not None and service.sip.access.endpoint.stats["dropped_bad_headers"] >= 1
    finally:
        peer.close()
    assert await options_ok(service)


async def test_request_without_via_is_dropped(service):
    peer = await RawUdp.open(service)
    try:
        peer.send(sip_request("OPTIONS", service=service, from_user=DEVICE_ID, port=peer.port, omit=("Via",)))
        assert await peer.nothing_answered(service), "no Via: nowhere to send an answer"
    finally:
        peer.close()
    assert await options_ok(service)


async def test_register_without_usable_expires_or_too_short(service):
    peer = await RawUdp.open(service)
    try:
        response = await peer.request(sip_request("REGISTER", service=service, from_user=DEVICE_ID, port=peer.port))
        assert response.status == 400, "no Expires anywhere"
        response = await peer.request(
            sip_request("REGISTER", service=service, from_user=DEVICE_ID, port=peer.port, extra=[("Expires", "10")])
        )
        assert response.status == 423
        assert response.headers.get("Min-Expires") == "30"
        foreign = [("Expires", "3600"), ("Authorization", 'Digest username="someone-else"')]
        response = await peer.request(
            sip_request("REGISTER", service=service, from_user=DEVICE_ID, port=peer.port, extra=foreign)
        )
        # Credentials for another user on no nonce of ours: a fresh challenge, counted as nothing
        # (issue 10, H2: a spoofed-source REGISTER must not produce counted failures).
        assert response.status == 401, "credentials for another user, without our nonce"
    finally:
        peer.close()


async def test_message_from_unregistered_device_gets_404(service):
    peer = await RawUdp.open(service)
    try:
        keepalive = (
            b'<?xml version="1.0"?>\r\n<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>'
            + DEVICE_ID.encode()
            + b"</DeviceID><Status>OK</Status></Notify>"
        )
        response = await peer.request(manscdp_message(service, peer, DEVICE_ID, keepalive))
        assert response.status == 404
    finally:
        peer.close()
    assert DEVICE_ID not in service.directory.devices


async def test_unknown_method_gets_405_and_options_200(service):
    peer = await RawUdp.open(service)
    try:
        response = await peer.request(sip_request("FROBNICATE", service=service, from_user=DEVICE_ID, port=peer.port))
        assert response.status == 405
        assert "REGISTER" in (response.headers.get("Allow") or "")
        response = await peer.request(sip_request("OPTIONS", service=service, from_user=DEVICE_ID, port=peer.port))
        assert response.status == 200
        assert "MESSAGE" in (response.headers.get("Allow") or "")
    finally:
        peer.close()


@pytest.mark.parametrize(
    "device_id",
    [
        "1234",  # wrong length
        "1201010011132000010A",  # a letter
        "abcdefghijklmnopqrst",  # letters only, right length
        "12010100112160000100",  # type 216: a virtual organisation cannot register
        "120101001113200001011",  # 21 digits
    ],
)
async def test_register_with_bad_device_id_gets_403(service, device_id):
    peer = await RawUdp.open(service)
    try:
        response = await peer.request(register(service, peer, device_id, f"{_token()}@127.0.0.1", 1))
        assert response.status == 403
        assert response.headers.get("WWW-Authenticate") is None, "refused before any challenge"
    finally:
        peer.close()
    assert service.sip.access is not None and device_id not in service.sip.access.sessions
    assert device_id not in service.directory.devices
    assert await options_ok(service)


async def test_broken_xml_from_registered_device_gets_400(service):
    peer = await RawUdp.open(service)
    try:
        await register_device(service, peer, DEVICE_ID)
        broken = (
            b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n'
            b"<SN>1<SN>\r\n<DeviceID>" + DEVICE_ID.encode() + b"</DeviceID>\r\n"
        )
        response = await peer.request(manscdp_message(service, peer, DEVICE_ID, broken))
        assert response.status == 400
        for body in (b"", b"\x00\xff\xfe garbage", b"<Notify><CmdType>Keepalive</CmdType></Notify>" * 3):
            response = await peer.request(manscdp_message(service, peer, DEVICE_ID, body))
            assert response.status == 400, body[:40]
        good = (
            b'<?xml version="1.0" encoding="GB2312"?>\r\n<Notify>\r\n<CmdType>Keepalive</CmdType>\r\n'
            b"<SN>2</SN>\r\n<DeviceID>" + DEVICE_ID.encode() + b"</DeviceID>\r\n<Status>OK</Status>\r\n"
            b"</Notify>\r\n"
        )
        response = await peer.request(manscdp_message(service, peer, DEVICE_ID, good))
        assert response.status == 200, "the device is still registered and heard"
    finally:
        peer.close()


BILLION_LAUGHS = (
    Path(__file__).resolve().parents[1] / "fixtures" / "attacks" / "billion_laughs_entity_expansion.xml"
).read_bytes()

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>&xxe;</DeviceID><Status>OK</Status></Notify>
"""


async def test_entity_expansion_xml_gets_400_fast(service):
    peer = await RawUdp.open(service)
    try:
        await register_device(service, peer, DEVICE_ID)
        for body in (BILLION_LAUGHS, XXE):
            # CPU time of this process (the gateway runs in it), not wall time: a busy machine
            # makes the answer late, never more expensive. Refusing costs milliseconds, an
            # expansion (the attack working) seconds of CPU.
            started = time.process_time()
            response = await peer.request(manscdp_message(service, peer, DEVICE_ID, body))
            assert response.status == 400
            assert time.process_time() - started < 1.0
    finally:
        peer.close()
    assert await options_ok(service)


async def test_wrong_password_storm_is_throttled_per_device_not_per_address(service):
    peer = await RawUdp.open(service)
    statuses: list[tuple[int, int | None]] = []  # (answer to the bare REGISTER, answer to the digest)
    try:
        call_id = f"{_token()}@127.0.0.1"
        cseq = 0
        for _ in range(20):
            cseq += 1
            first = await peer.request(register(service, peer, DEVICE_ID, call_id, cseq))
            if first.status != 401:
                statuses.append((first.status, None))
                continue
            cseq += 1
            auth = answer(service, first, DEVICE_ID, "not-the-password")
            second = await peer.request(register(service, peer, DEVICE_ID, call_id, cseq, auth))
            statuses.append((401, second.status))
        challenged = [s for s in statuses if s[0] == 401]
        assert all(s[1] == 403 for s in challenged), "a wrong password is 403, never another 401"
        assert 1 <= len(challenged) <= 5, statuses
        assert statuses[-10:] == [(403, None)] * 10, "later attempts are refused without a challenge"
        assert service.sip.access is not None and DEVICE_ID not in service.sip.access.sessions

        # Same socket (same address and port), another device ID, right password: unaffected.
        await register_device(service, peer, OTHER_DEVICE_ID)
        assert OTHER_DEVICE_ID in service.sip.access.sessions
        assert await wait_for(
            lambda: (
                OTHER_DEVICE_ID in service.directory.devices and service.directory.devices[OTHER_DEVICE_ID].row.online
            ),
            30,
        )
        # The blocked device stays blocked even with the right password, for now.
        response = await peer.request(register(service, peer, DEVICE_ID, f"{_token()}@127.0.0.1", 1))
        assert response.status == 403
    finally:
        peer.close()


# --- TCP -----------------------------------------------------------------------------------------------


async def test_oversized_tcp_message_is_refused_and_others_unaffected(service):
    bystander = await RawTcp.open(service)
    attacker = await RawTcp.open(service)
    try:
        assert await tcp_options_ok(bystander, service)
        head = sip_request(
            "MESSAGE",
            service=service,
            from_user=DEVICE_ID,
            port=attacker.port,
            transport="TCP",
            extra=[("Content-Type", "Application/MANSCDP+xml")],
            content_length=200_000,
        )
        attacker.writer.write(head + b"<" * 4000)
        await attacker.writer.drain()
        response = await attacker.recv()
        if response is not None:
            assert response.status == 513
            assert await attacker.closed_by_peer(), "the connection is closed after the 513"
        assert await tcp_options_ok(bystander, service), "another TCP connection is unaffected"
    finally:
        await attacker.close()
        await bystander.close()
    assert await options_ok(service)


async def test_tcp_peer_sending_half_a_message_does_not_hurt(service):
    bystander = await RawTcp.open(service)
    slow = await RawTcp.open(service)
    try:
        whole = sip_request("OPTIONS", service=service, from_user=DEVICE_ID, port=slow.port, transport="TCP")
        half = whole[: len(whole) // 2]
        slow.writer.write(half)
        await slow.writer.drain()
        assert service.sip.driver is not None
        connections = service.sip.driver.connections
        assert await wait_for(  # the gateway holds the half message
            lambda: any(c.addr[1] == slow.port and c.framer.buffered == len(half) for c in connections.values()), 30
        )
        assert await tcp_options_ok(bystander, service)
        assert await options_ok(service)
        # The rest arrives late: the message completes and is answered.
        slow.writer.write(whole[len(whole) // 2 :])
        await slow.writer.drain()
        response = await slow.recv()
        assert response is not None and response.status == 200
        # Half a message again, then the peer goes away mid-message.
        slow.writer.write(whole[:10])
        await slow.writer.drain()
    finally:
        await slow.close()
    try:
        assert await tcp_options_ok(bystander, service)
    finally:
        await bystander.close()


async def test_tcp_garbage_closes_only_that_connection(service):
    bystander = await RawTcp.open(service)
    attacker = await RawTcp.open(service)
    try:
        attacker.writer.write(b"\x16\x03\x01" + random.Random(1).randbytes(20_000))  # a TLS hello and noise
        await attacker.writer.drain()
        assert await attacker.closed_by_peer(), "an unframeable stream is closed"
        assert await tcp_options_ok(bystander, service)
    finally:
        await attacker.close()
        await bystander.close()


# --- after all of it ---------------------------------------------------------------------------------------


async def test_attacks_leave_no_leak_and_a_fleet_still_registers(service, fleet_factory):
    assert service.sip.access is not None
    await asyncio.sleep(0)
    baseline = len(asyncio.all_tasks())
    rng = random.Random(7)
    peer = await RawUdp.open(service)
    try:
        for _ in range(200):
            peer.send(rng.randbytes(rng.randrange(0, 2000)))
        for n in range(100):
            peer.send(
                sip_request(
                    "OPTIONS", service=service, from_user=DEVICE_ID, port=peer.port, omit=("Call-ID",) if n % 2 else ()
                )
            )
            peer.send(sip_request("BREW", service=service, from_user=DEVICE_ID, port=peer.port))
            peer.send(register(service, peer, f"{n:04d}", f"{_token()}@x", 1))
        for _ in range(5):
            conn = await RawTcp.open(service)
            conn.writer.write(b"REGISTER sip:x SIP/2.0\r\nContent-Length: 9999999\r\n\r\n")
            await conn.close()
        half = [await RawTcp.open(service) for _ in range(5)]
        partial = b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP"
        for conn in half:
            conn.writer.write(partial)
        assert service.sip.driver is not None
        connections = service.sip.driver.connections
        ports = {conn.port for conn in half}
        assert await wait_for(  # the gateway holds every half message
            lambda: ports <= {c.addr[1] for c in connections.values() if c.framer.buffered == len(partial)}, 30
        )
        for conn in half:
            await conn.close()
    finally:
        peer.close()

    assert await options_ok(service)
    assert service.sip.access.endpoint.transaction_count < 1000
    assert service.sip.driver is not None
    assert await wait_for(lambda: not service.sip.driver.connections, timeout=30), "closed TCP peers are forgotten"
    assert await wait_for(lambda: len(asyncio.all_tasks()) <= baseline + 2, timeout=30)

    fleet = await fleet_factory(service, kindergartens=2, keepalive_interval=0.2, transport=Transport.UDP)
    channels = sum(len(a.profile.channels) for a in fleet.agents.values())
    assert await wait_for(lambda: service.directory.online_counts()[1] == len(fleet.agents), timeout=60)
    assert await wait_for(lambda: service.directory.online_counts()[2] == channels, timeout=60)
    assert service.sip.access.endpoint.transaction_count < 1000
