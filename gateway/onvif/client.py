"""Profile lookup over HTTP (asyncio adapter): device information, profiles and their RTSP URIs.

:func:`lookup_profiles` runs the calls of :mod:`gateway.onvif.soap` against the one
device service the operator named, applying :mod:`gateway.onvif.urls` to every
address the camera returns. It never follows a redirect, reads at most
:data:`~gateway.onvif.soap.MAX_REPLY` bytes per reply, and runs under one deadline.

Authentication: a WS-Security digest UsernameToken whose Created uses the camera's
own clock (from the unauthenticated GetSystemDateAndTime; cameras refuse tokens
more than a few seconds off their clock), plus HTTP Digest (aiohttp's
``DigestAuthMiddleware``) for cameras that answer 401 with a Digest challenge. HTTP
Basic is never sent. ``https`` XAddrs are used without certificate verification:
cameras carry self-signed certificates, and neither digest reveals the password.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from xml.etree.ElementTree import Element

import aiohttp

from gateway.logsafe import printable
from gateway.onvif import soap
from gateway.onvif.errors import (
    NotOnvifError,
    OnvifAddressError,
    OnvifAuthError,
    OnvifFault,
    OnvifProtocolError,
    OnvifTimeout,
    OnvifUnreachable,
)
from gateway.onvif.urls import HttpAddress, parse_xaddr, rebase, stream_uri

__all__ = ["CameraProfiles", "ProfileStream", "lookup_profiles"]

log = logging.getLogger("kgw.onvif")


@dataclass(frozen=True, slots=True)
class ProfileStream:
    """A media profile and its RTSP URI after policy (``rewritten``: host or user info replaced)."""

    profile: soap.MediaProfile
    rtsp_uri: str
    claimed_uri: str
    rewritten: bool

    def to_json(self) -> dict[str, object]:
        p = self.profile
        return {
            "token": p.token,
            "name": p.name,
            "encoding": p.encoding,
            "width": p.width,
            "height": p.height,
            "frame_rate": p.frame_rate,
            "rtsp_uri": self.rtsp_uri,
            "claimed_uri": self.claimed_uri,
            "rewritten": self.rewritten,
        }


@dataclass(frozen=True, slots=True)
class CameraProfiles:
    """What profile lookup found on one camera."""

    xaddr: str
    media_xaddr: str
    device: soap.DeviceInformation
    profiles: tuple[ProfileStream, ...]
    clock_offset: float  # camera clock minus ours, s
    skipped: int  # profiles whose stream URI the camera refused or that broke policy

    def to_json(self) -> dict[str, object]:
        d = self.device
        return {
            "xaddr": self.xaddr,
            "media_xaddr": self.media_xaddr,
            "manufacturer": d.manufacturer,
            "model": d.model,
            "firmware": d.firmware,
            "serial": d.serial,
            "clock_offset": round(self.clock_offset, 1),
            "skipped": self.skipped,
            "profiles": [p.to_json() for p in self.profiles],
        }


class _Caller:
    """Sends one operation at a time with the token and the camera's clock offset."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        credentials: soap.Credentials,
        clock: Callable[[], float],
        nonce: Callable[[int], bytes],
    ) -> None:
        self.session = session
        self.credentials = credentials
        self.clock = clock
        self.nonce = nonce
        self.offset = 0.0

    async def call(self, address: HttpAddress, operation: soap.Operation) -> Element:
        authenticated = operation.authenticated and bool(self.credentials.username)
        security = ""
        middlewares: tuple[aiohttp.DigestAuthMiddleware, ...] = ()
        if authenticated:
            created = soap.created_text(self.clock() + self.offset)
            security = soap.security_header(self.credentials, self.nonce(16), created)
            middlewares = (aiohttp.DigestAuthMiddleware(self.credentials.username, self.credentials.password),)
        headers = {"Content-Type": f'application/soap+xml; charset=utf-8; action="{operation.action}"'}
        try:
            async with self.session.post(
                address.url,
                data=soap.envelope(operation, security),
                headers=headers,
                allow_redirects=False,
                middlewares=middlewares,
                ssl=address.scheme != "https",  # cameras: self-signed certificates
            ) as response:
                status = response.status
                body = await _read_capped(response)
        except TimeoutError as exc:
            raise OnvifTimeout(f"{address.origin}: no answer") from exc
        except aiohttp.ClientConnectorError as exc:
            raise OnvifUnreachable(f"{address.origin}: {exc.os_error.strerror or exc}") from exc
        except aiohttp.ClientError as exc:
            raise NotOnvifError(f"{address.origin}: {type(exc).__name__}") from exc
        if 300 <= status < 400:
            raise NotOnvifError(f"{address.origin}: HTTP {status} redirect (not followed)")
        return soap.read_reply(status, body)


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    declared = response.content_length
    if declared is not None and declared > soap.MAX_REPLY:
        raise OnvifProtocolError(f"reply of {declared} bytes announced")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > soap.MAX_REPLY:
            raise OnvifProtocolError(f"reply larger than {soap.MAX_REPLY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def lookup_profiles(
    xaddr: str,
    credentials: soap.Credentials,
    *,
    timeout: float = 15.0,
    session: aiohttp.ClientSession | None = None,
    clock: Callable[[], float] = time.time,
    nonce: Callable[[int], bytes] = os.urandom,
) -> CameraProfiles:
    """Device information, profiles and RTSP URIs of the camera whose device service is ``xaddr``.

    Raises :class:`OnvifAddressError` (bad ``xaddr``), :class:`OnvifAuthError`,
    :class:`NotOnvifError`, :class:`OnvifUnreachable`, :class:`OnvifTimeout`,
    :class:`OnvifProtocolError` or :class:`OnvifFault`.
    """
    operator = parse_xaddr(xaddr)
    own = session is None
    http = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
    try:
        async with asyncio.timeout(timeout):
            return await _lookup(operator, _Caller(http, credentials, clock, nonce))
    except TimeoutError as exc:
        raise OnvifTimeout(f"{operator.origin}: lookup took longer than {timeout:g} s") from exc
    finally:
        if own:
            await http.close()


