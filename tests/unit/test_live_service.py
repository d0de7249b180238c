"""LiveService on an in-memory SIP network: one INVITE per channel, viewers, linger, the camera's answers.

The gateway side is the real service on a ``SipEndpoint`` behind a router
(``[live, tail]``: the tail stands where device access is); the camera is
``DeviceCalls`` on its own endpoint. Only the service's UDP RTP receiver is a
real socket (loopback, port 0); no RTP is ever sent: a UDP stream counts as
started at the camera's 200 OK.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from gateway import live as live_module
from gateway.gb28181.device_calls import MediaRequested, MediaStopped
from gateway.gb28181.manscdp import Keepalive, serialize
from gateway.gb28181.requests import build_message, request_uri_user, sip_uri
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEndpoint, TransactionTimedOut
from gateway.gb28181.sip.idsource import SeededIds
from gateway.gb28181.sip.message import SipRequest, SipResponse
from gateway.io.rtp_io import UdpRtpReceiverTransport
from gateway.live import LiveError, LiveService
from tests.conftest import wait_for
from tests.unit.service_fakes import Camera, FakeSip, Locator, gateway_endpoint
from tests.unit.sip_memnet import DOMAIN, GW_HOST, GW_ID, GW_PEER, GW_PORT, MemNet, Tail, udp

NVR = "12010100001180000001"
CHANNEL = "12010100001310000001"
OTHER = "12010100001310000002"
UNKNOWN = "12010100001319999999"
ASLEEP_NVR = "12010100001180000009"  # known to the directory, not registered
ASLEEP_CHANNEL = "12010100001310000009"
CAM_HOST, CAM_PORT = "10.0.0.2", 5061


@dataclass
class Rig:
    """The live service and its tail on the gateway's node, a camera on its own."""

    net: MemNet
    live: LiveService
    camera: Camera
    camera_endpoint: SipEndpoint
    tail: Tail

    @property
    def now(self) -> float:
        return self.net.loop.time()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    net = MemNet()
    gw = gateway_endpoint()
    sip = FakeSip(gw, peers={NVR: udp(CAM_HOST, CAM_PORT)})
    locator = Locator({CHANNEL: NVR, OTHER: NVR, ASLEEP_CHANNEL: ASLEEP_NVR})
    live = LiveService(sip, locator, play_timeout=2.0, rtp_timeout=60.0)
    tail = Tail(gw)
    net.add("gw", gw, [live, tail])
    camera_endpoint = SipEndpoint(SeededIds("cam"), local_host=CAM_HOST, local_port=CAM_PORT)
    camera = Camera(camera_endpoint)
    net.add("camera", camera_endpoint, [camera], unclaimed_status=200)
    yield Rig(net, live, camera, camera_endpoint, tail)
    for channel_id in list(live.streams):
        live.close(channel_id, "test over")
    await net.settle()
    net.close()


def gauges(live: LiveService) -> dict[str, float]:
    """The stream and viewer gauges of ``collect()``."""
    wanted = ("kgw_streams_active", "kgw_stream_viewers")
    return {m.name: m.samples[0].value for m in live.collect() if m.name in wanted}


def rtp_ports(monkeypatch: pytest.MonkeyPatch) -> list[UdpRtpReceiverTransport]:
    """Every UDP RTP receiver the service opens from now on."""
    opened: list[UdpRtpReceiverTransport] = []
    real_open = UdpRtpReceiverTransport.open

    async def spy(*args: Any, **kwargs: Any) -> UdpRtpReceiverTransport:
        transport = await real_open(*args, **kwargs)
        opened.append(transport)
        return transport

    monkeypatch.setattr(UdpRtpReceiverTransport, "open", spy)
    return opened


# --- sharing ---------------------------------------------------------------------------------


async def test_two_concurrent_viewers_share_one_invite_and_one_stream(rig: Rig) -> None:
    (first, viewer_1), (second, viewer_2) = await asyncio.gather(rig.live.watch(CHANNEL), rig.live.watch(CHANNEL))

    assert first is second is rig.live.streams[CHANNEL]
    assert viewer_1 != viewer_2 and first.fanout.consumer_count == 2
    assert rig.live.invites_sent == 1
    (invite,) = rig.net.requests("INVITE")
    assert request_uri_user(invite) == CHANNEL and invite.from_.uri.user == GW_ID
    assert len(rig.camera.of_type(MediaRequested)) == 1

    third, _ = await rig.live.watch(CHANNEL)  # a late viewer joins the running stream
    assert third is first and rig.live.invites_sent == 1 and len(rig.net.requests("INVITE")) == 1


