"""UpperRelay: upper platforms' live INVITEs, admitted by policy and served from a (fake) live source.

The gateway's node routes ``[cascade host, relay, tail]``; the municipal and
police uppers are :class:`Upper` fakes that register us and call with a real
:class:`PlaySession`. The live source is :class:`FakeLive`, which counts the
viewers the relay joins and leaves. The relay's RTP sender is a real UDP socket
on loopback; nothing is sent on it unless a test publishes an access unit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest
from prometheus_client import CollectorRegistry

from gateway.cascade.relay import UpperRelay
from gateway.cascade.upper import CascadeHost, UpperLink
from gateway.gb28181.play import PlayEnded, PlayFailed, PlayStarted
from gateway.gb28181.sdp import Direction, SdpSession, SessionType, parse_sdp
from gateway.gb28181.sip.message import SipResponse
from gateway.live import LiveError, LiveUplinkExceeded
from gateway.media.ps import AccessUnit, StreamType
from gateway.media.rtp import RtpPacket
from gateway.uplink import UplinkBudget
from tests.conftest import wait_for
from tests.unit.service_city import CLASSROOM, ENTRANCE, NAP_ROOM, PERIMETER, add_upper, city_directory, upper_spec
from tests.unit.service_fakes import FakeLive, Upper, UpperCall, gateway_endpoint
from tests.unit.sip_memnet import DOMAIN, GW_ID, MemNet, Tail

UNKNOWN = "12010100111310009999"


@dataclass
class Rig:
    net: MemNet
    host: CascadeHost
    relay: UpperRelay
    live: FakeLive
    municipal: Upper
    police: Upper
    tail: Tail

    @property
    def now(self) -> float:
        return self.net.loop.time()

    async def call(self, upper: Upper, channel_id: str, **kw: object) -> tuple[UpperCall, object]:
        """Place a call and wait for its final answer (PlayStarted or PlayFailed)."""
        call = upper.call(channel_id, self.now, **kw)  # type: ignore[arg-type]
        return call, await asyncio.wait_for(call.answered, 5)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    net = MemNet()
    gw = gateway_endpoint()
    host = CascadeHost(gw)
    specs = [upper_spec("municipal"), upper_spec("police")]
    for spec in specs:
        host.add(UpperLink(spec.link, GW_ID, DOMAIN, gw, catalog=list, channel_status=lambda _c: None))
    live = FakeLive()
    directory = city_directory()
    relay = UpperRelay(host.links, {s.link.name: s.policy for s in specs}, live=live, channels=directory.channels)
    tail = Tail(gw)
    net.add("gw", gw, [host, relay, tail])
    municipal, police = add_upper(net, "municipal"), add_upper(net, "police")
    host.start_all(net.loop.time())
    assert await wait_for(lambda: all(link.registered for link in host.links), 5)
    yield Rig(net, host, relay, live, municipal, police, tail)
    relay.close()
    host.stop_all(net.loop.time(), unregister=False)
    await net.settle()
    net.close()


def failed(answer: object, status: int) -> bool:
    return isinstance(answer, PlayFailed) and answer.status == status


def answer_sdp(rig: Rig) -> SdpSession:
    """The SDP of the gateway's (only) 200 OK to an INVITE."""
    (ok,) = [
        d.message
        for d in rig.net.wire
        if d.src == "gw" and isinstance(d.message, SipResponse) and d.message.status == 200 and d.message.body
    ]
    return parse_sdp(ok.body)


# --- refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channel_id", [CLASSROOM, NAP_ROOM])
async def test_police_asking_for_an_indoor_camera_get_403_and_the_live_source_hears_nothing(
    rig: Rig, channel_id: str
) -> None:
    _, answer = await rig.call(rig.police, channel_id)

    assert failed(answer, 403)
    assert rig.live.watched == [] and rig.relay.counters["forbidden"] == 1 and rig.relay.status() == []


async def test_an_unknown_channel_gets_404(rig: Rig) -> None:
    _, answer = await rig.call(rig.municipal, UNKNOWN)

    assert failed(answer, 404) and rig.live.watched == [] and rig.relay.counters["not_found"] == 1


async def test_an_upper_we_are_not_registered_with_gets_403(rig: Rig) -> None:
    rig.host.link("municipal").stop(rig.now, unregister=False)

    _, answer = await rig.call(rig.municipal, ENTRANCE)  # a channel its policy shares

    assert failed(answer, 403) and rig.live.watched == [] and rig.relay.counters["forbidden"] == 1


