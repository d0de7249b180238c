"""Whether the gateway serves an upper platform's live INVITE, and for which channel (sans-I/O).

The refusals come in a fixed order (:func:`admit`) so that an upper learns the
most general reason first; :data:`RESULTS` names each outcome for the
``kgw_upper_calls_total{result}`` metric.
"""

from __future__ import annotations

from typing import Final

from gateway.cascade.policy import SharePolicy
from gateway.gb28181.ids import is_gb_id
from gateway.gb28181.requests import request_uri_user
from gateway.gb28181.sip.message import SipRequest
from gateway.registry.model import Channel

__all__ = ["NOT_REGISTERED", "RESULTS", "admit", "target_channel"]

NOT_REGISTERED: Final = 403  # an upper we are not registered with is switched off (as UpperLink answers)
# What an INVITE from an upper came to (the ``result`` label of kgw_upper_calls_total).
RESULTS: Final = {
    200: "accepted",
    403: "forbidden",
    404: "not_found",
    480: "unavailable",
    486: "busy",
    488: "bad_offer",
    500: "error",
    503: "no_live_service",
}


def target_channel(request: SipRequest, local_id: str) -> str | None:
    """The channel an INVITE asks for: Request-URI user, else Subject's first ID (docs/gb28181.md §15.2).

    The Request-URI wins when it names a 20-digit ID other than our own
    platform ID; uppers that address the lower platform itself name the
    channel in Subject (WVP reads Subject, docs/gb28181.md §15.2). Unlike
    :func:`~gateway.gb28181.requests.target_id` the fallback is Subject, not
    To: Subject is where every implementation names the channel of a live INVITE.
    """
    user = request_uri_user(request)
    if user is not None and is_gb_id(user) and user != local_id:
        return user
    subject = request.headers.get("Subject") or ""
    first = subject.split(",", 1)[0].split(":", 1)[0].strip()
    return first if is_gb_id(first) else None


def admit(
    channel: Channel | None, policy: SharePolicy, *, registered: bool, active_calls: int, max_calls: int
) -> int | None:
    """The status refusing an upper's INVITE, or None to serve it.

    In this order: an upper we are not registered with (403, the link's rule),
    an unknown channel (404), a channel this upper's policy does not share (403:
    the police never see a classroom), the per-upper call limit (486 Busy Here:
    an INVITE flood must not open streams without bound).
    """
    if not registered:
        return NOT_REGISTERED
    if channel is None:
        return 404
    if not policy.allows_channel(channel):
        return 403
    if active_calls >= max_calls:
        return 486
    return None
