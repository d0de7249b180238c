"""The ONVIF SOAP calls profile lookup needs, sans-I/O: request envelopes and reply readers.

Five operations, SOAP 1.2 over HTTP POST (ONVIF Core §5, Media §5):
``GetSystemDateAndTime`` (unauthenticated; the camera's clock, for the token's
Created), ``GetDeviceInformation``, ``GetCapabilities`` (Media; where the media
service is), ``GetProfiles`` and ``GetStreamUri`` (Media 1.0, ``RTP-Unicast`` over
``RTSP``). Authentication is the WS-Security UsernameToken with PasswordDigest
(OASIS WSS UsernameToken Profile 1.0 §3.1; ONVIF Core §5.12):
``Base64(SHA-1(nonce + Created + password))``. Cameras that use HTTP Digest
instead are handled by the adapter (:mod:`gateway.onvif.client`).

Replies are claims: :func:`read_reply` caps the size, refuses DTDs and entities,
maps a Fault to :class:`OnvifAuthError` (``ter:NotAuthorized``,
``wsse:FailedAuthentication``, HTTP 401/403) or :class:`OnvifFault`, and anything
without a SOAP envelope to :class:`NotOnvifError`. The readers bound every value.
Pure: the nonce and the time are passed in.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from xml.etree.ElementTree import Element

from gateway.onvif import xml
from gateway.onvif.errors import NotOnvifError, OnvifAuthError, OnvifFault, OnvifProtocolError

__all__ = [
    "MAX_PROFILES",
    "MAX_REPLY",
    "Credentials",
    "DeviceInformation",
    "MediaProfile",
    "Operation",
    "created_text",
    "envelope",
    "get_capabilities",
    "get_device_information",
    "get_profiles",
    "get_stream_uri",
    "get_system_date_and_time",
    "parse_device_information",
    "parse_media_xaddr",
    "parse_profiles",
    "parse_stream_uri",
    "parse_system_time",
    "password_digest",
    "read_reply",
    "security_header",
]

#: Largest reply body we read (a 16-profile GetProfiles of a real NVR is ~60 KiB).
MAX_REPLY = 1024 * 1024
#: Most profiles we look at (a camera has 2–4; an NVR one per channel and stream).
MAX_PROFILES = 32
MAX_FIELD = 128  # a name, token, manufacturer, model, firmware, serial

NS_SOAP = "http://www.w3.org/2003/05/soap-envelope"
NS_DEVICE = "http://www.onvif.org/ver10/device/wsdl"
NS_MEDIA = "http://www.onvif.org/ver10/media/wsdl"
NS_SCHEMA = "http://www.onvif.org/ver10/schema"
NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
NS_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
PASSWORD_DIGEST = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"
BASE64_BINARY = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
_AUTH_FAULTS = frozenset({"NotAuthorized", "FailedAuthentication", "InvalidSecurityToken", "InvalidSecurity"})


@dataclass(frozen=True, slots=True)
class Credentials:
    """A camera's user name and password; ``repr`` never shows the password."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Operation:
    """One request: the envelope body and the action URI for the Content-Type."""

    action: str
    body: str
    authenticated: bool = True


@dataclass(frozen=True, slots=True)
class DeviceInformation:
    """GetDeviceInformation, each field bounded (empty when the camera left it out)."""

    manufacturer: str = ""
    model: str = ""
    firmware: str = ""
    serial: str = ""


@dataclass(frozen=True, slots=True)
class MediaProfile:
    """One media profile's video part (``encoding`` as Media 1.0 says: JPEG, MPEG4 or H264)."""

    token: str
    name: str
    encoding: str
    width: int
    height: int
    frame_rate: int


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """``Base64(SHA-1(nonce + created + password))``, the UsernameToken PasswordDigest."""
    return base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()