async def test_the_last_viewer_leaving_starts_the_linger_then_a_bye_reaches_the_camera(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_module, "LINGER", 0.2)
    (stream, viewer_1), (_, viewer_2) = await asyncio.gather(rig.live.watch(CHANNEL), rig.live.watch(CHANNEL))

    rig.live.leave(CHANNEL, viewer_1)
    assert stream.linger is None, "a viewer still watches"
    rig.live.leave(CHANNEL, viewer_2)
    left_at = rig.now
    assert stream.linger is not None and rig.live.streams[CHANNEL] is stream
    assert rig.net.requests("BYE") == []

    assert await wait_for(lambda: bool(rig.camera.of_type(MediaStopped)), 5)
    assert rig.now - left_at >= 0.15, "the BYE waits for the linger"
    assert rig.camera.of_type(MediaStopped)[0].reason == "bye" and rig.camera.calls.active == 0
    assert [b.from_.uri.user for b in rig.net.requests("BYE", src="gw")] == [GW_ID]
    assert CHANNEL not in rig.live.streams and stream.transport is not None and stream.transport.closed


async def test_a_viewer_returning_during_the_linger_keeps_the_stream_without_a_new_invite(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live_module, "LINGER", 0.2)
    stream, viewer = await rig.live.watch(CHANNEL)
    rig.live.leave(CHANNEL, viewer)
    linger = stream.linger
    assert linger is not None

    again, _ = await rig.live.watch(CHANNEL)

    assert again is stream and stream.linger is None and linger.cancelled()
    assert rig.live.invites_sent == 1 and rig.net.requests("BYE") == []


# --- the camera's answers -------------------------------------------------------------------------


async def test_a_camera_refusing_fails_every_viewer_with_live_error_and_leaves_no_stream(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.camera.answer = 486
    opened = rtp_ports(monkeypatch)

    results = await asyncio.gather(rig.live.watch(CHANNEL), rig.live.watch(CHANNEL), return_exceptions=True)

    assert all(isinstance(r, LiveError) and "Busy Here" in str(r) for r in results), results
    assert await wait_for(lambda: not rig.live.streams, 2)
    assert len(opened) == 1 and opened[0].closed, "the RTP port is released"
    assert rig.live.invites_sent == 1 and gauges(rig.live) == {"kgw_streams_active": 0, "kgw_stream_viewers": 0}

    rig.camera.answer = 200  # nothing stale is left: the next viewer gets a fresh INVITE
    await rig.live.watch(CHANNEL)
    assert rig.live.invites_sent == 2 and len(opened) == 2


async def test_a_camera_that_never_answers_fails_the_viewer_after_the_play_timeout(rig: Rig) -> None:
    rig.live.play_timeout = 0.3
    rig.camera.answer = None

    with pytest.raises(LiveError, match="play timeout"):
        await rig.live.watch(CHANNEL)

    assert await wait_for(lambda: not rig.live.streams, 2)
    assert len(rig.camera.waiting) == 1


async def test_a_200_arriving_after_the_play_timeout_is_acked_and_hung_up(rig: Rig) -> None:
    rig.live.play_timeout = 0.3
    rig.camera.answer = None
    with pytest.raises(LiveError):
        await rig.live.watch(CHANNEL)
    assert await wait_for(lambda: not rig.live.streams, 2)

    rig.camera.answer_waiting(200, rig.now)  # the camera answers at last

    # RFC 3261 §15 (PlaySession: "a 2xx that arrives after we gave up is ACKed and hung up at once")
    assert await wait_for(lambda: rig.camera.calls.active == 0, 2)
    assert rig.net.requests("BYE", src="gw")
    assert not [e for e in rig.tail.events if isinstance(e, ResponseReceived)], "the session's 200 is the service's"


async def test_the_cameras_bye_ends_the_stream_for_every_viewer(rig: Rig) -> None:
    (stream, viewer_1), (_, viewer_2) = await asyncio.gather(rig.live.watch(CHANNEL), rig.live.watch(CHANNEL))

    rig.camera.hang_up(rig.now)

    assert await wait_for(lambda: CHANNEL not in rig.live.streams, 5)
    assert stream.wakeup.is_set(), "viewers waiting for media wake up to see it ended"
    assert stream.transport is not None and stream.transport.closed
    await rig.net.settle()
    answers = [d.message for d in rig.net.wire if d.src == "gw" and isinstance(d.message, SipResponse)]
    assert [(a.status, a.cseq.method) for a in answers] == [(200, "BYE")]

    rig.live.leave(CHANNEL, viewer_1)  # viewers leaving afterwards change nothing and send nothing
    rig.live.leave(CHANNEL, viewer_2)
    await rig.net.settle()
    assert rig.net.requests("BYE", src="gw") == [] and not rig.live.streams


# --- refusals before anything is sent --------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel_id", "why"),
    [(UNKNOWN, "unknown channel"), (ASLEEP_CHANNEL, "is not registered")],
    ids=["unknown-channel", "unregistered-device"],
)
async def test_a_channel_that_cannot_be_reached_gives_live_error_without_sending_anything(
    rig: Rig, channel_id: str, why: str
) -> None:
    with pytest.raises(LiveError, match=why):
        await rig.live.watch(channel_id)

    await rig.net.settle()
    assert rig.net.wire == [] and rig.live.invites_sent == 0 and not rig.live.streams


