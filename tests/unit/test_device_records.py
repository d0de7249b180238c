"""The simulated NVR's recordings feature against the gateway's own cores, in memory (gb_harness).

RecordInfo goes out through ``DeviceAccess.send_command`` and comes back as
``ManscdpReceived``; playback is the records helper's ``PlaySession`` with a
history offer, MANSRTSP INFOs through ``send_info``; the fake clock runs the
device's end-of-file and misbehaviour timers.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest

from gateway.gb28181 import mansrtsp
from gateway.gb28181.access_events import ManscdpReceived
from gateway.gb28181.device_calls import MediaRequested, MediaStarted, MediaStopped
from gateway.gb28181.device_recordings import IndexOptions, RecordingIndex, RecordKind
from gateway.gb28181.device_records import Cut, DeviceRecords, PlaybackChanged, RecordOptions
from gateway.gb28181.manscdp import UnknownCommand
from gateway.gb28181.manscdp.records import (
    RecordInfoAssembler,
    RecordInfoQuery,
    build_record_info_query,
    parse_record_info_response,
)
from gateway.gb28181.play import PlayEnded, PlayInfoAnswered, PlayMediaEnded, PlaySession, PlayStarted
from gateway.gb28181.sdp import MediaTransport, SessionType, offer_for_history, parse_sdp
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEvent, TransactionTimedOut
from tests.unit.gb_harness import (
    DEV_PEER,
    GATEWAY_ID,
    NVR_ID,
    REALM,
    WALL_OFFSET,
    GbHarness,
    make_harness,
)

CAM = "12010000001310000001"
SSRC = "1100000001"


class Sessions:
    """The gateway's play sessions (and a catch-all for stray responses) as the router's first handler."""

    def __init__(self) -> None:
        self.sessions: list[PlaySession] = []
        self.responses: list[ResponseReceived] = []

    def route(self, event: SipEvent, now: float) -> bool:
        for session in self.sessions:
            if isinstance(event, RequestReceived):
                if session.handle_request(event, now):
                    return True
            elif session.handle_response(event, now):
                return True
        if isinstance(event, ResponseReceived) and event.context == "stray":
            self.responses.append(event)
            return True
        return isinstance(event, TransactionTimedOut) and event.context == "stray"

    def get_timer(self) -> float | None:
        timers = [t for s in self.sessions if (t := s.get_timer()) is not None]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        for session in self.sessions:
            session.handle_timer(now)


class Rig:
    def __init__(self, options: RecordOptions | None = None, *, index: RecordingIndex | None = None) -> None:
        self.h: GbHarness = make_harness()
        self.agent = self.h.add_agent(NVR_ID, n_channels=2)
        self.index = index or RecordingIndex(IndexOptions(seed=5))
        self.feature = DeviceRecords(self.index, options or RecordOptions(), wall_offset=WALL_OFFSET)
        self.agent.features.append(self.feature)
        self.sessions = Sessions()
        self.h.router.handlers = (self.sessions, *self.h.router.handlers)
        self.h.start(self.agent)
        self.h.pump(until=1.0)
        assert self.agent.registered
        self.media: list[object] = []

    @property
    def wall(self) -> int:
        return int(self.h.clock.now + WALL_OFFSET)

    def pump(self, seconds: float = 0.0) -> None:
        """Run the network, answer media requests at once (port 40000), collect media events."""
        for _ in range(50):
            self.h.pump(self.h.clock.now + seconds)
            seconds = 0.0
            answered = False
            while (event := self.feature.next_event()) is not None:
                self.media.append(event)
                if isinstance(event, MediaRequested):
                    self.feature.accept(event.call_id, "10.0.0.2", 40000, self.h.clock.now)
                    answered = True
            if not answered:
                return

    # --- RecordInfo ---------------------------------------------------------------------------

    def record_info(self, channel: str, start: int, end: int, kind: str = "all") -> tuple[int | None, list[bytes]]:
        def body(sn: int, charset: str) -> bytes:
            query = RecordInfoQuery(sn, channel, datetime.fromtimestamp(start), datetime.fromtimestamp(end), type=kind)
            return build_record_info_query(query, charset)

        sn = self.h.access.send_command(NVR_ID, "RecordInfo", body, self.h.clock.now)
        self.h.take()
        self.pump(5.0)
        answers = [
            e.message
            for e in self.h.take()
            if isinstance(e, ManscdpReceived) and isinstance(e.message, UnknownCommand) and e.message.sn == sn
        ]
        bodies = [d.parse().body for d in self.h.wire if d.src == "dev" and b"<CmdType>RecordInfo</CmdType>" in d.data]
        assert all(isinstance(a, UnknownCommand) and a.cmd_type == "RecordInfo" for a in answers)
        return sn, bodies[-len(answers) :] if answers else []

    # --- playback -----------------------------------------------------------------------------

    def play(
        self, start: int, end: int, *, kind: SessionType = SessionType.PLAYBACK, speed: int | None = None
    ) -> PlaySession:
        offer = offer_for_history(
            session_type=kind,
            channel_id=CAM,
            start=start,
            end=end,
            media_host="10.0.0.1",
            media_port=30000,
            ssrc=SSRC,
            transport=MediaTransport.UDP,
            download_speed=speed,
        )
        session = PlaySession(
            self.h.access.endpoint, GATEWAY_ID, REALM, CAM, DEV_PEER, "10.0.0.1", 30000, MediaTransport.UDP, SSRC,
            offer=offer,
        )  # fmt: skip
        self.sessions.sessions.append(session)
        session.start(self.h.clock.now)
        self.pump()
        return session

    def info(self, session: PlaySession, body: bytes) -> PlayInfoAnswered:
        key = session.send_info(body, self.h.clock.now)
        self.pump()
        answers = [e for e in drain(session) if isinstance(e, PlayInfoAnswered) and e.transaction == key]
        assert len(answers) == 1
        return answers[0]


def drain(session: PlaySession) -> list[object]:
    out = []
    while (event := session.next_event()) is not None:
        out.append(event)
    return out


# --- RecordInfo ---------------------------------------------------------------------------------


def test_record_info_split_in_gb2312_messages_and_reassembled() -> None:
    rig = Rig(RecordOptions(items_per_message=4))
    start, end = rig.wall - 6 * 3600, rig.wall
    rig.index.add_alarm(rig.wall - 3600)
    expected = rig.index.query(CAM, start, end, rig.wall)  # the device answers at once, at this wall time
    _, bodies = rig.record_info(CAM, start, end)
    assert len(expected) >= 12
    assert len(bodies) == -(-len(expected) // 4)
    assert all(b.startswith(b'<?xml version="1.0" encoding="GB2312"?>') for b in bodies)
    assembler = RecordInfoAssembler(CAM, 0.0)
    for body in bodies:
        piece = parse_record_info_response(body)
        assert piece.sum_num == len(expected) and piece.num == len(piece.items) <= 4
        assembler.add(piece, 0.0)
    assert assembler.complete
    got = sorted((int(i.start_time.timestamp()), int(i.end_time.timestamp()), i.type) for i in assembler.items)
    assert got == sorted((r.start, r.end, r.kind.value) for r in expected)
    assert any(i.type == "alarm" for i in assembler.items)
    assert {i.recorder_id for i in assembler.items} == {NVR_ID}
    assert rig.feature.stats.queries == 1


def test_record_info_by_type_and_for_ids_without_recordings() -> None:
    rig = Rig()
    rig.index.add_alarm(rig.wall - 100)
    _, bodies = rig.record_info(CAM, rig.wall - 3600, rig.wall, "alarm")
    items = [i for b in bodies for i in parse_record_info_response(b).items]
    assert items and {i.type for i in items} == {RecordKind.ALARM.value}
    _, bodies = rig.record_info(NVR_ID, rig.wall - 3600, rig.wall)  # the NVR itself: no files
    assert [parse_record_info_response(b).sum_num for b in bodies] == [0]


def test_never_answering_device_only_says_200() -> None:
    rig = Rig(RecordOptions(never_answer=True))
    _, bodies = rig.record_info(CAM, rig.wall - 3600, rig.wall)
    assert bodies == []
    assert rig.feature.stats.queries == 1 and rig.feature.stats.answers_sent == 0


def test_flooding_device_gives_500_items_in_100_messages() -> None:
    rig = Rig(RecordOptions(flood_items=500, flood_messages=100))
    _, bodies = rig.record_info(CAM, rig.wall - 3600, rig.wall)
    pieces = [parse_record_info_response(b) for b in bodies]
    assert len(pieces) == 100
    assert {p.sum_num for p in pieces} == {500} and sum(len(p.items) for p in pieces) == 500


def test_answer_pieces_can_be_spaced_out() -> None:
    rig = Rig(RecordOptions(items_per_message=2, message_interval=0.5))
    sn = rig.h.access.send_command(
        NVR_ID,
        "RecordInfo",
        lambda sn, cs: build_record_info_query(
            RecordInfoQuery(sn, CAM, datetime.fromtimestamp(rig.wall - 3 * 3600), datetime.fromtimestamp(rig.wall)),
            cs,
        ),
        rig.h.clock.now,
    )
    rig.h.pump()
    first = [e for e in rig.h.take() if isinstance(e, ManscdpReceived) and e.message.sn == sn]
    assert len(first) == 1
    rig.h.advance(10.0)
    later = [e for e in rig.h.take() if isinstance(e, ManscdpReceived) and e.message.sn == sn]
    assert len(later) >= 2
    assert later[-1].at - first[0].at >= 0.5 * len(later) - 1e-6


# --- playback -----------------------------------------------------------------------------------


def test_playback_answer_controls_and_media_status_at_the_end() -> None:
    rig = Rig()
    start = rig.wall - 3600
    session = rig.play(start, start + 60)
    started = [e for e in drain(session) if isinstance(e, PlayStarted)]
    assert len(started) == 1 and started[0].spec.session_type is SessionType.PLAYBACK
    answer = next(
        parse_sdp(d.parse().body) for d in rig.h.wire if d.src == "dev" and d.data.startswith(b"SIP/2.0 200")
        and b"s=Playback" in d.data
    )  # fmt: skip
    assert (answer.start_time, answer.end_time, answer.ssrc, answer.port) == (start, start + 60, SSRC, 40000)
    assert answer.direction is not None and answer.direction.value == "sendonly"
    assert [type(e) for e in rig.media] == [MediaRequested, MediaStarted]
    playback = rig.feature.sessions[session.invite.call_id if session.invite else ""]
    assert playback.clock.playing and playback.start == start and playback.channel_id == CAM

    rig.pump(10.0)
    assert playback.clock.position(rig.h.clock.now) == pytest.approx(10.0)
    assert rig.info(session, mansrtsp.set_scale(1, 2.0)).status == 200
    rig.pump(5.0)
    assert playback.clock.position(rig.h.clock.now) == pytest.approx(20.0)
    assert rig.info(session, mansrtsp.pause(2)).status == 200
    rig.pump(30.0)
    assert playback.clock.position(rig.h.clock.now) == pytest.approx(20.0)
    assert [e for e in drain(session) if isinstance(e, PlayMediaEnded)] == []  # paused: no end
    answered = rig.info(session, mansrtsp.seek(3, 40.0))
    assert answered.status == 200 and answered.body.startswith(b"RTSP/1.0 200 OK")
    assert playback.clock.position(rig.h.clock.now) == pytest.approx(40.0) and playback.clock.scale == 2.0
    assert rig.info(session, b"DANCE RTSP/1.0\r\nCSeq: 4\r\n").status == 400
    assert rig.info(session, mansrtsp.resume(5)).status == 200
    assert [e.method for e in rig.media if isinstance(e, PlaybackChanged)] == ["PLAY", "PAUSE", "PLAY", "PLAY"]

    rig.pump(9.0)  # 40 + 9 * 2 = 58 of 60: not yet
    assert [e for e in drain(session) if isinstance(e, PlayMediaEnded)] == []
    rig.pump(2.0)  # the end (+ grace) passed: MediaStatus 121 in the dialog
    assert len([e for e in drain(session) if isinstance(e, PlayMediaEnded)]) == 1
    notify = next(d.parse() for d in rig.h.wire if d.src == "dev" and b"<CmdType>MediaStatus</CmdType>" in d.data)
    assert notify.call_id == session.dialog.call_id if session.dialog else False
    assert b"<NotifyType>121</NotifyType>" in notify.body and f"<DeviceID>{CAM}</DeviceID>".encode() in notify.body
    assert rig.feature.stats.media_status_sent == 1
    session.stop(rig.h.clock.now)  # the gateway hangs up
    rig.pump(1.0)
    assert isinstance(rig.media[-1], MediaStopped) and rig.feature.sessions == {}


def test_info_for_an_unknown_dialog_is_481() -> None:
    rig = Rig()
    session = rig.play(rig.wall - 600, rig.wall - 500)
    assert session.dialog is not None
    stranger = dataclasses.replace(session.dialog, call_id="no-such-call@10.0.0.1")
    request = stranger.new_request("INFO", mansrtsp.pause(9), "Application/MANSRTSP")
    rig.h.access.endpoint.send_request(request, DEV_PEER, rig.h.clock.now, context="stray")
    rig.pump()
    assert [r.response.status for r in rig.sessions.responses] == [481]
    session.stop(rig.h.clock.now)
    rig.pump(1.0)
    with pytest.raises(mansrtsp.MansrtspError):
        mansrtsp.parse_request(b"")


def test_download_runs_at_downloadspeed_and_answers_filesize() -> None:
    rig = Rig()
    start = rig.wall - 7200
    session = rig.play(start, start + 40, kind=SessionType.DOWNLOAD, speed=4)
    answer = next(
        parse_sdp(d.parse().body) for d in rig.h.wire if d.src == "dev" and d.data.startswith(b"SIP/2.0 200")
        and b"s=Download" in d.data
    )  # fmt: skip
    assert answer.file_size == 40 * 1_000_000 // 8
    rig.pump(9.0)  # 36 of 40 s sent
    assert [e for e in drain(session) if isinstance(e, PlayMediaEnded)] == []
    rig.pump(1.5)
    assert len([e for e in drain(session) if isinstance(e, PlayMediaEnded)]) == 1
    assert rig.feature.stats.downloads == 1


@pytest.mark.parametrize("cut", [Cut.BYE, Cut.STALL])
def test_a_playback_ending_mid_stream(cut: Cut) -> None:
    rig = Rig(RecordOptions(cut=cut, cut_at=0.5))
    session = rig.play(rig.wall - 600, rig.wall - 560)
    drain(session)
    rig.pump(25.0)
    events = drain(session)
    assert not [e for e in events if isinstance(e, PlayMediaEnded)]
    if cut is Cut.BYE:
        assert [e.reason for e in events if isinstance(e, PlayEnded)]
        assert isinstance(rig.media[-1], MediaStopped) and rig.feature.sessions == {}
    else:
        assert not [e for e in events if isinstance(e, PlayEnded)]
        (playback,) = rig.feature.sessions.values()
        assert playback.stalled and isinstance(rig.media[-1], PlaybackChanged)
        rig.pump(60.0)
        assert rig.feature.stats.media_status_sent == 0
    assert rig.feature.stats.media_status_sent == 0


def test_refusals_unknown_channel_and_bad_range() -> None:
    rig = Rig()
    bad = offer_for_history(
        session_type=SessionType.PLAYBACK,
        channel_id=CAM,
        start=100,
        end=200,
        media_host="10.0.0.1",
        media_port=30000,
        ssrc=SSRC,
    )
    for channel, offer, status in (
        ("12010000001310000099", bad, 404),  # not a camera of this NVR: the host answers 404 too
        (CAM, dataclasses.replace(bad, start_time=300), 488),  # t= reversed
        (CAM, dataclasses.replace(bad, ssrc=None), 488),  # no y=: the calls refuse it, no session is kept
    ):
        session = PlaySession(
            rig.h.access.endpoint, GATEWAY_ID, REALM, channel, DEV_PEER, "10.0.0.1", 30000, MediaTransport.UDP, SSRC,
            offer=offer,
        )  # fmt: skip
        rig.sessions.sessions.append(session)
        session.start(rig.h.clock.now)
        rig.pump()
        failed = [e for e in drain(session) if not isinstance(e, PlayStarted)]
        assert failed and getattr(failed[0], "status", None) == status
    assert rig.feature.sessions == {}
