"""RFC 3261 §12 dialog state for an INVITE dialog (sans-I/O).

A :class:`Dialog` is what both ends remember once an INVITE was answered 2xx:
Call-ID, the two tags, the two URIs, the remote target (the peer's Contact),
the route set (Record-Route) and the two CSeq counters. It builds the
requests sent inside the dialog (BYE, INFO with MANSRTSP) and the ACK for a
2xx; the endpoint adds the Via when it sends them.

Unlike most values in kgw a dialog is mutable: its local CSeq moves forward
with every request it builds (RFC 3261 §12.2.1.1), so it is a slotted
dataclass that is *not* frozen.

Only loose routing is supported: the Request-URI is always the remote target
and the route set goes into Route headers as it is (RFC 3261 §12.2.1.1, the
``;lr`` case). GB/T 28181 devices do not Record-Route in practice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.errors import CallDoesNotExist, SipError
from gateway.gb28181.sip.headers import Headers, split_top_level
from gateway.gb28181.sip.message import SipRequest, SipResponse

__all__ = ["Dialog", "DialogError"]

MAX_FORWARDS = "70"


class DialogError(SipError):
    """A message that cannot create or belong to this dialog (local misuse or a peer's fault)."""

    status_hint = 500


@dataclass(slots=True)
class Dialog:
    """One INVITE dialog as seen from this side (RFC 3261 §12.1).

    ``local_uri``/``remote_uri`` are the From/To URIs without tags (for a UAC:
    From is local). ``remote_target`` is the peer's Contact URI, where
    in-dialog requests are addressed. ``route_set`` is in the order our
    requests must carry it. ``remote_cseq`` is None until the peer sends a
    request inside the dialog (the UAC case) — RFC 3261 calls that "empty".
    """

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    route_set: tuple[str, ...] = ()
    local_cseq: int = 0
    remote_cseq: int | None = None
    secure: bool = False
    # The last ACK built by ack_for, kept without a Via so it can be re-sent
    # for a retransmitted 2xx (RFC 3261 §13.2.2.4).
    _ack: SipRequest | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_uac(cls, invite: SipRequest, response: SipResponse) -> Dialog:
        """The dialog a 2xx (or tagged 1xx) to our INVITE creates (RFC 3261 §12.1.2).

        Raises :class:`DialogError` when the response has no To tag or
        belongs to another call. A 2xx without Contact (seen from cheap
        devices) falls back to the INVITE's Request-URI as remote target.
        """
        if response.call_id != invite.call_id:
            raise DialogError("response belongs to another call")
        local_tag, remote_tag = invite.from_.tag, response.to.tag
        if not local_tag or not remote_tag:
            raise DialogError("both From and To tags are needed to form a dialog")
        contact = response.contact
        target = str(contact.uri) if contact is not None else invite.uri
        routes = [r for value in response.headers.get_all("Record-Route") for r in _split_routes(value)]
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=str(invite.from_.uri),
            remote_uri=str(invite.to.uri),
            remote_target=target,
            route_set=tuple(reversed(routes)),  # §12.1.2: the UAC reverses Record-Route
            local_cseq=invite.cseq.seq,
            secure=invite.uri.lower().startswith("sips:"),
        )

    @classmethod
    def from_uas(cls, invite: SipRequest, local_tag: str, *, local_cseq: int = 0) -> Dialog:
        """The dialog we create by answering ``invite`` 2xx with To tag ``local_tag`` (§12.1.1).

        RFC 3261 leaves the UAS's local CSeq empty; ``local_cseq`` is where our
        own requests start counting (the first one carries ``local_cseq + 1``).
        """
        remote_tag = invite.from_.tag
        if not remote_tag:
            raise DialogError("INVITE without From tag")  # RFC 2543 peers only
        contact = invite.contact
        if contact is None:
            raise DialogError("INVITE without Contact", status_hint=400)
        routes = [r for value in invite.headers.get_all("Record-Route") for r in _split_routes(value)]
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=str(invite.to.uri),
            remote_uri=str(invite.from_.uri),
            remote_target=str(contact.uri),
            route_set=tuple(routes),
            local_cseq=local_cseq,
            remote_cseq=invite.cseq.seq,
            secure=invite.uri.lower().startswith("sips:"),
        )

    # --- building requests ---------------------------------------------------------

    def _headers(self, cseq: int, method: str) -> Headers:
        headers = Headers(
            [
                ("From", f"<{self.local_uri}>;tag={self.local_tag}"),
                ("To", f"<{self.remote_uri}>;tag={self.remote_tag}"),
                ("Call-ID", self.call_id),
                ("CSeq", f"{cseq} {method}"),
                ("Max-Forwards", MAX_FORWARDS),
            ]
        )
        for route in self.route_set:
            headers.add("Route", route)
        return headers

    def new_request(self, method: str, body: bytes = b"", content_type: str | None = None) -> SipRequest:
        """A request inside the dialog (BYE, INFO…), with the next local CSeq (§12.2.1.1).

        ACK is refused here: it reuses the INVITE's CSeq, see :meth:`ack_for`.
        """
        method = method.upper()
        if method in ("ACK", "CANCEL"):
            raise DialogError(f"{method} is not built with new_request")
        self.local_cseq += 1
        headers = self._headers(self.local_cseq, method)
        if body:
            headers.add("Content-Type", content_type or "application/octet-stream")
        return SipRequest(headers=headers, body=body, method=method, uri=self.remote_target)

    def ack_for(self, response: SipResponse) -> SipRequest:
        """The ACK for a 2xx to our INVITE: same CSeq number, method ACK (§13.2.2.4).

        The ACK is remembered; :meth:`last_ack` gives a fresh copy to re-send
        when the 2xx is retransmitted.
        """
        cseq = response.cseq
        if cseq.method != "INVITE" or not 200 <= response.status < 300:
            raise DialogError("only a 2xx to an INVITE is acknowledged by the dialog")
        if response.call_id != self.call_id or response.to.tag != self.remote_tag:
            raise CallDoesNotExist("2xx does not belong to this dialog")
        ack = SipRequest(headers=self._headers(cseq.seq, "ACK"), body=b"", method="ACK", uri=self.remote_target)
        self._ack = ack
        return _copy_ack(ack)

    def last_ack(self) -> SipRequest | None:
        """A copy of the last ACK built (without Via), or None."""
        return None if self._ack is None else _copy_ack(self._ack)

    # --- requests from the peer -----------------------------------------------------

    def matches(self, request: SipRequest) -> bool:
        """True when a request from the peer belongs to this dialog (§12.2.2)."""
        try:
            return (
                request.call_id == self.call_id
                and request.from_.tag == self.remote_tag
                and request.to.tag == self.local_tag
            )
        except SipError:
            return False

    def accept_remote(self, request: SipRequest) -> None:
        """Check and record the CSeq of a peer's in-dialog request (§12.2.2).

        A CSeq lower than (or, for a new request, equal to) the last one is
        out of order: :class:`DialogError` with ``status_hint`` 500.
        """
        seq = request.cseq.seq
        if request.method != "ACK":
            if self.remote_cseq is not None and seq <= self.remote_cseq:
                raise DialogError(f"CSeq {seq} is not above {self.remote_cseq}", status_hint=500)
            self.remote_cseq = seq


def _split_routes(value: str) -> list[str]:
    """Record-Route values, one per route (several may share a header field)."""
    return split_top_level(value)


def _copy_ack(ack: SipRequest) -> SipRequest:
    """A copy the endpoint may put a Via on without touching the remembered one."""
    return SipRequest(headers=ack.headers.copy(), body=b"", method="ACK", uri=ack.uri)
