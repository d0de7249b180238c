"""An upper platform's live INVITE, served from the gateway's shared relay (docs/gb28181.md §15, §16.4).

To an upper platform the gateway is the "device" of every channel it shares
(docs/gb28181.md §16.1), so the signalling half reuses the device role's sans-I/O UAS,
:class:`~gateway.gb28181.device_calls.DeviceCalls` (one per upper): 100 Trying,
200 with ``a=sendonly``, ``y=`` and mirrored ``a=setup``, ACK, BYE, CANCEL.
What differs from a camera is where the media comes from: like WVP as a lower
platform (docs/gb28181.md §16.4) we answer from the stream we pull from the device, here
the gateway's own :class:`~gateway.live.LiveService` stream of that channel, so
a camera gets exactly one INVITE whatever the number of browsers and uppers.

Per call the access units of the shared fan-out are re-muxed into GB PS (PSM
on key frames) and cut into RTP with the upper's SSRC — no re-encoding — and
sent over UDP, TCP where we connect (the upper's offer said
``a=setup:passive``), or TCP where the upper connects to us
(``a=setup:active``).

The decisions are sans-I/O (:mod:`gateway.cascade.admission`,
:class:`~gateway.media.remux.PsRtpRemuxer`); :class:`UpperRelay` is the
asyncio adapter that only moves bytes and runs timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Protocol

from prometheus_client import Counter, Metric

from gateway.cascade.admission import RESULTS, admit, target_channel
from gateway.cascade.history import (
    END_OF_FILE,
    HistoryRefused,
    HistoryRequest,
    UpperHistory,
    history_request,
    media_status_body,
)
from gateway.cascade.policy import SharePolicy
from gateway.cascade.upper import UpperLink
from gateway.errors import GatewayError, MediaTransportError
from gateway.gb28181.device_calls import CallError, CallEvent, DeviceCalls, MediaRequested, MediaStarted, MediaStopped
from gateway.gb28181.dialog import DialogError
from gateway.gb28181.requests import MANSCDP_CONTENT_TYPE
from gateway.gb28181.sdp import MediaSessionSpec, MediaTransport, SdpError, SessionType, parse_sdp
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEvent, TransactionTimedOut
from gateway.gb28181.sip.message import SipRequest, make_response
from gateway.io.ports import PortSpec
from gateway.io.rtp_send_io import RtpSendTransport, TcpRtpSender, UdpRtpSender
from gateway.live import LiveError, LiveStream
from gateway.media.ps import PsDemuxer, PsDemuxError
from gateway.media.relay import RelayError, StreamFanout
from gateway.media.remux import PsRtpRemuxer
from gateway.playback import Playback
from gateway.registry.model import Channel
from gateway.uplink import UplinkExceeded

__all__ = ["ACK_TIMEOUT", "DEFAULT_MAX_CALLS_PER_UPPER", "UpperRelay"]

log = logging.getLogger("kgw.cascade.relay")

DEFAULT_MAX_CALLS_PER_UPPER: Final = 32
MEDIA_REFUSED: Final = 488  # an offer whose c= lies outside the upper's media networks
ACK_TIMEOUT: Final = 32.0  # RFC 3261 §13.3.1.4: no ACK within 64*T1 → BYE (WVP waits 60 s, docs/gb28181.md §16.4)
CONNECT_TIMEOUT: Final = 10.0  # s for the TCP media connection after the ACK (as LiveService's TCP wait)
STALL_TIMEOUT: Final = 30.0  # s an upper may leave its TCP window shut before we hang up
PULL_BATCH: Final = 32  # units sent per turn, so one upper's GOP burst does not hold up the loop
BYE_AFTER_MEDIA_STATUS: Final = 10.0  # s the upper has to BYE after our MediaStatus 121 before we do
MANSRTSP_CONTENT_TYPE: Final = "Application/MANSRTSP"


class ViewHook(Protocol):
    """Told ``(upper, channel_id, duration, outcome)`` when an upper's call is answered (duration None)
    and when it ends (the audit trail of views through the cascade); ``session`` says what the call
    was (``live``, ``playback`` or ``download``) and ``window`` the recording's epoch range for the
    latter two."""

    def __call__(
        self,
        upper: str,
        channel_id: str,
        duration: float | None,
        outcome: str,
        *,
        session: str = "live",
        window: tuple[int, int] | None = None,
    ) -> None: ...


class LiveSource(Protocol):
    """Where the relay takes the channels' streams from (the gateway's live service)."""

    @property
    def media_host(self) -> str: ...
    @property
    def media_ports(self) -> PortSpec: ...
    @property
    def streams(self) -> Mapping[str, LiveStream]: ...

    async def watch(
        self, channel_id: str, transport: MediaTransport | None = None, stream: int = 0
    ) -> tuple[LiveStream, str]: ...
    def leave(self, channel_id: str, consumer: str) -> None: ...


class UnitSource(Protocol):
    """A stream the relay re-muxes to an upper: a live stream, or one device session's playback."""

    @property
    def fanout(self) -> StreamFanout: ...
    @property
    def wakeup(self) -> asyncio.Event: ...
    @property
    def demuxer(self) -> PsDemuxer: ...


