"""Recordings of a simulated NVR or IPC: RecordInfo answers and playback/download calls (sans-I/O).

:class:`DeviceRecords` is a :class:`~gateway.gb28181.device_agent.DeviceFeature`:
add it to ``agent.features`` and the device

* answers ``Query/RecordInfo`` for one of its camera channels (docs/gb28181.md §12)
  from a :class:`~gateway.gb28181.device_recordings.RecordingIndex`, split across
  several ``Response`` MESSAGEs (``items_per_message`` each, every one with ``SumNum``
  and ``RecordList Num``; GB2312 by default) — a query for the device's own ID or a
  channel that is not a camera gets ``SumNum 0``;
* answers Playback and Download INVITEs (``s=Playback``/``s=Download``, ``u=``,
  ``t=<start> <end>`` in Unix epoch seconds, the history ``y=``, ``a=downloadspeed``)
  with its own :class:`~gateway.gb28181.device_calls.DeviceCalls` (100, then 200 with
  the SDP answer once the media side calls :meth:`DeviceRecords.accept`, as live calls;
  Download answers carry ``a=filesize``); other INVITEs are left to the agent's live calls;
* takes in-dialog INFO with ``Application/MANSRTSP`` (docs/gb28181.md §15.9): ``PLAY``
  with ``Scale``, ``PLAY`` with ``Range: npt=<s>-`` (seek, from the start of the
  requested range), ``PLAY`` with ``npt=now-`` (resume), ``PAUSE``, ``TEARDOWN`` → 200
  with an ``RTSP/1.0 200 OK`` body; a body it cannot parse → 400; an INFO for no
  playback dialog of this device → 481;
* when the position reaches the end of the range (plus ``end_grace``) sends
  ``Notify/MediaStatus`` with ``NotifyType 121`` as a MESSAGE inside the dialog (same
  Call-ID and tags, docs/gb28181.md §13), then waits for the gateway's BYE.

Where the playback stands is a :class:`~gateway.gb28181.playback_clock.PlaybackClock`
per call (:class:`PlaybackSession`), started by the ACK, moved by the INFOs, running at
``downloadspeed`` for a download. The media side (``simulators.playback``) drains
:meth:`DeviceRecords.next_event` — the live-call events
:class:`~gateway.gb28181.device_calls.MediaRequested` / ``MediaStarted`` /
``MediaStopped`` plus :class:`PlaybackChanged` after every control — and reads the
session's clock to know which recorded second to send.

Options (:class:`RecordOptions`): ``items_per_message`` (default 10), ``charset``
(``"GB2312"``; None: the server's, from its last MESSAGE), ``message_interval`` (s
between the answer's MESSAGEs; 0 sends all at once), ``max_items`` (cap per answer),
``end_grace`` and ``max_sessions``. Misbehaviour switches: ``never_answer`` (RecordInfo
is answered 200 at SIP level and then never), ``flood_items``/``flood_messages`` (every
RecordInfo answer is ``flood_items`` made-up one-minute items in ``flood_messages``
MESSAGEs, e.g. 500 in 100), ``cut`` + ``cut_at`` (at that fraction of the range the
playback ends early: :attr:`Cut.BYE` hangs up without MediaStatus, :attr:`Cut.STALL`
stops sending and says nothing).

Wall time: ``wall_offset`` turns the caller's ``now`` into Unix time (``now +
wall_offset``), for "the last 7 days" of the index. MANSCDP times are the local wall
clock of this machine (naive ``datetime``), as the gateway's parser reads them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, SubElement

from gateway.errors import ManscdpError, SipError
from gateway.gb28181.device_calls import (
    CallError,
    CallEvent,
    DeviceCalls,
    MediaRequested,
    MediaStarted,
    MediaStopped,
)
from gateway.gb28181.device_recordings import RecordingIndex, RecordKind
from gateway.gb28181.manscdp import ManscdpMessage, UnknownCommand
from gateway.gb28181.manscdp.codec import encode_xml
from gateway.gb28181.manscdp.records import (
    RecordInfoQuery,
    RecordInfoResponse,
    RecordItem,
    build_record_info_response,
    parse_record_info_query,
    split_record_items,
)
from gateway.gb28181.mansrtsp import MansrtspError, MansrtspMethod, MansrtspRequest, parse_request
from gateway.gb28181.playback_clock import PlaybackClock, PlaybackClockError
from gateway.gb28181.requests import MANSCDP_CONTENT_TYPE, target_id
from gateway.gb28181.sdp import SdpError, SessionType, parse_sdp
from gateway.gb28181.sip.endpoint import RequestReceived
from gateway.gb28181.sip.message import SipRequest, make_response

if TYPE_CHECKING:
    from gateway.gb28181.device_agent import DeviceAgent

__all__ = [
    "MANSRTSP_CONTENT_TYPE",
    "Cut",
    "DeviceRecords",
    "PlaybackChanged",
    "PlaybackSession",
    "RecordEvent",
    "RecordOptions",
    "RecordStats",
    "records_of",
]

MANSRTSP_CONTENT_TYPE = "Application/MANSRTSP"
MEDIA_STATUS_END = 121  # NotifyType: the file was sent to its end (docs/gb28181.md §13)


class Cut(StrEnum):
    """How a misbehaving device ends a playback early."""

    BYE = "bye"  # hang up without MediaStatus
    STALL = "stall"  # stop sending, say nothing


@dataclass(frozen=True, slots=True)
class RecordOptions:
    """How the device answers (see the module docstring)."""

    items_per_message: int = 10
    charset: str | None = "GB2312"
    message_interval: float = 0.0
    max_items: int = 2000
    end_grace: float = 0.3
    max_sessions: int = 8
    never_answer: bool = False
    flood_items: int = 0
    flood_messages: int = 100
    cut: Cut | None = None
    cut_at: float = 0.5

    def __post_init__(self) -> None:
        if self.items_per_message < 1 or self.max_items < 1 or self.max_sessions < 1:
            raise ValueError("items_per_message, max_items and max_sessions must be positive")
        if self.flood_items < 0 or self.flood_messages < 1 or not 0 < self.cut_at < 1:
            raise ValueError("flood counts must be positive and cut_at a fraction in (0, 1)")


@dataclass(slots=True)
class PlaybackSession:
    """One playback or download call: what was asked and where it stands."""

    call_id: str
    channel_id: str
    kind: SessionType
    start: int  # epoch s
    end: int  # epoch s
    speed: float  # recorded seconds per second at scale 1 (downloadspeed for a download)
    clock: PlaybackClock
    started: bool = False
    stalled: bool = False  # the media side sends nothing more (TEARDOWN, or the STALL misbehaviour)
    media_status_sent: bool = False
    controls: int = 0

    def recorded_time(self, now: float) -> float:
        """The recorded time (epoch s) shown at ``now``."""
        return self.start + self.clock.position(now)


@dataclass(frozen=True, slots=True)
class PlaybackChanged:
    """A MANSRTSP control moved the clock (or stopped the sending): the media side re-reads it."""

    call_id: str
    method: str


RecordEvent = CallEvent | PlaybackChanged


@dataclass(slots=True)
class RecordStats:
    """What the feature did, for tests and the fleet summary."""

    queries: int = 0
    answers_sent: int = 0  # MESSAGEs
    playbacks: int = 0
    downloads: int = 0
    controls: int = 0
    bad_controls: int = 0
    media_status_sent: int = 0


@dataclass(frozen=True, slots=True)
class _Timer:
    feature: int  # id() of the feature: keys of two features never collide
    what: str  # "end", "cut", "piece"
    ref: str | int


@dataclass
class DeviceRecords:
    """The recordings feature of one device agent (see the module docstring)."""

    index: RecordingIndex
    options: RecordOptions = field(default_factory=RecordOptions)
    wall_offset: float = 0.0
    calls: DeviceCalls | None = None
    sessions: dict[str, PlaybackSession] = field(default_factory=dict)
    stats: RecordStats = field(default_factory=RecordStats)
    agent: DeviceAgent | None = None
    """The device this feature belongs to (set on its first call)."""
    _events: deque[RecordEvent] = field(default_factory=deque)
    _pieces: dict[int, deque[bytes]] = field(default_factory=dict)
    _piece_seq: int = 0

    # --- the media side's API -----------------------------------------------------------------

    def next_event(self) -> RecordEvent | None:
        """The next event for the media side, or None."""
        return self._events.popleft() if self._events else None

    def accept(self, call_id: str, media_host: str, media_port: int, now: float) -> None:
        """The media side is ready: answer 200 (raises CallError when the call is gone)."""
        session = self.sessions.get(call_id)
        if self.calls is None or session is None:
            raise CallError(f"no playback call {call_id[:40]!r}")
        size = None
        if session.kind is SessionType.DOWNLOAD:
            size = (session.end - session.start) * self.index.options.bitrate // 8
        self.calls.accept(call_id, media_host, media_port, now, file_size=size)

    def reject(self, call_id: str, status: int, now: float) -> None:
        """The media side cannot serve the call (e.g. 500, no socket)."""
        if self.calls is None:
            raise CallError(f"no playback call {call_id[:40]!r}")
        self.calls.reject(call_id, status, now)
        self._collect(now)

    def hang_up(self, call_id: str, now: float) -> None:
        """End a call from the device side (the media path broke): BYE."""
        if self.calls is not None:
            self.calls.hang_up(call_id, now)
        self._collect(now)

    # --- DeviceFeature ----------------------------------------------------------------------------

    def on_message(self, agent: DeviceAgent, message: ManscdpMessage, now: float) -> bool:
        """``Query/RecordInfo``: answer it (in pieces); other MESSAGEs are not ours."""
        if not (isinstance(message, UnknownCommand) and message.root == "Query" and message.cmd_type == "RecordInfo"):
            return False
        self.stats.queries += 1
        self.agent = agent
        if self.options.never_answer:
            return True
        try:
            query = parse_record_info_query(message.element)
        except ManscdpError:
            return True  # a query we cannot read gets its 200 and nothing else, as devices do
        charset = self.options.charset or agent.client.charset
        bodies = [build_record_info_response(piece, charset) for piece in self._answer(agent, query, now)]
        self._send_pieces(agent, bodies, now)
        return True

    def on_call(self, agent: DeviceAgent, event: RequestReceived, now: float) -> bool:
        """Playback/Download INVITEs and everything in their dialogs; INFO for no dialog gets 481."""
        request, txn = event.request, event.transaction
        calls = self._calls(agent)
        self.agent = agent
        if request.method == "INVITE":
            if txn is None or not self._is_history(request):
                return False
            self._on_invite(agent, event, now)
        elif request.method == "INFO":
            if txn is None:
                return True
            self._on_info(agent, request, txn, now)
        elif request.call_id in self.sessions:
            target = self.sessions[request.call_id].channel_id
            calls.on_request(event, target, now)
        else:
            return False
        self._collect(now)
        return True

    def on_timer(self, agent: DeviceAgent, key: Hashable, now: float) -> bool:
        """The end of a playback (MediaStatus), a misbehaving cut, or the next piece of an answer."""
        if not isinstance(key, _Timer) or key.feature != id(self):
            return False
        if key.what == "piece" and isinstance(key.ref, int):
            self._next_piece(agent, key.ref, now)
            return True
        session = self.sessions.get(str(key.ref))
        if session is None:
            return True
        if key.what == "end":
            self._end_reached(agent, session, now)
        elif key.what == "cut":
            self._cut(agent, session, now)
        return True

    # --- RecordInfo ---------------------------------------------------------------------------------

    def _answer(self, agent: DeviceAgent, query: RecordInfoQuery, now: float) -> list[RecordInfoResponse]:
        channel = next((c for c in agent.profile.channels if c.device_id == query.device_id), None)
        name = channel.name if channel is not None else agent.profile.name
        opts = self.options
        if opts.flood_items:
            items = self._flood(agent, query)
            per = -(-len(items) // opts.flood_messages)
            return split_record_items(query.sn, query.device_id, name, items, per)
        if query.device_id not in agent.camera_ids:
            return split_record_items(query.sn, query.device_id, name, [], opts.items_per_message)
        kind = {"time": RecordKind.TIME, "alarm": RecordKind.ALARM, "manual": RecordKind.MANUAL}.get(
            (query.type or "all").lower()
        )
        start, end = int(_epoch(query.start_time)), int(_epoch(query.end_time))
        wall = int(now + self.wall_offset)
        found = self.index.query(query.device_id, start, end, wall, kind)[: opts.max_items]
        address = channel.address if channel is not None else None
        items = [
            RecordItem(
                device_id=query.device_id,
                name=name,
                start_time=datetime.fromtimestamp(r.start),
                end_time=datetime.fromtimestamp(r.end),
                file_path=r.file_path,
                address=address,
                secrecy=0,
                type=r.kind.value,
                recorder_id=agent.profile.device_id,
                file_size=r.file_size,
            )
            for r in found
        ]
        return split_record_items(query.sn, query.device_id, name, items, opts.items_per_message)

    def _flood(self, agent: DeviceAgent, query: RecordInfoQuery) -> list[RecordItem]:
        start = int(_epoch(query.start_time))
        return [
            RecordItem(
                device_id=query.device_id,
                name=f"flood-{n}",
                start_time=datetime.fromtimestamp(start + 60 * n),
                end_time=datetime.fromtimestamp(start + 60 * n + 60),
                file_path=f"/flood/{n:05d}.mp4",
                secrecy=0,
                type=RecordKind.TIME.value,
                recorder_id=agent.profile.device_id,
                file_size=7_500_000,
            )
            for n in range(self.options.flood_items)
        ]

    def _send_pieces(self, agent: DeviceAgent, bodies: list[bytes], now: float) -> None:
        if self.options.message_interval <= 0:
            for body in bodies:
                self._send_piece(agent, body, now)
            return
        self._piece_seq += 1
        self._pieces[self._piece_seq] = deque(bodies)
        self._next_piece(agent, self._piece_seq, now)

    def _next_piece(self, agent: DeviceAgent, seq: int, now: float) -> None:
        queue = self._pieces.get(seq)
        if not queue:
            self._pieces.pop(seq, None)
            return
        self._send_piece(agent, queue.popleft(), now)
        if queue:
            agent.client.set_timer(_Timer(id(self), "piece", seq), now + self.options.message_interval)
        else:
            del self._pieces[seq]

    def _send_piece(self, agent: DeviceAgent, body: bytes, now: float) -> None:
        agent.client.send_message(body, now, ("record-info", id(self)))
        self.stats.answers_sent += 1

    # --- calls ----------------------------------------------------------------------------------------

    def _calls(self, agent: DeviceAgent) -> DeviceCalls:
        if self.calls is None:
            self.calls = DeviceCalls(agent.endpoint, max_calls=self.options.max_sessions)
        return self.calls

    @staticmethod
    def _is_history(request: SipRequest) -> bool:
        try:
            session_type = parse_sdp(request.body).session_type
        except SdpError:
            return False
        return isinstance(session_type, SessionType) and session_type.history

    def _on_invite(self, agent: DeviceAgent, event: RequestReceived, now: float) -> None:
        request, txn = event.request, event.transaction
        assert txn is not None
        channel_id = target_id(request) or ""
        offer = parse_sdp(request.body)
        if offer.uri and offer.uri.split(":", 1)[0] != channel_id:
            channel_id = ""  # u= names another channel than the Request-URI: not one we can serve
        status = None
        if channel_id not in agent.camera_ids:
            status = 404
        elif not 0 < offer.start_time < offer.end_time:
            status = 488  # no usable t= range
        elif len(self.sessions) >= self.options.max_sessions:
            status = 486
        if status is not None:
            agent.endpoint.send_response(txn, make_response(request, status, to_tag=agent.endpoint.new_tag()), now)
            return
        kind = SessionType(offer.session_type)
        speed = float(max(1, min(offer.download_speed or 1, 64))) if kind is SessionType.DOWNLOAD else 1.0
        duration = offer.end_time - offer.start_time
        session = PlaybackSession(
            request.call_id,
            channel_id,
            kind,
            offer.start_time,
            offer.end_time,
            speed,
            PlaybackClock(float(duration), scale=speed),
        )
        self.sessions[request.call_id] = session
        self._calls(agent).on_request(event, channel_id, now)
        self._collect(now)
        if not any(isinstance(e, MediaRequested) and e.call_id == request.call_id for e in self._events):
            del self.sessions[request.call_id]  # the calls refused it (e.g. 488 for an offer without y=)
            return
        if kind is SessionType.DOWNLOAD:
            self.stats.downloads += 1
        else:
            self.stats.playbacks += 1

    def _on_info(self, agent: DeviceAgent, request: SipRequest, txn: str, now: float) -> None:
        session = self.sessions.get(request.call_id)
        calls = self._calls(agent)
        try:
            known = session is not None and calls.in_dialog(request)
        except SipError as exc:
            self._respond(agent, request, txn, exc.status_hint, now)
            return
        if session is None or not known:
            self._respond(agent, request, txn, 481, now)
            return
        try:
            control = parse_request(request.body)
            self._control(agent, session, control, now)
        except (MansrtspError, PlaybackClockError):
            self.stats.bad_controls += 1
            self._respond(agent, request, txn, 400, now)
            return
        self.stats.controls += 1
        session.controls += 1
        body = f"RTSP/1.0 200 OK\r\nCSeq: {control.cseq}\r\n".encode()
        extra = [("Content-Type", MANSRTSP_CONTENT_TYPE)]
        response = make_response(request, 200, extra=extra, body=body)
        agent.endpoint.send_response(txn, response, now)

    def _control(self, agent: DeviceAgent, session: PlaybackSession, control: MansrtspRequest, now: float) -> None:
        clock = session.clock
        if control.method is MansrtspMethod.TEARDOWN:
            clock.pause(now)
            session.stalled = True
        elif control.method is MansrtspMethod.PAUSE:
            clock.pause(now)
        else:
            if control.scale is not None:
                clock.set_scale(control.scale * session.speed, now)
            if isinstance(control.range_start, float):
                clock.seek(control.range_start, now)
            elif control.range_start is not None or control.scale is None:
                clock.resume(now)
        self._arm(agent, session, now)
        self._events.append(PlaybackChanged(session.call_id, control.method.value))

    def _respond(self, agent: DeviceAgent, request: SipRequest, txn: str, status: int, now: float) -> None:
        agent.endpoint.send_response(txn, make_response(request, status, to_tag=agent.endpoint.new_tag()), now)

    def _collect(self, now: float) -> None:
        """Move the calls' events to ours; the ACK starts a clock, a stop forgets the session."""
        agent = self.agent
        if self.calls is None:
            return
        while (event := self.calls.next_event()) is not None:
            if isinstance(event, MediaStarted):
                session = self.sessions.get(event.call_id)
                if session is not None and not session.started and agent is not None:
                    session.started = True
                    session.clock.start(now)
                    self._arm(agent, session, now)
            elif isinstance(event, MediaStopped):
                session = self.sessions.pop(event.call_id, None)
                if session is not None and agent is not None:
                    self._disarm(agent, session)
            elif isinstance(event, MediaRequested) and event.call_id not in self.sessions:
                continue
            self._events.append(event)

    # --- the end ----------------------------------------------------------------------------------------

    def _arm(self, agent: DeviceAgent, session: PlaybackSession, now: float) -> None:
        end_key = _Timer(id(self), "end", session.call_id)
        cut_key = _Timer(id(self), "cut", session.call_id)
        clock = session.clock
        at_end = clock.time_at(clock.duration)
        if at_end is None or session.stalled or session.media_status_sent:
            agent.client.cancel_timer(end_key)
        else:
            agent.client.set_timer(end_key, max(now, at_end) + self.options.end_grace)
        if self.options.cut is not None:
            at_cut = clock.time_at(clock.duration * self.options.cut_at)
            if at_cut is None or session.stalled:
                agent.client.cancel_timer(cut_key)
            else:
                agent.client.set_timer(cut_key, max(now, at_cut))

    def _disarm(self, agent: DeviceAgent, session: PlaybackSession) -> None:
        agent.client.cancel_timer(_Timer(id(self), "end", session.call_id))
        agent.client.cancel_timer(_Timer(id(self), "cut", session.call_id))

    def _end_reached(self, agent: DeviceAgent, session: PlaybackSession, now: float) -> None:
        if session.media_status_sent or session.stalled or self.calls is None:
            return
        if not session.clock.at_end(now):  # moved meanwhile (a seek back): wait again
            self._arm(agent, session, now)
            return
        root = Element("Notify")
        SubElement(root, "CmdType").text = "MediaStatus"
        SubElement(root, "SN").text = str(agent.client.next_sn())
        SubElement(root, "DeviceID").text = session.channel_id
        SubElement(root, "NotifyType").text = str(MEDIA_STATUS_END)
        body = encode_xml(root, self.options.charset or agent.client.charset)
        if self.calls.send_in_dialog(session.call_id, "MESSAGE", body, MANSCDP_CONTENT_TYPE, now) is not None:
            session.media_status_sent = True
            self.stats.media_status_sent += 1

    def _cut(self, agent: DeviceAgent, session: PlaybackSession, now: float) -> None:
        if self.options.cut is Cut.STALL:
            session.stalled = True
            agent.client.cancel_timer(_Timer(id(self), "end", session.call_id))
            self._events.append(PlaybackChanged(session.call_id, "STALL"))
        else:
            self.hang_up(session.call_id, now)


def records_of(agent: DeviceAgent) -> DeviceRecords | None:
    """The recordings feature of a simulated device, or None (tests switch its ``options`` at run time)."""
    return next((f for f in agent.features if isinstance(f, DeviceRecords)), None)


def _epoch(value: datetime) -> float:
    """Unix time of a MANSCDP time (naive: this machine's local wall clock)."""
    return value.timestamp()