def created_text(at: float) -> str:
    """A UTC xsd:dateTime for Created, to the second (what cameras parse reliably)."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def security_header(credentials: Credentials, nonce: bytes, created: str) -> str:
    """The ``wsse:Security`` header element with a digest UsernameToken."""
    digest = password_digest(nonce, created, credentials.password)
    return (
        f'<wsse:Security xmlns:wsse="{NS_WSSE}" xmlns:wsu="{NS_WSU}" s:mustUnderstand="1">'
        "<wsse:UsernameToken>"
        f"<wsse:Username>{xml.escape(credentials.username)}</wsse:Username>"
        f'<wsse:Password Type="{PASSWORD_DIGEST}">{digest}</wsse:Password>'
        f'<wsse:Nonce EncodingType="{BASE64_BINARY}">{base64.b64encode(nonce).decode()}</wsse:Nonce>'
        f"<wsu:Created>{created}</wsu:Created>"
        "</wsse:UsernameToken>"
        "</wsse:Security>"
    )


def envelope(operation: Operation, security: str = "") -> bytes:
    """The SOAP 1.2 request (``security``: the header from :func:`security_header`, or none)."""
    header = f"<s:Header>{security}</s:Header>" if security else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<s:Envelope xmlns:s="{NS_SOAP}" xmlns:tds="{NS_DEVICE}" xmlns:trt="{NS_MEDIA}" xmlns:tt="{NS_SCHEMA}">'
        f"{header}<s:Body>{operation.body}</s:Body></s:Envelope>"
    ).encode()


def get_system_date_and_time() -> Operation:
    """Unauthenticated by the spec (a client needs the camera's clock to make a token)."""
    return Operation(f"{NS_DEVICE}/GetSystemDateAndTime", "<tds:GetSystemDateAndTime/>", authenticated=False)


def get_device_information() -> Operation:
    return Operation(f"{NS_DEVICE}/GetDeviceInformation", "<tds:GetDeviceInformation/>")


def get_capabilities() -> Operation:
    return Operation(
        f"{NS_DEVICE}/GetCapabilities", "<tds:GetCapabilities><tds:Category>Media</tds:Category></tds:GetCapabilities>"
    )


def get_profiles() -> Operation:
    return Operation(f"{NS_MEDIA}/GetProfiles", "<trt:GetProfiles/>")


def get_stream_uri(profile_token: str) -> Operation:
    return Operation(
        f"{NS_MEDIA}/GetStreamUri",
        "<trt:GetStreamUri><trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream>"
        "<tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport></trt:StreamSetup>"
        f"<trt:ProfileToken>{xml.escape(profile_token)}</trt:ProfileToken></trt:GetStreamUri>",
    )


def read_reply(status: int, body: bytes) -> Element:
    """The SOAP Body of a 2xx reply; the specific error for anything else.

    ``body`` must already be capped at :data:`MAX_REPLY` by the reader (a longer one is
    refused here too, in case a caller forgot).
    """
    if len(body) > MAX_REPLY:
        raise OnvifProtocolError(f"reply larger than {MAX_REPLY} bytes")
    if status in (401, 403):
        raise OnvifAuthError(f"HTTP {status}")
    root = xml.parse(body) if body else None
    soap_body = xml.child(root, "Body") if root is not None and xml.local(root.tag) == "Envelope" else None
    if soap_body is None:
        raise NotOnvifError(f"HTTP {status} without a SOAP envelope")
    fault = xml.child(soap_body, "Fault")
    if fault is not None:
        raise _fault(fault)
    if not 200 <= status < 300:
        raise NotOnvifError(f"HTTP {status} with a SOAP body that is no Fault")
    return soap_body


def _fault(fault: Element) -> OnvifAuthError | OnvifFault:
    codes = [xml.text_of(v, MAX_FIELD) for v in xml.descendants(fault, "Value")]
    codes += [xml.text_of(xml.child(fault, "faultcode"), MAX_FIELD)]  # SOAP 1.1 cameras
    reason = xml.text_of(next(xml.descendants(fault, "Text"), None), MAX_FIELD) or xml.text_of(
        xml.child(fault, "faultstring"), MAX_FIELD
    )
    names = [c.rsplit(":", 1)[-1] for c in codes if c]
    if any(name in _AUTH_FAULTS for name in names):
        return OnvifAuthError(f"SOAP fault {' / '.join(c for c in codes if c)}: {reason}")
    code = next((c for c in reversed(codes) if c), "")
    return OnvifFault(f"SOAP fault {code}: {reason}", code=code)


def _field(element: Element | None, name: str) -> str:
    value = xml.text_of(xml.child(element, name), MAX_FIELD)
    return "".join(ch for ch in value if ch.isprintable())


def _int(element: Element | None, name: str, limit: int = 100_000) -> int:
    text = xml.text_of(xml.child(element, name), 12)
    try:
        value = int(float(text)) if text else 0
    except ValueError:
        return 0
    return value if 0 <= value <= limit else 0


def _response(body: Element, name: str) -> Element:
    element = xml.child(body, name)
    if element is None:
        raise OnvifProtocolError(f"no {name} in the reply")
    return element


def parse_system_time(body: Element) -> float | None:
    """The camera's UTC clock as a POSIX time, or None when it gave no usable UTCDateTime."""
    info = xml.child(_response(body, "GetSystemDateAndTimeResponse"), "SystemDateAndTime")
    utc = xml.child(info, "UTCDateTime")
    date, time_of_day = xml.child(utc, "Date"), xml.child(utc, "Time")
    if date is None or time_of_day is None:
        return None
    try:
        moment = datetime(
            _int(date, "Year"),
            _int(date, "Month"),
            _int(date, "Day"),
            _int(time_of_day, "Hour"),
            _int(time_of_day, "Minute"),
            _int(time_of_day, "Second"),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    return moment.timestamp()


def parse_device_information(body: Element) -> DeviceInformation:
    """GetDeviceInformationResponse's fields (bounded, printable)."""
    response = _response(body, "GetDeviceInformationResponse")
    return DeviceInformation(
        manufacturer=_field(response, "Manufacturer"),
        model=_field(response, "Model"),
        firmware=_field(response, "FirmwareVersion"),
        serial=_field(response, "SerialNumber"),
    )


def parse_media_xaddr(body: Element) -> str | None:
    """The media service XAddr from GetCapabilitiesResponse, unchecked (see :func:`gateway.onvif.urls.rebase`)."""
    capabilities = xml.child(_response(body, "GetCapabilitiesResponse"), "Capabilities")
    media = xml.child(capabilities, "Media")
    value = xml.text_of(xml.child(media, "XAddr"))
    return value or None


def parse_profiles(body: Element) -> tuple[MediaProfile, ...]:
    """The profiles that carry a video encoder (at most :data:`MAX_PROFILES`; tokens unique)."""
    response = _response(body, "GetProfilesResponse")
    found: dict[str, MediaProfile] = {}
    for element in xml.children(response, "Profiles"):
        if len(found) >= MAX_PROFILES:
            break
        token = "".join(ch for ch in element.get("token", "")[:MAX_FIELD] if ch.isprintable())
        encoder = xml.child(element, "VideoEncoderConfiguration")
        if not token or encoder is None or token in found:
            continue
        resolution = xml.child(encoder, "Resolution")
        found[token] = MediaProfile(
            token=token,
            name=_field(element, "Name"),
            encoding=_field(encoder, "Encoding").upper()[:16],
            width=_int(resolution, "Width", 16384),
            height=_int(resolution, "Height", 16384),
            frame_rate=_int(xml.child(encoder, "RateControl"), "FrameRateLimit", 1000),
        )
    return tuple(found.values())


def parse_stream_uri(body: Element) -> str:
    """GetStreamUriResponse's Uri, unchecked (see :func:`gateway.onvif.urls.stream_uri`)."""
    media_uri = xml.child(_response(body, "GetStreamUriResponse"), "MediaUri")
    uri = xml.text_of(xml.child(media_uri, "Uri"))
    if not uri:
        raise OnvifProtocolError("GetStreamUriResponse without a Uri")
    return uri
