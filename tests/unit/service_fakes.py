"""The peers and fakes the asyncio services' unit tests build on (LiveService, CascadeService, UpperRelay).

Peers are the real cores in the other role: :class:`Camera` answers the
gateway's INVITEs with :class:`DeviceCalls`; :class:`Upper` is an upper platform
that registers us, answers our MESSAGEs and NOTIFYs and places live calls with
:class:`PlaySession`. :class:`FakeSip`, :class:`Locator` and :class:`FakeLive`
are the narrow interfaces the services take.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from gateway.gb28181.device_calls import CallEvent, DeviceCalls, MediaRequested
from gateway.gb28181.play import PlayEnded, PlayEvent, PlayFailed, PlaySession, PlayStarted
from gateway.gb28181.requests import request_uri_user
from gateway.gb28181.sdp import MediaTransport, SdpSession
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEndpoint, SipEvent
from gateway.gb28181.sip.idsource import SeededIds
from gateway.gb28181.sip.message import SipRequest, SipResponse, make_response
from gateway.gb28181.sip.transport import Peer
from gateway.live import LiveStream
from gateway.media.ps import PsDemuxer
from gateway.media.relay import StreamFanout
from gateway.media.rtp import RtpReceiver
from tests.unit.sip_memnet import DOMAIN, GW_HOST, GW_ID, GW_PEER, GW_PORT


class Camera:
    """A camera's UAS: :class:`DeviceCalls` answers the INVITEs; ``answer`` says how (None: not yet)."""

    def __init__(self, endpoint: SipEndpoint, *, answer: int | None = 200) -> None:
        self.endpoint = endpoint
        self.calls = DeviceCalls(endpoint)
        self.answer = answer
        self.events: list[CallEvent] = []
        self.waiting: list[MediaRequested] = []

    def route(self, event: SipEvent, now: float) -> bool:
        if isinstance(event, RequestReceived):
            handled = self.calls.on_request(event, request_uri_user(event.request) or "", now)
        else:  # the answer to a BYE of ours
            context = event.context
            handled = isinstance(context, tuple) and len(context) == 2 and context[0] is self.calls
        self._drain(now)
        return handled

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass

    def answer_waiting(self, status: int, now: float) -> None:
        """Answer the INVITEs held so far (200: accept, else refuse with ``status``)."""
        waiting, self.waiting = self.waiting, []
        for requested in waiting:
            self._answer(requested, status, now)
        self._drain(now)

    def hang_up(self, now: float) -> None:
        """BYE every answered call (the camera stops streaming)."""
        for requested in [e for e in self.events if isinstance(e, MediaRequested)]:
            self.calls.hang_up(requested.call_id, now)
        self._drain(now)

    def of_type(self, kind: type) -> list[Any]:
        """The call events of one type seen so far."""
        return [e for e in self.events if isinstance(e, kind)]

    def _answer(self, requested: MediaRequested, status: int, now: float) -> None:
        if status == 200:
            self.calls.accept(requested.call_id, self.endpoint.local_host, 40000, now)
        else:
            self.calls.reject(requested.call_id, status, now)

    def _drain(self, now: float) -> None:
        while (event := self.calls.next_event()) is not None:
            self.events.append(event)
            if isinstance(event, MediaRequested):
                if self.answer is None:
                    self.waiting.append(event)
                else:
                    self._answer(event, self.answer, now)


@dataclass
class UpperCall:
    """A live call an :class:`Upper` placed: its session and what became of it."""

    session: PlaySession
    answered: asyncio.Future[PlayEvent]  # PlayStarted or PlayFailed
    ended: asyncio.Future[PlayEnded]
    events: list[PlayEvent] = field(default_factory=list)