# --- the asyncio adapter ---------------------------------------------------------------------------


@dataclass(eq=False)
class _UpperCall:
    """One upper's call (live, or Playback/Download with ``history``) and the media half serving it."""

    upper: str
    call_id: str
    channel_id: str
    spec: MediaSessionSpec
    opened_at: float
    stream: LiveStream | None = None
    viewer: str | None = None
    request: HistoryRequest | None = None  # a Playback/Download: what the upper asked the device for
    history: Playback | None = None  # its own device session
    media_status_sent: bool = False
    sender: RtpSendTransport | None = None
    remuxer: PsRtpRemuxer | None = None
    answered: bool = False
    acked: bool = False
    closed: bool = False
    end_reason: str = ""
    first_sent_at: float | None = None
    ack_timer: asyncio.TimerHandle | None = None
    pump: asyncio.Task[None] | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class UpperRelay:
    """Serves every upper platform's live calls from the gateway's live streams.

    Wired by setting each link's ``on_call``; :meth:`upper_offline` hangs up an
    upper's calls when the cascade sees it go away. It is also a handler on the
    SIP router, only to take the answers to its own BYEs.
    """

    def __init__(
        self,
        links: Iterable[UpperLink],
        policies: Mapping[str, SharePolicy],
        *,
        live: LiveSource,
        channels: Mapping[str, Channel],
        max_calls_per_upper: int = DEFAULT_MAX_CALLS_PER_UPPER,
    ) -> None:
        self.live = live
        self.channels = channels
        self._max_calls = max_calls_per_upper
        self.policies = policies
        self.counters: dict[str, int] = dict.fromkeys(RESULTS.values(), 0)
        self.counters.update(calls_ended=0, packets=0, bytes=0, media_refused=0)
        self.loop = asyncio.get_running_loop()
        self._links: dict[str, UpperLink] = {}
        self._cores: dict[str, DeviceCalls] = {}
        self._calls: dict[tuple[str, str], _UpperCall] = {}
        self._busy: dict[str, int] = {}  # 486s given in the current burst, per upper
        self._offers: dict[tuple[str, str], bytes] = {}  # INVITE bodies while DeviceCalls reports them
        self.on_view: ViewHook | None = None
        self.history: UpperHistory | None = None
        """Serves Playback/Download INVITEs (one device session each); None: they get 488."""
        self.calls_metric = Counter(
            "kgw_upper_calls", "Live INVITEs from upper platforms by outcome", ["platform", "result"], registry=None
        )
        for link in links:
            self.attach(link)

    @property
    def max_calls_per_upper(self) -> int:
        """Calls one upper may have at once (offered, answered or streaming); more get 486."""
        return self._max_calls

    @max_calls_per_upper.setter
    def max_calls_per_upper(self, value: int) -> None:
        self._max_calls = value
        for core in self._cores.values():
            core.max_calls = value

    def attach(self, link: UpperLink) -> None:
        """Take ``link``'s calls."""
        self._links[link.name] = link
        self._cores[link.name] = DeviceCalls(link.endpoint, max_calls=self.max_calls_per_upper)
        link.on_call = partial(self.on_call, link.name)

    # --- signalling in (called inside the SIP driver's delivery) --------------------------------

    def on_call(self, upper: str, event: RequestReceived, now: float) -> bool:
        """INVITE/ACK/BYE/CANCEL from ``upper``; False leaves the request to the link (INFO: 481)."""
        core = self._cores[upper]
        request = event.request
        if request.method == "INFO" and event.transaction is not None:
            self._on_info(upper, event, now)
            return True
        if request.method == "INVITE" and event.transaction is not None:
            if (upper, request.call_id) in self._calls:
                self._refuse(upper, request, event.transaction, 488, now)  # no re-INVITE (no renegotiation)
                return True
            channel_id = target_channel(request, self._links[upper].local_id)
            status = self._admission(upper, channel_id)
            if status is not None or channel_id is None:
                self._refuse(upper, request, event.transaction, status or 404, now)
                return True
            before = core.active
            self._offers[(upper, request.call_id)] = request.body  # read by _history_request while draining
            core.on_request(event, channel_id, now)
            if core.active == before:  # DeviceCalls refused the offer itself (488)
                self._count(upper, 488)
            self._drain(upper)
            self._offers.pop((upper, request.call_id), None)
            return True
        elif not core.on_request(event, "", now):
            return False
        self._drain(upper)
        return True

    def _on_info(self, upper: str, event: RequestReceived, now: float) -> None:
        """The upper's MANSRTSP in a history call's dialog: forwarded verbatim to the device's dialog.

        An INFO naming no dialog of ours (or an ended one) gets 481; one in a live
        call 405 (nothing to control). The upper gets the device's answer status.
        """
        request, transaction = event.request, event.transaction
        assert transaction is not None
        call = self._calls.get((upper, request.call_id))
        status: int | None = None
        try:
            if call is None or not self._cores[upper].in_dialog(request):
                status = 481
        except DialogError:
            status = 500
        if status is None and call is not None and call.history is None:
            status = 405
        if status is not None or call is None or call.history is None:
            self._links[upper].endpoint.send_response(transaction, make_response(request, status or 481), now)
            return
        self._spawn(call, self._forward_info(call, call.history, request, transaction))

    async def _forward_info(self, call: _UpperCall, pb: Playback, request: SipRequest, transaction: str) -> None:
        assert self.history is not None
        status, body = await self.history.info(pb, request.body)
        extra = [("Content-Type", MANSRTSP_CONTENT_TYPE)] if body else None
        response = make_response(request, status, extra=extra, body=body)
        self._links[call.upper].endpoint.send_response(transaction, response, self.loop.time())

    def _admission(self, upper: str, channel_id: str | None) -> int | None:
        link = self._links[upper]
        channel = self.channels.get(channel_id) if channel_id is not None else None
        status = admit(
            channel,
            self.policies[upper],
            registered=link.registered,
            active_calls=self._cores[upper].active,
            max_calls=self.max_calls_per_upper,
        )
        if status == 403 and channel is not None:
            log.warning(
                "upper platform %s asked for live video of %s (%s), which its policy does not share: 403",
                upper,
                channel_id,
                channel.name[:60],
            )
        elif status == 486:
            refused = self._busy.get(upper, 0)
            if refused == 0:
                log.warning(
                    "upper platform %s has %d live calls, the limit: refusing further INVITEs with 486",
                    upper,
                    self._cores[upper].active,
                )
            self._busy[upper] = refused + 1
        return status

    def _refuse(self, upper: str, request: SipRequest, transaction: str, status: int, now: float) -> None:
        response = make_response(request, status, to_tag=self._links[upper].endpoint.new_tag())
        self._links[upper].endpoint.send_response(transaction, response, now)
        self._count(upper, status)

    def _count(self, upper: str, status: int) -> None:
        result = RESULTS.get(status, "error")
        self.counters[result] += 1
        self.calls_metric.labels(platform=upper, result=result).inc()

    def _drain(self, upper: str) -> None:
        core = self._cores[upper]
        while (event := core.next_event()) is not None:
            try:
                self._on_event(upper, event)
            except Exception:  # a bug: contain it to this call
                log.exception("upper %s: call event %s failed", upper, type(event).__name__)

    def _on_event(self, upper: str, event: CallEvent) -> None:
        if isinstance(event, MediaRequested):
            history = self._history_request(upper, event)
            if history is None and event.spec.session_type is not SessionType.PLAY:
                # Talk needs an audio path (and history a playback service): not relayed here.
                log.info(
                    "upper %s: %s of %s refused (live only)", upper, event.spec.session_type.value, event.channel_id
                )
                self._cores[upper].reject(event.call_id, 488, self.loop.time())
                self._count(upper, 488)
                return
            if not self._media_allowed(upper, event.spec):
                self._cores[upper].reject(event.call_id, MEDIA_REFUSED, self.loop.time())
                self._count(upper, MEDIA_REFUSED)
                self.counters["media_refused"] += 1
                return
            new = _UpperCall(upper, event.call_id, event.channel_id, event.spec, self.loop.time(), request=history)
            self._calls[(upper, event.call_id)] = new
            self._spawn(new, self._open(new))
            return
        call = self._calls.get((upper, event.call_id))
        if call is None:
            return
        if isinstance(event, MediaStarted):
            call.acked = True
            if call.ack_timer is not None:
                call.ack_timer.cancel()
                call.ack_timer = None
            if call.sender is not None and call.pump is None:
                call.pump = self._spawn(call, self._stream(call))
        elif isinstance(event, MediaStopped):
            self._finish(call, event.reason)

    def _history_request(self, upper: str, event: MediaRequested) -> HistoryRequest | None:
        """A Playback/Download offer's window and speed (None for live, or without a history service)."""
        if self.history is None or event.spec.session_type not in (SessionType.PLAYBACK, SessionType.DOWNLOAD):
            return None
        try:
            return history_request(parse_sdp(self._offers.get((upper, event.call_id), b"")))
        except (HistoryRefused, SdpError) as exc:
            log.info("upper %s: history INVITE for %s refused: %s", upper, event.channel_id, exc)
            return None

    def _media_allowed(self, upper: str, spec: MediaSessionSpec) -> bool:
        """An upper's video goes only to its own media networks (issue 10, C1); TCP active may name none."""
        addresses = self._links[upper].addresses
        host = spec.local_host.strip()
        if spec.transport is MediaTransport.TCP_ACTIVE and host in ("", "0.0.0.0", "::"):
            return True  # the upper connects to us: _open_sender accepts only its own address
        if addresses.media_allowed(host):
            return True
        log.warning(
            "upper platform %s asked for video of a channel to be sent to %s:%d, outside its media networks: %d",
            upper,
            host[:60],
            spec.local_port,
            MEDIA_REFUSED,
        )
        return False

    # --- a SipRouter handler: the answers to our BYEs --------------------------------------------------

    def route(self, event: SipEvent, now: float) -> bool:
        """Take the final answer (or time-out) of a BYE we sent; nothing else."""
        if not isinstance(event, (ResponseReceived, TransactionTimedOut)):
            return False
        context = event.context
        return (
            isinstance(context, tuple)
            and len(context) == 2
            and any(context[0] is core for core in self._cores.values())
        )

    def get_timer(self) -> float | None:
        """No SIP timers of our own (ours are asyncio's)."""
        return None

    def handle_timer(self, now: float) -> None:
        """Nothing: see :meth:`get_timer`."""

    # --- commands ----------------------------------------------------------------------------

    def upper_offline(self, upper: str) -> int:
        """The upper went away: hang up (BYE) each of its calls and release their viewers."""
        calls = [c for c in self._calls.values() if c.upper == upper]
        for call in calls:
            self._hang_up(call, "upper_offline")
        self._busy.pop(upper, None)
        if calls:
            log.info("upper platform %s is offline: %d live calls ended", upper, len(calls))
        return len(calls)

    def close(self) -> None:
        """The gateway stops: hang up every call and cancel what still runs."""
        for call in list(self._calls.values()):
            self._hang_up(call, "shutdown")
        for call in list(self._calls.values()):  # calls DeviceCalls no longer knew
            self._finish(call, "shutdown")

    def collect(self) -> Iterator[Metric]:
        """``kgw_upper_calls_total{platform,result}``."""
        yield from self.calls_metric.collect()

    def status(self) -> list[dict[str, Any]]:
        """One row per running call (for logs and the API)."""
        return [
            {
                "upper": c.upper,
                "channel_id": c.channel_id,
                "call_id": c.call_id,
                "transport": c.spec.transport.value,
                "target": f"{c.spec.local_host}:{c.spec.local_port}",
                "ssrc": c.spec.ssrc_text,
                "answered": c.answered,
                "streaming": c.pump is not None,
                "packets": c.sender.stats.packets if c.sender else 0,
                "bytes": c.sender.stats.bytes if c.sender else 0,
                "first_packet_after": None if c.first_sent_at is None else round(c.first_sent_at - c.opened_at, 3),
            }
            for c in self._calls.values()
        ]

    # --- one call's life ----------------------------------------------------------------------

    async def _open(self, call: _UpperCall) -> None:
        """Join (or open) the channel's stream, open the sender, then answer 200."""
        live = self.live
        if call.request is not None:
            assert self.history is not None
            viewer = f"upper-{call.upper}-{self._links[call.upper].endpoint.new_tag()}"
            try:
                call.history = await self.history.open(call.upper, call.channel_id, call.request, viewer)
            except HistoryRefused as exc:
                log.info("upper %s: %s of %s refused: %s", call.upper, call.request.session_type, call.channel_id, exc)
                self._reject(call, exc.status)
                return
            call.viewer = viewer
        else:
            try:
                # The upper's a=streamnumber (or vendor spelling) picks the stream; over the uplink budget
                # the live service gives the sub-stream, or refuses: 486 (the kindergarten's line is busy).
                wanted = 1 if call.spec.stream_number == 1 else 0
                call.stream, call.viewer = await live.watch(call.channel_id, stream=wanted)
            except (LiveError, TimeoutError) as exc:
                log.info("upper %s: live %s unavailable: %s", call.upper, call.channel_id, exc or "timeout")
                self._reject(call, 486 if isinstance(exc, UplinkExceeded) else 480)
                return
        if call.closed:  # CANCEL or offline while the camera answered
            self._release(call)
            return
        try:
            call.sender = await self._open_sender(call, live)
        except (OSError, MediaTransportError) as exc:
            log.warning("upper %s: no media socket for %s: %s", call.upper, call.channel_id, exc)
            self._reject(call, 500)
            return
        if call.closed:
            self._release(call)
            return
        try:
            # The answer says which stream is sent when the upper asked for one (it may get the sub-stream).
            stream = call.stream  # None for a playback or download
            served = stream.stream_number if stream is not None and call.spec.stream_number is not None else None
            core = self._cores[call.upper]
            core.accept(call.call_id, live.media_host, call.sender.port, self.loop.time(), stream_number=served)
        except CallError:  # cancelled while we prepared
            self._finish(call, "gone")
            return
        except GatewayError as exc:  # an offer we cannot answer after all (SipError, SdpBuildError)
            log.warning("upper %s: cannot answer call %s: %s", call.upper, call.call_id[:40], exc)
            self._reject(call, 500)
            return
        call.answered = True
        self._count(call.upper, 200)
        self._view(call, None, "started")
        call.ack_timer = self.loop.call_later(ACK_TIMEOUT, self._hang_up, call, "no_ack")

    async def _open_sender(self, call: _UpperCall, live: LiveSource) -> RtpSendTransport:
        spec, host, ports = call.spec, live.media_host, live.media_ports
        target = (spec.local_host, spec.local_port)  # the upper's offered c=/m=
        on_closed = partial(self._lost, call)
        if spec.transport is MediaTransport.UDP:
            return await UdpRtpSender.open(host, target, ports=ports, on_closed=on_closed)
        if spec.transport is MediaTransport.TCP_PASSIVE:  # the upper listens: we connect after the ACK
            return await TcpRtpSender.bind(host, target, ports=ports, on_closed=on_closed)
        # The upper connects to us; only from the address its offer named (c=), else from the upper's own.
        allowed = (
            self._links[call.upper].addresses.media_host()
            if spec.local_host in ("", "0.0.0.0", "::")
            else spec.local_host
        )
        return await TcpRtpSender.listen(host, ports=ports, allowed_host=allowed, on_closed=on_closed)

    async def _stream(self, call: _UpperCall) -> None:
        """After the ACK: make the media path, then pump the fan-out into it."""
        sender = call.sender
        assert sender is not None
        try:
            await sender.start(CONNECT_TIMEOUT)
        except MediaTransportError as exc:
            log.info("upper %s: media path for %s failed: %s", call.upper, call.channel_id, exc)
            self._hang_up(call, "media_connect_failed")
            return
        log.info("upper %s: live %s streaming (%s, ssrc %s)", call.upper, call.channel_id, sender, call.spec.ssrc_text)
        try:
            await self._pump(call, sender)
        except (PsDemuxError, RelayError) as exc:
            log.warning("upper %s: cannot relay %s: %s", call.upper, call.channel_id, exc)
            self._hang_up(call, "relay_error")

    async def _pump(self, call: _UpperCall, sender: RtpSendTransport) -> None:
        stream: UnitSource | None = call.history if call.history is not None else call.stream
        viewer = call.viewer
        assert stream is not None and viewer is not None
        audio = next((t for t in stream.demuxer.stream_types.values() if not t.is_video), None)
        remuxer = call.remuxer = PsRtpRemuxer(
            call.spec.ssrc,
            audio=audio,
            initial_sequence=self._links[call.upper].endpoint.ids.number(5) % 0x10000,
            initial_timestamp=self._links[call.upper].endpoint.ids.number(9),
        )
        stalled_since: float | None = None
        while not call.closed:
            if self._source_over(call) and (call.history is None or viewer not in stream.fanout.consumers):
                self._source_ended(call)  # live: device BYE or RTP timeout; playback: closed and detached us
                return
            if not sender.writable:
                # A slow upper: stop pulling, and the fan-out skips its queue to the next key frame.
                stalled_since = stalled_since if stalled_since is not None else self.loop.time()
                if self.loop.time() - stalled_since > STALL_TIMEOUT:
                    self._hang_up(call, "stalled")
                    return
                await sender.wait_writable(0.5)
                continue
            stalled_since = None
            units = stream.fanout.pull(viewer, PULL_BATCH)
            if units:
                sender.send([packet for unit in units for packet in remuxer.remux(unit)])
                if call.first_sent_at is None and sender.stats.packets:
                    call.first_sent_at = self.loop.time()
                await asyncio.sleep(0)  # let the other uppers and viewers have their turn
                continue
            if self._source_over(call):  # a playback's last units are sent before it ends upward
                self._source_ended(call)
                return
            stream.wakeup.clear()  # nothing queued: clear and wait in one step (no lost wake-up)
            if not self._source_over(call):
                await stream.wakeup.wait()

    def _source_over(self, call: _UpperCall) -> bool:
        if call.history is not None:
            return UpperHistory.over(call.history)
        return call.stream is None or self.live.streams.get(call.stream.key) is not call.stream

    def _source_ended(self, call: _UpperCall) -> None:
        """The device side ended: MediaStatus 121 upward at the end of a file (the upper BYEs), else BYE."""
        pb = call.history
        if pb is None or pb.end_reason != END_OF_FILE:
            self._hang_up(call, "camera_ended" if pb is None else pb.end_reason or "device_ended")  # BYE upward
            return
        link = self._links[call.upper]
        body = media_status_body(call.channel_id, link.client.next_sn(), link.client.charset)
        sent = self._cores[call.upper].send_in_dialog(
            call.call_id, "MESSAGE", body, MANSCDP_CONTENT_TYPE, self.loop.time()
        )
        call.media_status_sent = sent is not None
        log.info("upper %s: %s of %s reached the end: MediaStatus 121 sent", call.upper, call.request, call.channel_id)
        self.loop.call_later(BYE_AFTER_MEDIA_STATUS, self._hang_up, call, "end_of_file")

    def _lost(self, call: _UpperCall, reason: str) -> None:
        """The TCP connection to the upper broke: BYE, release the viewer."""
        log.info("upper %s: media connection for %s lost: %s", call.upper, call.channel_id, reason)
        self._hang_up(call, f"media_{reason}")

    def _hang_up(self, call: _UpperCall, reason: str) -> None:
        """End a call from our side: BYE when answered, else refuse the INVITE; then clean up."""
        if call.closed:
            return
        call.end_reason = reason
        core = self._cores[call.upper]
        core.hang_up(call.call_id, self.loop.time())
        self._drain(call.upper)
        if not call.closed:  # not answered yet: hang_up sends nothing
            self._reject(call, 480)
        if not call.closed:  # DeviceCalls no longer knew it
            self._finish(call, reason)

    def _reject(self, call: _UpperCall, status: int) -> None:
        with contextlib.suppress(CallError):
            self._cores[call.upper].reject(call.call_id, status, self.loop.time())
            self._count(call.upper, status)
        self._drain(call.upper)

    def _finish(self, call: _UpperCall, reason: str) -> None:
        """The call is over (BYE either way, CANCEL, refusal): stop sending, leave the viewer."""
        if call.closed:
            return
        call.closed = True
        reason = call.end_reason or reason
        self._calls.pop((call.upper, call.call_id), None)
        if call.ack_timer is not None:
            call.ack_timer.cancel()
            call.ack_timer = None
        current = asyncio.current_task()
        if call.pump is not None and call.pump is not current:
            call.pump.cancel()
        self._release(call)
        self.counters["calls_ended"] += 1
        if call.sender is not None:
            self.counters["packets"] += call.sender.stats.packets
            self.counters["bytes"] += call.sender.stats.bytes
        if call.answered:
            self._view(call, self.loop.time() - call.opened_at, reason)
        if call.answered:
            log.info(
                "upper %s: live %s ended (%s) after %.1f s",
                call.upper,
                call.channel_id,
                reason,
                self.loop.time() - call.opened_at,
            )
        refused = self._busy.get(call.upper, 0)
        if refused and self._cores[call.upper].active < self.max_calls_per_upper:
            log.info("upper platform %s: call burst over, %d INVITEs were refused with 486", call.upper, refused)
            self._busy[call.upper] = 0

    def _view(self, call: _UpperCall, duration: float | None, outcome: str) -> None:
        """Tell :attr:`on_view` (the audit trail) that a call started or ended, live or history."""
        if self.on_view is None:
            return
        request = call.request
        if request is None:
            self.on_view(call.upper, call.channel_id, duration, outcome)
            return
        session = "download" if request.session_type is SessionType.DOWNLOAD else "playback"
        window = (request.start, request.end)
        self.on_view(call.upper, call.channel_id, duration, outcome, session=session, window=window)

    def _release(self, call: _UpperCall) -> None:
        """Close the sender and leave the shared stream (its linger then ends the camera's session)."""
        if call.sender is not None:
            call.sender.close()
        if call.history is not None and self.history is not None:
            self.history.release(call.history, call.viewer or "", f"upper_{call.end_reason or 'bye'}")
            call.viewer = None
            return
        live = self.live
        if call.viewer is not None:
            live.leave(call.channel_id, call.viewer)
            call.viewer = None

    # --- plumbing ------------------------------------------------------------------------------

    def _spawn(self, call: _UpperCall, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self.loop.create_task(coro)
        call.tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(call, t))
        return task

    def _task_done(self, call: _UpperCall, task: asyncio.Task[None]) -> None:
        call.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a bug: end this call only
            log.error("upper %s: call %s failed", call.upper, call.call_id[:40], exc_info=exc)
            with contextlib.suppress(GatewayError):
                self._hang_up(call, "error")