# --- routing -------------------------------------------------------------------------------------------


async def test_route_leaves_other_events_to_the_next_handler(rig: Rig) -> None:
    stream, _ = await rig.live.watch(CHANNEL)  # a running play session that could mistake them for its own
    assert stream.session.invite is not None
    keepalive = build_message(
        from_id=NVR,
        from_domain=DOMAIN,
        from_tag=rig.camera_endpoint.new_tag(),
        to_id=GW_ID,
        to_domain=DOMAIN,
        request_uri=sip_uri(GW_ID, GW_HOST, GW_PORT),
        call_id=rig.camera_endpoint.new_call_id(),
        cseq=1,
        body=serialize(Keepalive(sn=1, device_id=NVR)),
    )
    rig.camera_endpoint.send_request(keepalive, GW_PEER, rig.now, context="keepalive")
    query = build_message(
        from_id=GW_ID,
        from_domain=DOMAIN,
        from_tag="q1",
        to_id=NVR,
        to_domain=DOMAIN,
        request_uri=sip_uri(NVR, CAM_HOST, CAM_PORT),
        call_id="query-1@10.0.0.1",
        cseq=1,
        body=b"<?xml version='1.0'?><Query/>",
    )
    rig.live.sip.endpoint.send_request(query, udp(CAM_HOST, CAM_PORT), rig.now, context="device-access query")
    await rig.net.settle()

    taken = rig.tail.events
    assert any(isinstance(e, RequestReceived) and e.request.method == "MESSAGE" for e in taken)
    assert any(isinstance(e, ResponseReceived) and e.context == "device-access query" for e in taken)
    # Time-outs of others' requests, and requests of an unknown call, are not the service's either.
    timed_out = TransactionTimedOut("z9hG4bKother|MESSAGE", query, udp(CAM_HOST, CAM_PORT), "device-access query")
    assert rig.live.route(timed_out, rig.now) is False
    stray_bye = SipRequest(headers=keepalive.headers.copy(), body=b"", method="BYE", uri=keepalive.uri)
    assert rig.live.route(RequestReceived(stray_bye, udp(CAM_HOST, CAM_PORT), "t1"), rig.now) is False
    assert rig.live.streams[CHANNEL] is stream and rig.net.requests("BYE") == []


# --- metrics -----------------------------------------------------------------------------------------


async def test_collect_reports_streams_and_viewers_as_streams_holds_them(rig: Rig) -> None:
    def consistent() -> dict[str, float]:
        values = gauges(rig.live)
        assert values["kgw_streams_active"] == len(rig.live.streams)
        assert values["kgw_stream_viewers"] == sum(s.fanout.consumer_count for s in rig.live.streams.values())
        return values

    assert consistent() == {"kgw_streams_active": 0, "kgw_stream_viewers": 0}
    (_, a1), (_, a2), (_, b1) = await asyncio.gather(
        rig.live.watch(CHANNEL), rig.live.watch(CHANNEL), rig.live.watch(OTHER)
    )
    assert consistent() == {"kgw_streams_active": 2, "kgw_stream_viewers": 3}
    rig.live.leave(CHANNEL, a1)
    assert consistent() == {"kgw_streams_active": 2, "kgw_stream_viewers": 2}
    rig.live.leave(OTHER, b1)  # lingering: still a stream, no viewer
    assert consistent() == {"kgw_streams_active": 2, "kgw_stream_viewers": 1}
    rig.live.close(OTHER, "test")
    assert consistent() == {"kgw_streams_active": 1, "kgw_stream_viewers": 1}
    assert rig.live.invites_sent == 2 and a2