class Upper:
    """An upper platform: registers us (200), answers MESSAGE/NOTIFY, places live calls (``PlaySession``).

    ``hold_unregister`` keeps the answer to a REGISTER with Expires: 0 until
    :meth:`release`; ``message_status`` answers MESSAGEs (alarms, keepalives).
    """

    def __init__(self, endpoint: SipEndpoint, server_id: str, *, register_status: int = 200) -> None:
        self.endpoint, self.server_id = endpoint, server_id
        self.register_status = register_status
        self.message_status = 200
        self.hold_unregister = False
        self.requests: list[SipRequest] = []
        self.held: list[RequestReceived] = []
        self.calls: dict[str, UpperCall] = {}  # by Call-ID
        self._finals: dict[object, asyncio.Future[SipResponse]] = {}
        self._ssrc = itertools.count(1)

    # --- SipHandler ---

    def route(self, event: SipEvent, now: float) -> bool:
        if isinstance(event, RequestReceived):
            self._on_request(event, now)
        elif isinstance(event.context, PlaySession):
            event.context.handle_response(event, now)
            self._drain(event.context)
        elif isinstance(event, ResponseReceived) and event.response.status >= 200:
            future = self._finals.get(event.context)
            if future is not None and not future.done():
                future.set_result(event.response)
        return True

    def get_timer(self) -> float | None:
        deadlines = [t for c in self.calls.values() if (t := c.session.get_timer()) is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        for call in list(self.calls.values()):
            call.session.handle_timer(now)
            self._drain(call.session)

    # --- looking ---

    def of_method(self, method: str) -> list[SipRequest]:
        """Requests of one method the gateway sent us."""
        return [r for r in self.requests if r.method == method]

    def unregisters(self) -> list[SipRequest]:
        """Our REGISTERs with Expires: 0."""
        return [r for r in self.of_method("REGISTER") if r.headers.get("Expires") == "0"]

    # --- acting ---

    def release(self, now: float) -> None:
        """Answer the held REGISTERs 200."""
        held, self.held = self.held, []
        for event in held:
            self._answer(event, 200, now, [("Expires", "0")])

    def request(self, request: SipRequest, context: object, now: float) -> asyncio.Future[SipResponse]:
        """Send a request to the gateway; the future gets its final answer."""
        future: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self._finals[context] = future
        self.endpoint.send_request(request, GW_PEER, now, context=context)
        return future

    def call(
        self,
        channel_id: str,
        now: float,
        *,
        media_port: int = 9,
        ssrc: str | None = None,
        offer: Callable[[SdpSession], SdpSession] | None = None,
    ) -> UpperCall:
        """INVITE the gateway for a channel's live video (``offer`` edits the SDP before it goes)."""
        loop = asyncio.get_running_loop()
        session = PlaySession(
            self.endpoint,
            self.server_id,
            self.server_id[:10],
            channel_id,
            GW_PEER,
            "127.0.0.1",
            media_port,
            MediaTransport.UDP,
            ssrc or f"01{next(self._ssrc):08d}",
        )
        if offer is not None:
            session.offer = offer(session.offer)
        call = UpperCall(session, loop.create_future(), loop.create_future())
        session.start(now)
        assert session.invite is not None
        self.calls[session.invite.call_id] = call
        self._drain(session)
        return call

    def hang_up(self, call: UpperCall, now: float) -> None:
        """The upper stops watching: BYE (or CANCEL while the INVITE is unanswered)."""
        call.session.stop(now)
        self._drain(call.session)

    # --- internals ---

    def _on_request(self, event: RequestReceived, now: float) -> None:
        request = event.request
        self.requests.append(request)
        call = self.calls.get(request.call_id)
        if call is not None and call.session.handle_request(event, now):
            self._drain(call.session)
            return
        if event.transaction is None:
            return
        if request.method == "REGISTER":
            expires = request.headers.get("Expires") or "3600"
            if expires == "0" and self.hold_unregister:
                self.held.append(event)
                return
            self._answer(event, self.register_status, now, [("Expires", expires)])
        elif request.method == "MESSAGE":
            self._answer(event, self.message_status, now)
        else:
            self._answer(event, 200, now)

    def _answer(
        self, event: RequestReceived, status: int, now: float, extra: list[tuple[str, str]] | None = None
    ) -> None:
        assert event.transaction is not None
        response = make_response(event.request, status, to_tag=self.endpoint.new_tag(), extra=extra)
        self.endpoint.send_response(event.transaction, response, now)

    def _drain(self, session: PlaySession) -> None:
        call = self.calls.get(session.invite.call_id) if session.invite is not None else None
        while (event := session.next_event()) is not None:
            if call is None:
                continue
            call.events.append(event)
            if isinstance(event, (PlayStarted, PlayFailed)) and not call.answered.done():
                call.answered.set_result(event)
            if isinstance(event, PlayEnded) and not call.ended.done():
                call.ended.set_result(event)


# --- what the services are given ------------------------------------------------------------------


@dataclass
class FakeSip:
    """``SipContext`` / ``SipIdentity``: the shared endpoint, who we are, where devices registered from."""

    endpoint: SipEndpoint
    local_id: str = GW_ID
    domain: str = DOMAIN
    peers: dict[str, Peer] = field(default_factory=dict)

    def peer_of(self, device_id: str) -> Peer | None:
        return self.peers.get(device_id)


@dataclass
class Locator:
    """``ChannelLocator``: channel -> device."""

    devices: Mapping[str, str]

    def device_of(self, channel_id: str) -> str | None:
        return self.devices.get(channel_id)


def gateway_endpoint() -> SipEndpoint:
    """The gateway's endpoint at GW_HOST:GW_PORT."""
    return SipEndpoint(SeededIds("gw"), local_host=GW_HOST, local_port=GW_PORT)


class FakeLive:
    """``LiveSource``: shared streams in memory; counts ``watch`` and ``leave``.

    ``gate`` (when set) holds every ``watch`` until it is set; ``fail`` makes
    ``watch`` raise for a channel.
    """

    media_host = "127.0.0.1"
    media_ports = 0

    def __init__(self) -> None:
        self.streams: dict[str, LiveStream] = {}
        self.watched: list[tuple[str, str]] = []
        self.left: list[tuple[str, str]] = []
        self.gate: asyncio.Event | None = None
        self.fail: dict[str, Exception] = {}
        self.asked_streams: list[int] = []  # the stream number of each watch (issue 11)
        self._viewers = itertools.count(1)

    @property
    def viewers(self) -> int:
        """Viewers joined and not left."""
        return len(self.watched) - len(self.left)

    async def watch(self, channel_id: str, transport: object = None, stream: int = 0) -> tuple[LiveStream, str]:
        self.asked_streams.append(stream)
        loop = asyncio.get_running_loop()
        if self.gate is not None:
            await self.gate.wait()
        if channel_id in self.fail:
            raise self.fail[channel_id]
        stream = self.streams.get(channel_id)
        if stream is None:
            stream = self.streams[channel_id] = LiveStream(
                channel_id=channel_id,
                device_id="camera",
                session=cast(PlaySession, None),
                transport=None,
                fanout=StreamFanout(channel_id),
                receiver=RtpReceiver(None, frozenset({96})),
                demuxer=PsDemuxer(),
                started=loop.create_future(),
            )
        viewer = f"v{next(self._viewers)}"
        stream.fanout.attach(viewer, loop.time())
        self.watched.append((channel_id, viewer))
        return stream, viewer

    def leave(self, channel_id: str, consumer: str) -> None:
        self.left.append((channel_id, consumer))
        stream = self.streams.get(channel_id)
        if stream is not None and consumer in stream.fanout.consumers:
            stream.fanout.detach(consumer, asyncio.get_running_loop().time())

    def end(self, channel_id: str) -> None:
        """The camera's stream ended (its BYE): what ``LiveService.close`` does to the relay's view."""
        stream = self.streams.pop(channel_id)
        stream.wakeup.set()
