"""Which addresses ONVIF lookups agree to contact: every URL a camera sends is a claim.

Decisions (docs/onvif.md, "Who may say what"):

* An XAddr is an ``http``/``https`` URL with a host, no user info, at most
  :data:`MAX_URL` characters. Anything else is refused (:class:`OnvifAddressError`).
* Discovery keeps only XAddrs whose host is the address the reply came from: a
  datagram can announce its sender, never send the gateway to a third host.
* Profile lookup talks only to the host the operator gave. When the device service
  names its media service on another host (a camera behind NAT names its LAN
  address), the media URL is moved onto the operator's host and port; the path is kept.
* A stream URI must be ``rtsp``/``rtsps``; user info in it is dropped (the credentials
  are stored separately) and a host other than the device's is replaced by the
  device's host (the port and path are kept), flagged as ``rewritten``.

Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

from gateway.onvif.errors import OnvifAddressError

__all__ = ["MAX_URL", "HttpAddress", "StreamUri", "parse_xaddr", "rebase", "stream_uri"]

#: Longest URL we accept from anyone (a real XAddr or stream URI is < 150 characters).
MAX_URL = 512

_DEFAULT_PORTS = {"http": 80, "https": 443, "rtsp": 554, "rtsps": 322}


@dataclass(frozen=True, slots=True)
class HttpAddress:
    """A checked ``http(s)://host:port/path`` (``host`` lower-case, IPv6 without brackets)."""

    scheme: str
    host: str
    port: int
    path: str

    @property
    def url(self) -> str:
        """The URL with an explicit port."""
        return f"{self.scheme}://{_netloc(self.host, self.port)}{self.path}"

    @property
    def origin(self) -> str:
        """``scheme://host:port`` (what an HTTP client connects to)."""
        return f"{self.scheme}://{_netloc(self.host, self.port)}"

    def same_host(self, host: str) -> bool:
        """True when ``host`` names the same host (IP literals compared as addresses)."""
        return _same_host(self.host, host)


@dataclass(frozen=True, slots=True)
class StreamUri:
    """A stream URI after policy: ``uri`` is what to use, ``claimed`` what the camera said."""

    uri: str
    claimed: str
    rewritten: bool


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _same_host(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a.lower().rstrip(".") == b.lower().rstrip(".")


def _split(text: str, schemes: tuple[str, ...], what: str) -> SplitResult:
    if not isinstance(text, str) or not text or len(text) > MAX_URL:
        raise OnvifAddressError(f"{what} missing or longer than {MAX_URL} characters")
    if not text.isprintable() or any(ch.isspace() for ch in text):
        raise OnvifAddressError(f"{what} contains spaces or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise OnvifAddressError(f"{what} is not a URL: {exc}") from exc
    if parts.scheme.lower() not in schemes:
        raise OnvifAddressError(f"{what} scheme must be one of {', '.join(schemes)}")
    if not parts.hostname:
        raise OnvifAddressError(f"{what} has no host")
    if port == 0:
        raise OnvifAddressError(f"{what} has port 0")
    return parts


def parse_xaddr(text: str) -> HttpAddress:
    """A device or media service URL, checked (:class:`OnvifAddressError` otherwise)."""
    parts = _split(text, ("http", "https"), "XAddr")
    if parts.username is not None or parts.password is not None:
        raise OnvifAddressError("XAddr must not carry a user name or password")
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return HttpAddress(scheme, host, parts.port or _DEFAULT_PORTS[scheme], path)


def rebase(claimed: str, operator: HttpAddress) -> HttpAddress:
    """A service URL the device named, kept on the operator's host.

    Same host: used as given (another port on the same camera is fine). Another host:
    moved onto the operator's scheme, host and port, with the claimed path.
    """
    address = parse_xaddr(claimed)
    if operator.same_host(address.host):
        return address
    return HttpAddress(operator.scheme, operator.host, operator.port, address.path)


def stream_uri(claimed: str, device_host: str) -> StreamUri:
    """The RTSP URI a camera gave for a profile, after the policy in the module docstring."""
    parts = _split(claimed, ("rtsp", "rtsps"), "stream URI")
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    rewritten = parts.username is not None or parts.password is not None
    if not _same_host(host, device_host):
        host, rewritten = device_host, True
    netloc = _netloc(host, port) if port else (f"[{host}]" if ":" in host else host)
    uri = urlunsplit((scheme, netloc, parts.path, parts.query, ""))
    return StreamUri(uri=uri, claimed=_without_userinfo(parts), rewritten=rewritten)


def _without_userinfo(parts: SplitResult) -> str:
    """The claimed URI without a password (it is shown to the operator and may be logged)."""
    host = parts.hostname or ""
    netloc = _netloc(host, parts.port) if parts.port else (f"[{host}]" if ":" in host else host)
    return urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, ""))
