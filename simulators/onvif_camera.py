"""A simulated ONVIF camera: WS-Discovery responder plus device and media SOAP services.

It answers what kgw's profile lookup asks (``GetSystemDateAndTime``,
``GetDeviceInformation``, ``GetCapabilities``, ``GetProfiles``, ``GetStreamUri``) the
way a Hikvision- or Dahua-style Profile S camera does: SOAP 1.2, the media service
at its own path, a main and a sub profile whose stream URIs point at the RTSP URL
it was given (the test RTSP server, or any camera). Every call but
GetSystemDateAndTime needs a WS-Security UsernameToken with PasswordDigest: a wrong
digest, an unknown user, a Created more than :attr:`OnvifCameraOptions.max_skew`
off the camera's clock or a replayed nonce answer the ``ter:NotAuthorized`` Fault
(HTTP 400) that real cameras send. ``http_digest=True`` makes it a camera that
wants HTTP Digest (401 challenge) instead.

Use it from tests (``async with OnvifCamera(options) as camera``; see
tests/onvif_camera.py for the fixture), from ``kgw simulate --onvif RTSP_URL``, or
alone: ``python -m simulators.onvif_camera --rtsp-url rtsp://127.0.0.1:8554/cam``.

Forgery knobs for tests: ``advertise_host`` (the host its XAddrs claim),
``media_host`` (the host its media XAddr claims, as a camera behind NAT does),
``stream_host`` (the host its stream URIs claim).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import secrets
import socket
import struct
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit
from xml.etree.ElementTree import Element

from aiohttp import web

from gateway.onvif import xml
from gateway.onvif.wsdiscovery import MULTICAST_GROUP

__all__ = ["OnvifCamera", "OnvifCameraOptions", "SimProfile"]

log = logging.getLogger("kgw.simulate.onvif")

NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_ADDRESSING = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
NS_DISCOVERY = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
NS_DEVICE = "http://www.onvif.org/ver10/device/wsdl"
NS_MEDIA = "http://www.onvif.org/ver10/media/wsdl"
NS_SCHEMA = "http://www.onvif.org/ver10/schema"
NS_ERROR = "http://www.onvif.org/ver10/error"
DEVICE_PATH = "/onvif/device_service"
MEDIA_PATH = "/onvif/media_service"
_ENVELOPE_NS = (
    f'xmlns:env="{NS_SOAP}" xmlns:tds="{NS_DEVICE}" xmlns:trt="{NS_MEDIA}" '
    f'xmlns:tt="{NS_SCHEMA}" xmlns:ter="{NS_ERROR}"'
)


@dataclass(frozen=True)
class SimProfile:
    """One media profile the camera offers."""

    token: str
    name: str
    width: int
    height: int
    encoding: str = "H264"
    frame_rate: int = 25
    rtsp_url: str = ""  # empty: the camera's rtsp_url


@dataclass
class OnvifCameraOptions:
    rtsp_url: str
    username: str = "admin"
    password: str = "admin12345"
    host: str = "127.0.0.1"
    http_port: int = 0
    discovery_port: int = 0  # 0: an ephemeral port (tests); 3702 on a real network
    multicast: bool = False  # also listen on 239.255.255.250 (on the ``host`` interface)
    manufacturer: str = "KGW-SIM"
    model: str = "IPC-SIM-2MP"
    firmware: str = "V5.7.3 build 260901"
    serial: str = "SIM0001"
    name: str = "KGW SIM Camera"
    endpoint: str = field(default_factory=lambda: f"urn:uuid:{uuid.uuid4()}")
    profiles: tuple[SimProfile, ...] = (
        SimProfile("Profile_1", "mainStream", 1920, 1080),
        SimProfile("Profile_2", "subStream", 640, 360),
    )
    clock_offset: float = 0.0  # the camera's clock is this many s ahead of ours
    max_skew: float = 300.0  # Created this far from the camera's clock is refused
    http_digest: bool = False
    advertise_host: str | None = None
    media_host: str | None = None
    stream_host: str | None = None


class OnvifCamera:
    """The simulated camera; ``start``/``stop`` or ``async with``."""

    def __init__(self, options: OnvifCameraOptions) -> None:
        self.options = options
        self.http_port = options.http_port
        self.discovery_port = options.discovery_port
        self.probes_answered = 0
        self.auth_failures = 0
        self.calls: list[str] = []
        self._runner: web.AppRunner | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._nonces: deque[str] = deque(maxlen=4096)
        self._digest_nonces: deque[str] = deque(maxlen=1024)  # challenges given out (HTTP Digest)

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=256 * 1024)
        app.router.add_post(DEVICE_PATH, self._device)
        app.router.add_post(MEDIA_PATH, self._media)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.options.host, self.options.http_port)
        await site.start()
        self.http_port = int(self._runner.addresses[0][1])
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _DiscoveryResponder(self), sock=self._discovery_socket()
        )
        self._udp = transport
        self.discovery_port = int(transport.get_extra_info("sockname")[1])
        log.info(
            "ONVIF camera %s: device service %s, discovery port %d", self.options.name, self.xaddr, self.discovery_port
        )

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OnvifCamera:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _discovery_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            if self.options.multicast:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("", self.options.discovery_port))
                membership = struct.pack("4s4s", socket.inet_aton(MULTICAST_GROUP), socket.inet_aton(self.options.host))
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            else:
                sock.bind((self.options.host, self.options.discovery_port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    # --- what it claims ----------------------------------------------------------------

    @property
    def xaddr(self) -> str:
        return f"http://{self.options.advertise_host or self.options.host}:{self.http_port}{DEVICE_PATH}"

    @property
    def media_xaddr(self) -> str:
        return f"http://{self.options.media_host or self.options.advertise_host or self.options.host}:{self.http_port}{MEDIA_PATH}"

    def stream_url(self, profile: SimProfile) -> str:
        url = profile.rtsp_url or self.options.rtsp_url
        if self.options.stream_host is None:
            return url
        parts = urlsplit(url)
        netloc = self.options.stream_host + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))

    def camera_time(self) -> float:
        return time.time() + self.options.clock_offset

    # --- WS-Discovery ------------------------------------------------------------------

    def probe_match(self, data: bytes) -> bytes | None:
        """The ProbeMatches answering a Probe datagram, or None (not a Probe, or another type asked for)."""
        root = xml.parse(data[:65536])
        body = xml.child(root, "Body") if root is not None else None
        probe = xml.child(body, "Probe")
        message_id = xml.text_of(xml.child(xml.child(root, "Header"), "MessageID"), 256)
        if probe is None or not message_id:
            return None
        wanted = xml.text_of(xml.child(probe, "Types")).split()
        if wanted and not any(t.rsplit(":", 1)[-1] in ("NetworkVideoTransmitter", "Device") for t in wanted):
            return None
        o = self.options
        scopes = " ".join(
            (
                "onvif://www.onvif.org/type/video_encoder",
                "onvif://www.onvif.org/Profile/Streaming",
                f"onvif://www.onvif.org/hardware/{o.model}",
                f"onvif://www.onvif.org/name/{o.name.replace(' ', '%20')}",
                "onvif://www.onvif.org/location/country/china",
            )
        )
        self.probes_answered += 1
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<env:Envelope xmlns:env="{NS_SOAP}" xmlns:wsa="{NS_ADDRESSING}" xmlns:wsdd="{NS_DISCOVERY}" '
            f'xmlns:dn="http://www.onvif.org/ver10/network/wsdl" xmlns:tds="{NS_DEVICE}">'
            "<env:Header>"
            f"<wsa:MessageID>urn:uuid:{uuid.uuid4()}</wsa:MessageID>"
            f"<wsa:RelatesTo>{xml.escape(message_id)}</wsa:RelatesTo>"
            f"<wsa:To>{NS_ADDRESSING}/role/anonymous</wsa:To>"
            f"<wsa:Action>{NS_DISCOVERY}/ProbeMatches</wsa:Action>"
            "</env:Header><env:Body><wsdd:ProbeMatches><wsdd:ProbeMatch>"
            f"<wsa:EndpointReference><wsa:Address>{xml.escape(o.endpoint)}</wsa:Address></wsa:EndpointReference>"
            "<wsdd:Types>dn:NetworkVideoTransmitter tds:Device</wsdd:Types>"
            f"<wsdd:Scopes>{xml.escape(scopes)}</wsdd:Scopes>"
            f"<wsdd:XAddrs>{xml.escape(self.xaddr)}</wsdd:XAddrs>"
            "<wsdd:MetadataVersion>1</wsdd:MetadataVersion>"
            "</wsdd:ProbeMatch></wsdd:ProbeMatches></env:Body></env:Envelope>"
        ).encode()

    # --- SOAP --------------------------------------------------------------------------

    async def _device(self, request: web.Request) -> web.Response:
        return await self._serve(request, DEVICE_OPERATIONS)

    async def _media(self, request: web.Request) -> web.Response:
        return await self._serve(request, MEDIA_OPERATIONS)

    async def _serve(self, request: web.Request, operations: frozenset[str]) -> web.Response:
        root = xml.parse(await request.read())
        body = xml.child(root, "Body") if root is not None and xml.local(root.tag) == "Envelope" else None
        operation = next(iter(body), None) if body is not None else None
        if operation is None:
            return _fault("env:Sender", "ter:WellFormed", "not a SOAP envelope")
        name = xml.local(operation.tag)
        self.calls.append(name)
        if name not in operations:
            return _fault("env:Receiver", "ter:ActionNotSupported", f"{name} is not supported here", status=500)
        if name != "GetSystemDateAndTime":
            refused = self._http_digest_refusal(request) if self.options.http_digest else self._wsse_refusal(root)
            if refused is not None:
                self.auth_failures += 1
                return refused
        try:
            return _ok(getattr(self, f"_{name}")(operation))
        except _SoapFault as exc:
            return _fault(exc.code, exc.subcode, exc.reason)

    def _wsse_refusal(self, root: Element | None) -> web.Response | None:
        token = next(xml.descendants(root, "UsernameToken"), None) if root is not None else None
        username = xml.text_of(xml.child(token, "Username"))
        digest = xml.text_of(xml.child(token, "Password"))
        nonce_text = xml.text_of(xml.child(token, "Nonce"))
        created = xml.text_of(xml.child(token, "Created"))
        try:
            nonce = base64.b64decode(nonce_text, validate=True)
            at = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        except ValueError:
            return _not_authorized()
        expected = base64.b64encode(hashlib.sha1(nonce + created.encode() + self.options.password.encode()).digest())
        if (
            username != self.options.username
            or not hmac.compare_digest(expected, digest.encode())
            or abs(at - self.camera_time()) > self.options.max_skew
            or nonce_text in self._nonces
        ):
            return _not_authorized()
        self._nonces.append(nonce_text)
        return None

    def _http_digest_refusal(self, request: web.Request) -> web.Response | None:
        """HTTP Digest (RFC 7616, MD5, qop=auth) as gSOAP-based cameras do it."""
        realm = f"Login to {self.options.serial}"
        header = request.headers.get("Authorization", "")
        if header.startswith("Digest "):
            fields = _digest_fields(header[7:])
            o = self.options
            ha1 = hashlib.md5(f"{o.username}:{realm}:{o.password}".encode()).hexdigest()
            ha2 = hashlib.md5(f"{request.method}:{fields.get('uri', '')}".encode()).hexdigest()
            expected = hashlib.md5(
                f"{ha1}:{fields.get('nonce', '')}:{fields.get('nc', '')}:{fields.get('cnonce', '')}:auth:{ha2}".encode()
            ).hexdigest()
            if (
                fields.get("username") == o.username
                and fields.get("nonce") in self._digest_nonces
                and hmac.compare_digest(expected, fields.get("response", ""))
            ):
                return None
        nonce = secrets.token_hex(16)
        self._digest_nonces.append(nonce)
        return web.Response(
            status=401,
            headers={"WWW-Authenticate": f'Digest realm="{realm}", qop="auth", nonce="{nonce}", algorithm=MD5'},
        )

    # --- operations (named after the SOAP operation) -----------------------------------

    def _GetSystemDateAndTime(self, _: Element) -> str:
        now = datetime.fromtimestamp(self.camera_time(), UTC)
        return (
            "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
            "<tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>"
            "<tt:TimeZone><tt:TZ>CST-8:00:00</tt:TZ></tt:TimeZone>"
            f"<tt:UTCDateTime><tt:Time><tt:Hour>{now.hour}</tt:Hour><tt:Minute>{now.minute}</tt:Minute>"
            f"<tt:Second>{now.second}</tt:Second></tt:Time><tt:Date><tt:Year>{now.year}</tt:Year>"
            f"<tt:Month>{now.month}</tt:Month><tt:Day>{now.day}</tt:Day></tt:Date></tt:UTCDateTime>"
            "</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>"
        )

    def _GetDeviceInformation(self, _: Element) -> str:
        o = self.options
        return (
            "<tds:GetDeviceInformationResponse>"
            f"<tds:Manufacturer>{xml.escape(o.manufacturer)}</tds:Manufacturer><tds:Model>{xml.escape(o.model)}</tds:Model>"
            f"<tds:FirmwareVersion>{xml.escape(o.firmware)}</tds:FirmwareVersion>"
            f"<tds:SerialNumber>{xml.escape(o.serial)}</tds:SerialNumber><tds:HardwareId>88</tds:HardwareId>"
            "</tds:GetDeviceInformationResponse>"
        )

    def _GetCapabilities(self, _: Element) -> str:
        return (
            "<tds:GetCapabilitiesResponse><tds:Capabilities>"
            f"<tt:Media><tt:XAddr>{xml.escape(self.media_xaddr)}</tt:XAddr>"
            "<tt:StreamingCapabilities><tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP>"
            "<tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>"
            "</tds:Capabilities></tds:GetCapabilitiesResponse>"
        )

    def _GetProfiles(self, _: Element) -> str:
        items = []
        for p in self.options.profiles:
            items.append(
                f'<trt:Profiles token="{xml.escape(p.token)}" fixed="true"><tt:Name>{xml.escape(p.name)}</tt:Name>'
                '<tt:VideoSourceConfiguration token="VideoSourceToken"><tt:Name>VideoSourceConfig</tt:Name>'
                "<tt:UseCount>2</tt:UseCount><tt:SourceToken>VideoSource_1</tt:SourceToken>"
                f'<tt:Bounds x="0" y="0" width="{p.width}" height="{p.height}"/></tt:VideoSourceConfiguration>'
                f'<tt:VideoEncoderConfiguration token="VideoEncoderToken_{xml.escape(p.token)}">'
                f"<tt:Name>VideoEncoder_{xml.escape(p.token)}</tt:Name><tt:UseCount>1</tt:UseCount>"
                f"<tt:Encoding>{xml.escape(p.encoding)}</tt:Encoding>"
                f"<tt:Resolution><tt:Width>{p.width}</tt:Width><tt:Height>{p.height}</tt:Height></tt:Resolution>"
                "<tt:Quality>3.000000</tt:Quality>"
                f"<tt:RateControl><tt:FrameRateLimit>{p.frame_rate}</tt:FrameRateLimit>"
                "<tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>2048</tt:BitrateLimit></tt:RateControl>"
                f"<tt:H264><tt:GovLength>{p.frame_rate * 2}</tt:GovLength><tt:H264Profile>Main</tt:H264Profile></tt:H264>"
                "<tt:SessionTimeout>PT5S</tt:SessionTimeout></tt:VideoEncoderConfiguration></trt:Profiles>"
            )
        return f"<trt:GetProfilesResponse>{''.join(items)}</trt:GetProfilesResponse>"

    def _GetStreamUri(self, operation: Element) -> str:
        token = xml.text_of(xml.child(operation, "ProfileToken"))
        profile = next((p for p in self.options.profiles if p.token == token), None)
        if profile is None:
            raise _SoapFault("env:Sender", "ter:NoProfile", f"no profile {token[:64]}")
        return (
            "<trt:GetStreamUriResponse><trt:MediaUri>"
            f"<tt:Uri>{xml.escape(self.stream_url(profile))}</tt:Uri>"
            "<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot>"
            "<tt:Timeout>PT60S</tt:Timeout></trt:MediaUri></trt:GetStreamUriResponse>"
        )


DEVICE_OPERATIONS = frozenset({"GetSystemDateAndTime", "GetDeviceInformation", "GetCapabilities"})
MEDIA_OPERATIONS = frozenset({"GetProfiles", "GetStreamUri"})


class _SoapFault(Exception):
    def __init__(self, code: str, subcode: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.subcode, self.reason = code, subcode, reason


def _ok(body: str) -> web.Response:
    return web.Response(
        body=f'<?xml version="1.0" encoding="UTF-8"?><env:Envelope {_ENVELOPE_NS}><env:Body>{body}</env:Body></env:Envelope>',
        content_type="application/soap+xml",
        charset="utf-8",
    )


def _fault(code: str, subcode: str, reason: str, *, status: int = 400) -> web.Response:
    return web.Response(
        status=status,
        body=(
            f'<?xml version="1.0" encoding="UTF-8"?><env:Envelope {_ENVELOPE_NS}><env:Body><env:Fault>'
            f"<env:Code><env:Value>{code}</env:Value><env:Subcode><env:Value>{subcode}</env:Value></env:Subcode></env:Code>"
            f'<env:Reason><env:Text xml:lang="en">{xml.escape(reason)}</env:Text></env:Reason>'
            "</env:Fault></env:Body></env:Envelope>"
        ),
        content_type="application/soap+xml",
        charset="utf-8",
    )


def _not_authorized() -> web.Response:
    return _fault("env:Sender", "ter:NotAuthorized", "Sender not Authorized")


def _digest_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, _, value = part.strip().partition("=")
        fields[key.strip().lower()] = value.strip().strip('"')
    return fields


class _DiscoveryResponder(asyncio.DatagramProtocol):
    def __init__(self, camera: OnvifCamera) -> None:
        self.camera = camera
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            reply = self.camera.probe_match(data)
        except Exception:
            log.exception("ONVIF camera: probe from %s dropped", addr[0])
            return
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


async def _main(args: argparse.Namespace) -> None:
    options = OnvifCameraOptions(
        rtsp_url=args.rtsp_url,
        username=args.username,
        password=args.password,
        host=args.host,
        http_port=args.http_port,
        discovery_port=args.discovery_port,
        multicast=not args.no_multicast,
    )
    async with OnvifCamera(options) as camera:
        print(f"ONVIF camera: {camera.xaddr} (user {options.username}), WS-Discovery on UDP {camera.discovery_port}")
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="a simulated ONVIF camera (WS-Discovery + device/media services)")
    parser.add_argument("--rtsp-url", required=True, help="where its profiles' stream URIs point")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (and the multicast interface)")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--discovery-port", type=int, default=3702)
    parser.add_argument("--no-multicast", action="store_true", help="answer unicast probes only")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", default="admin12345")
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