async def test_calls_over_the_limit_per_upper_get_486_until_one_ends(rig: Rig) -> None:
    rig.relay.max_calls_per_upper = 1
    first, answer = await rig.call(rig.municipal, ENTRANCE)
    assert isinstance(answer, PlayStarted)

    _, busy = await rig.call(rig.municipal, PERIMETER)
    _, other_upper = await rig.call(rig.police, PERIMETER)  # the limit is per upper

    assert failed(busy, 486) and isinstance(other_upper, PlayStarted)
    assert [c for c, _ in rig.live.watched] == [ENTRANCE, PERIMETER]
    rig.municipal.hang_up(first, rig.now)
    await asyncio.wait_for(first.ended, 5)
    _, again = await rig.call(rig.municipal, PERIMETER)
    assert isinstance(again, PlayStarted) and rig.relay.counters["busy"] == 1


@pytest.mark.parametrize(
    "offer",
    [
        lambda o: replace(o, session_type=SessionType.PLAYBACK, uri=f"{ENTRANCE}:0", start_time=1, end_time=2),
        lambda o: replace(o, ssrc=None),
    ],
    ids=["playback", "no-y"],
)
async def test_a_playback_offer_or_an_offer_without_y_gets_488(rig: Rig, offer: object) -> None:
    _, answer = await rig.call(rig.municipal, ENTRANCE, offer=offer)

    assert failed(answer, 488) and rig.live.watched == [] and rig.relay.counters["bad_offer"] == 1


async def test_a_live_source_that_cannot_open_the_channel_gives_480(rig: Rig) -> None:
    rig.live.fail[ENTRANCE] = LiveError("camera offline")

    _, answer = await rig.call(rig.municipal, ENTRANCE)

    assert failed(answer, 480) and rig.live.viewers == 0 and rig.relay.counters["unavailable"] == 1


async def test_a_channel_over_its_kindergartens_uplink_budget_gives_486(rig: Rig) -> None:
    budget = UplinkBudget(1000)
    budget.reserve("K1", 900, "live 12010100001310000009 main")
    rig.live.fail[ENTRANCE] = budget.exceeded("K1", 768, error_type=LiveUplinkExceeded)

    _, answer = await rig.call(rig.municipal, ENTRANCE)

    assert failed(answer, 486) and rig.live.viewers == 0


async def test_the_uppers_stream_number_picks_the_stream_and_the_answer_states_what_is_sent(rig: Rig) -> None:
    _, answer = await rig.call(rig.municipal, ENTRANCE, offer=lambda o: replace(o, stream_number=1))

    assert isinstance(answer, PlayStarted) and rig.live.asked_streams == [1]
    assert answer_sdp(rig).stream_number == 0, "the fake live source serves main: the answer says so"
    _, plain = await rig.call(rig.municipal, PERIMETER)
    assert isinstance(plain, PlayStarted) and rig.live.asked_streams == [1, 0]
    assert plain.spec.stream_number is None, "no stream asked, none stated"


# --- accepted calls -----------------------------------------------------------------------------------------


async def test_an_accepted_call_joins_once_answers_with_the_uppers_ssrc_and_leaves_on_its_bye(rig: Rig) -> None:
    call, answer = await rig.call(rig.municipal, ENTRANCE, ssrc="0100000042")

    assert isinstance(answer, PlayStarted) and answer.spec.ssrc_text == "0100000042"
    sdp = answer_sdp(rig)
    assert (sdp.ssrc, sdp.direction, sdp.rtpmap) == ("0100000042", Direction.SENDONLY, {96: "PS/90000"})
    assert len(rig.live.watched) == 1 and rig.live.viewers == 1
    assert await wait_for(lambda: rig.relay.status()[0]["streaming"], 5), "the ACK starts the media"
    (row,) = rig.relay.status()
    assert (row["upper"], row["channel_id"], row["ssrc"]) == ("municipal", ENTRANCE, "0100000042")

    rig.municipal.hang_up(call, rig.now)

    assert await asyncio.wait_for(call.ended, 5) == PlayEnded("stopped")
    assert await wait_for(lambda: rig.live.left == rig.live.watched, 5)
    assert rig.relay.status() == [] and rig.relay.counters["calls_ended"] == 1
    assert len(rig.live.watched) == 1


