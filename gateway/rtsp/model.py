"""RTSP cameras as values: their configuration, their virtual GB IDs, their state, the reconnection delay.

Pure: no I/O, no clock, no randomness (jitter comes in as a number in [0, 1)).

IDs (docs/architecture.md §4, ``DDDDDD 00 11 TTT N KKKK NN``): a kindergarten
``<10 digits> 216 0 KKKK 00`` gets ONE virtual device ``<10 digits> 118 8 KKKK 00`` (an NVR
made by the gateway) and its RTSP cameras are the channels ``<10 digits> 131 8 KKKK NN``,
NN = 01..99. Digit 14 is the GB/T 28181 network code; the city numbers every real
front-end device with ``0`` (private video network) and ``8`` is kept for these
gateway-made IDs, so no real device or channel of the convention can ever have one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from gateway.errors import GatewayError
from gateway.gb28181.registrar import RefusalReason, RegisterDecision
from gateway.registry.model import AreaTag

__all__ = [
    "MAX_CAMERAS_PER_KINDERGARTEN",
    "VIRTUAL_NETWORK_DIGIT",
    "CameraState",
    "InvalidRtspCamera",
    "RtspCamera",
    "RtspCameraConfig",
    "backoff_delay",
    "channel_id_for",
    "is_virtual_id",
    "redact_url",
    "refusing_virtual_ids",
    "split_credentials",
    "virtual_device_id",
]

VIRTUAL_NETWORK_DIGIT = "8"  # digit 14 of the gateway-made IDs (real devices of the city use 0)
MAX_CAMERAS_PER_KINDERGARTEN = 99  # NN = 01..99
_KINDERGARTEN_ID = re.compile(r"^\d{10}2160\d{4}00$")
MAX_NAME = 100
MAX_URL = 1000
MAX_CREDENTIAL = 200


class InvalidRtspCamera(GatewayError, ValueError):
    """A camera configuration that cannot be used (bad URL, unknown kindergarten, no ID left…)."""


class CameraState(str, Enum):
    """What an RTSP camera's connection does now; ``label`` is what the console shows."""

    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"
    AUTH_FAILED = "auth_failed"
    UNSUPPORTED_CODEC = "unsupported_codec"
    DISABLED = "disabled"

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def retries_soon(self) -> bool:
        """Whether the puller tries again on the normal backoff (not after a refusal that needs an operator)."""
        return self in (CameraState.CONNECTING, CameraState.ONLINE, CameraState.OFFLINE)


_LABELS = {
    CameraState.CONNECTING: "连接中",
    CameraState.ONLINE: "在线",
    CameraState.OFFLINE: "离线",
    CameraState.AUTH_FAILED: "认证失败",
    CameraState.UNSUPPORTED_CODEC: "不支持的编码",
    CameraState.DISABLED: "已停用",
}


@dataclass(frozen=True, slots=True)
class RtspCameraConfig:
    """What an operator (or ONVIF discovery) gives to add a camera."""

    kindergarten_id: str
    name: str
    area: str
    url: str
    username: str = ""
    password: str = field(default="", repr=False)

    def checked(self) -> RtspCameraConfig:
        """This configuration normalised (credentials out of the URL), or :class:`InvalidRtspCamera`."""
        if not _KINDERGARTEN_ID.match(self.kindergarten_id):
            raise InvalidRtspCamera(
                f"kindergarten {self.kindergarten_id!r} does not follow the city's numbering (…2160KKKK00)"
            )
        name = self.name.strip()
        if not name or len(name) > MAX_NAME:
            raise InvalidRtspCamera(f"name must be 1..{MAX_NAME} characters")
        try:
            AreaTag(self.area)
        except ValueError:
            raise InvalidRtspCamera(
                f"unknown area {self.area!r}; one of {', '.join(a.value for a in AreaTag)}"
            ) from None
        url, user, password = split_credentials(self.url.strip())
        username = self.username or user
        password = self.password or password
        if len(username) > MAX_CREDENTIAL or len(password) > MAX_CREDENTIAL:
            raise InvalidRtspCamera(f"username and password must be at most {MAX_CREDENTIAL} characters")
        return RtspCameraConfig(self.kindergarten_id, name, self.area, url, username, password)


