"""Builders for the out-of-dialog requests GB/T 28181 nodes send (docs/gb28181.md §2).

Both roles use them: the gateway queries devices with MESSAGE, the device
agent (simulators) registers and keeps alive. The endpoint adds the Via.
:func:`target_id` is the one reading of "which ID is this request for" that
every request router (device hosts, upper links, the cascade relay) shares.
"""

from __future__ import annotations

from gateway.errors import SipError
from gateway.gb28181.sip.headers import Headers, SipUri
from gateway.gb28181.sip.message import SipRequest

MANSCDP_CONTENT_TYPE = "Application/MANSCDP+xml"


def sip_uri(user: str, host: str, port: int | None = None) -> str:
    """``sip:user@host[:port]``."""
    return f"sip:{user}@{host}:{port}" if port else f"sip:{user}@{host}"


def build_message(
    *,
    from_id: str,
    from_domain: str,
    from_tag: str,
    to_id: str,
    request_uri: str,
    to_domain: str,
    call_id: str,
    cseq: int,
    body: bytes,
    content_type: str = MANSCDP_CONTENT_TYPE,
) -> SipRequest:
    """A MANSCDP MESSAGE (RFC 3428) outside any dialog."""
    headers = Headers(
        [
            ("From", f"<{sip_uri(from_id, from_domain)}>;tag={from_tag}"),
            ("To", f"<{sip_uri(to_id, to_domain)}>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} MESSAGE"),
            ("Max-Forwards", "70"),
            ("Content-Type", content_type),
        ]
    )
    return SipRequest(headers=headers, body=body, method="MESSAGE", uri=request_uri)


def build_register(
    *,
    device_id: str,
    domain: str,
    server_id: str,
    contact_host: str,
    contact_port: int,
    from_tag: str,
    call_id: str,
    cseq: int,
    expires: int,
    authorization: str | None = None,
    user_agent: str = "kgw-sim",
) -> SipRequest:
    """A device REGISTER as Hikvision-style devices send it (docs/gb28181.md §3.2)."""
    headers = Headers(
        [
            ("From", f"<{sip_uri(device_id, domain)}>;tag={from_tag}"),
            ("To", f"<{sip_uri(device_id, domain)}>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} REGISTER"),
            ("Contact", f"<{sip_uri(device_id, contact_host, contact_port)}>"),
            ("Max-Forwards", "70"),
            ("User-Agent", user_agent),
            ("Expires", str(expires)),
        ]
    )
    if authorization is not None:
        headers.add("Authorization", authorization)
    return SipRequest(headers=headers, body=b"", method="REGISTER", uri=sip_uri(server_id, domain))


def register_uri(server_id: str, domain: str) -> str:
    """The Request-URI (and digest ``uri``) of a REGISTER: ``sip:<server id>@<domain>``."""
    return sip_uri(server_id, domain)


def request_uri_user(request: SipRequest) -> str | None:
    """The user part of the Request-URI, or None when it has none or does not parse (RFC 3261 §19.1.1)."""
    try:
        return SipUri.parse(request.uri).user
    except SipError:
        return None


def target_id(request: SipRequest) -> str | None:
    """The device, channel or platform ID a request is for: Request-URI user, else To user (docs/gb28181.md §2).

    Devices behind a proxy and some platforms put only the host in the
    Request-URI and name the target in To; None when neither names anyone
    or the To header does not parse, so callers answer 404 instead of raising.
    """
    user = request_uri_user(request)
    if user:
        return user
    try:
        return request.to.uri.user or None
    except SipError:
        return None