async def test_relayed_media_carries_the_uppers_ssrc(rig: Rig) -> None:
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Receiver(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            received.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        _, answer = await rig.call(rig.municipal, ENTRANCE, media_port=port, ssrc="0100000077")
        assert isinstance(answer, PlayStarted)
        assert await wait_for(lambda: rig.relay.status()[0]["streaming"], 5)

        stream = rig.live.streams[ENTRANCE]
        nal = b"\x00\x00\x00\x01\x65\x88" + b"\x11" * 200
        stream.fanout.publish(AccessUnit(StreamType.H264, 0xE0, 3600, 3600, nal, True), loop.time())
        stream.wakeup.set()

        packet = RtpPacket.parse(await asyncio.wait_for(received.get(), 5))
        assert packet.ssrc == 100000077 and packet.payload_type == 96
    finally:
        transport.close()


async def test_upper_offline_hangs_up_its_calls_and_releases_their_viewers(rig: Rig) -> None:
    (m1, _), (m2, _), (p1, _) = [
        await rig.call(upper, channel)
        for upper, channel in ((rig.municipal, ENTRANCE), (rig.municipal, PERIMETER), (rig.police, ENTRANCE))
    ]
    assert await wait_for(lambda: all(row["streaming"] for row in rig.relay.status()), 5)
    municipal_viewers = rig.live.watched[:2]

    assert rig.relay.upper_offline("municipal") == 2

    assert await asyncio.wait_for(m1.ended, 5) == await asyncio.wait_for(m2.ended, 5) == PlayEnded("device_bye")
    assert rig.live.left == municipal_viewers
    assert [row["upper"] for row in rig.relay.status()] == ["police"] and not p1.ended.done()
    await rig.net.settle()
    assert not [e for e in rig.tail.events if getattr(e, "context", None) is not None], (
        "the relay takes its BYEs' answers"
    )


async def test_the_cameras_stream_ending_hangs_up_the_upper(rig: Rig) -> None:
    call, _ = await rig.call(rig.municipal, ENTRANCE)
    assert await wait_for(lambda: rig.relay.status()[0]["streaming"], 5)

    rig.live.end(ENTRANCE)  # what LiveService.close does when the camera sends BYE

    assert await asyncio.wait_for(call.ended, 5) == PlayEnded("device_bye")
    assert await wait_for(lambda: rig.live.viewers == 0 and rig.relay.status() == [], 5)


@pytest.mark.parametrize("how", ["cancel", "upper_offline"])
async def test_a_call_ended_while_the_stream_opens_still_releases_the_viewer(rig: Rig, how: str) -> None:
    rig.live.gate = asyncio.Event()  # the camera has not answered the gateway yet
    call = rig.municipal.call(ENTRANCE, rig.now)
    assert await wait_for(lambda: len(rig.relay.status()) == 1, 5)

    if how == "cancel":
        rig.municipal.hang_up(call, rig.now)
    else:
        assert rig.relay.upper_offline("municipal") == 1
    assert await wait_for(lambda: rig.relay.status() == [], 5)
    final = 487 if how == "cancel" else 480
    assert await wait_for(lambda: any(getattr(d.message, "status", 0) == final for d in rig.net.wire), 5)
    rig.live.gate.set()

    assert await wait_for(lambda: len(rig.live.watched) == 1 and rig.live.viewers == 0, 5)
    assert rig.relay.counters["accepted"] == 0


# --- counting ---------------------------------------------------------------------------------------------


async def test_counters_and_collect_agree(rig: Rig) -> None:
    rig.relay.max_calls_per_upper = 1
    await rig.call(rig.municipal, ENTRANCE)  # accepted
    await rig.call(rig.municipal, PERIMETER)  # busy
    await rig.call(rig.police, CLASSROOM)  # forbidden
    await rig.call(rig.police, UNKNOWN)  # not_found
    await rig.call(rig.police, ENTRANCE, offer=lambda o: replace(o, ssrc=None))  # bad_offer
    registry = CollectorRegistry()
    registry.register(rig.relay)  # type: ignore[arg-type]

    def total(result: str) -> float:
        return sum(
            registry.get_sample_value("kgw_upper_calls_total", {"platform": p, "result": result}) or 0.0
            for p in ("municipal", "police")
        )

    expected = {"accepted": 1, "busy": 1, "forbidden": 1, "not_found": 1, "bad_offer": 1, "unavailable": 0}
    assert {result: rig.relay.counters[result] for result in expected} == expected
    assert {result: total(result) for result in expected} == expected
    assert registry.get_sample_value("kgw_upper_calls_total", {"platform": "police", "result": "forbidden"}) == 1