async def _lookup(operator: HttpAddress, caller: _Caller) -> CameraProfiles:
    try:
        camera_time = soap.parse_system_time(await caller.call(operator, soap.get_system_date_and_time()))
    except (OnvifAuthError, OnvifFault, OnvifProtocolError):
        camera_time = None  # some cameras want a token even here: go on with our own clock
    if camera_time is not None:
        caller.offset = camera_time - caller.clock()
    device = soap.parse_device_information(await caller.call(operator, soap.get_device_information()))
    media = operator
    try:
        claimed = soap.parse_media_xaddr(await caller.call(operator, soap.get_capabilities()))
        if claimed is not None:
            media = rebase(claimed, operator)
    except (OnvifFault, OnvifProtocolError, OnvifAddressError) as exc:
        log.info("onvif %s: no usable media XAddr (%s), using the device service", operator.origin, printable(exc))
    profiles = soap.parse_profiles(await caller.call(media, soap.get_profiles()))
    streams: list[ProfileStream] = []
    skipped = 0
    for profile in profiles:
        try:
            claimed_uri = soap.parse_stream_uri(await caller.call(media, soap.get_stream_uri(profile.token)))
            uri = stream_uri(claimed_uri, operator.host)
        except (OnvifFault, OnvifProtocolError, OnvifAddressError) as exc:
            skipped += 1
            log.info("onvif %s: profile %s skipped: %s", operator.origin, printable(profile.token), printable(exc))
            continue
        streams.append(ProfileStream(profile, uri.uri, uri.claimed, uri.rewritten))
    return CameraProfiles(
        xaddr=operator.url,
        media_xaddr=media.url,
        device=device,
        profiles=tuple(streams),
        clock_offset=caller.offset,
        skipped=skipped,
    )