@dataclass(frozen=True, slots=True)
class RtspCamera:
    """A configured camera: its configuration and the virtual channel it is."""

    channel_id: str
    device_id: str
    kindergarten_id: str
    district_code: str
    name: str
    area: AreaTag
    url: str  # never with credentials in it
    username: str = ""
    password: str = field(default="", repr=False)
    enabled: bool = True
    created_by: str = ""
    created_at: float = 0.0

    @property
    def pull_url(self) -> str:
        """The URL with credentials, for the puller only (never logged, never returned)."""
        if not self.username:
            return self.url
        parts = urlsplit(self.url)
        auth = quote(self.username, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return urlunsplit((parts.scheme, f"{auth}@{parts.netloc}", parts.path, parts.query, parts.fragment))

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)


def split_credentials(url: str) -> tuple[str, str, str]:
    """``rtsp://user:pw@host/p`` → (``rtsp://host/p``, user, pw); :class:`InvalidRtspCamera` for a non-RTSP URL."""
    if len(url) > MAX_URL:
        raise InvalidRtspCamera(f"URL longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidRtspCamera(f"bad URL: {exc}") from None
    if parts.scheme.lower() not in ("rtsp", "rtsps") or not parts.hostname:
        raise InvalidRtspCamera("the URL must be rtsp://host[:port]/path")
    if any(c in url for c in "\r\n\t "):
        raise InvalidRtspCamera("the URL may not contain whitespace")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if port is None else f"{host}:{port}"
    bare = urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, ""))
    return bare, unquote(parts.username or ""), unquote(parts.password or "")


def redact_url(text: str) -> str:
    """Any ``scheme://user:pw@`` in ``text`` with the credentials replaced (for logs and errors)."""
    return re.sub(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@", r"\1***@", text)


def virtual_device_id(kindergarten_id: str) -> str:
    """The kindergarten's virtual device (an NVR of type 118 on network digit 8)."""
    return f"{kindergarten_id[:10]}118{VIRTUAL_NETWORK_DIGIT}{kindergarten_id[14:18]}00"


def channel_id_for(kindergarten_id: str, number: int) -> str:
    """The ``number``-th RTSP camera (1..99) of a kindergarten: a camera (131) on network digit 8."""
    if not 1 <= number <= MAX_CAMERAS_PER_KINDERGARTEN:
        raise InvalidRtspCamera(f"camera number {number} outside 1..{MAX_CAMERAS_PER_KINDERGARTEN}")
    return f"{kindergarten_id[:10]}131{VIRTUAL_NETWORK_DIGIT}{kindergarten_id[14:18]}{number:02d}"


def is_virtual_id(any_id: str) -> bool:
    """Whether a 20-digit ID is one of the gateway-made RTSP IDs (what no device may claim)."""
    return (
        len(any_id) == 20
        and any_id.isdigit()
        and any_id[13] == VIRTUAL_NETWORK_DIGIT
        and any_id[10:13] in ("118", "131")
    )


def refusing_virtual_ids(
    redirect_for: Callable[[str], RegisterDecision | None],
) -> Callable[[str], RegisterDecision | None]:
    """The registrar's early hook, refusing (403) a REGISTER that claims a gateway-made RTSP ID.

    Those IDs are the gateway's own: a device registering as the virtual device would take
    over its row and, with its catalog, the RTSP cameras' channels.
    """

    def decide(device_id: str) -> RegisterDecision | None:
        if is_virtual_id(device_id):
            return RegisterDecision(403, refusal=RefusalReason.BAD_ID, device_id=device_id)
        return redirect_for(device_id)

    return decide


def backoff_delay(failures: int, jitter: float, *, base: float = 1.0, cap: float = 60.0) -> float:
    """The wait before attempt ``failures + 1``: exponential, capped, with full jitter in [50 %, 100 %].

    ``jitter`` in [0, 1) comes from the caller's random source (kept out of this pure module),
    so cameras of a kindergarten that all dropped with its line do not come back in lockstep.
    """
    exp: float = min(cap, base * 2.0 ** max(0, min(failures - 1, 30)))
    return exp * (0.5 + 0.5 * jitter)
