"""LiveService with sub-streams and uplink budgets, on the in-memory SIP network (issue 11).

One INVITE per (channel, stream); the sub-stream's offer spelled per device; a camera that
refuses the sub-stream or answers it with main falls back to main, remembered; a main
stream over the kindergarten's budget is taken on the sub-stream, then refused with a
message naming what uses the uplink.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from gateway.gb28181.device_calls import MediaRequested
from gateway.gb28181.sdp import parse_sdp
from gateway.gb28181.sip.endpoint import SipEndpoint
from gateway.gb28181.sip.idsource import SeededIds
from gateway.gb28181.stream_number import MAIN, SUB, StreamStyle
from gateway.live import LiveService, LiveUplinkExceeded, stream_key
from gateway.substreams import StreamChoice, StreamPlanner
from gateway.uplink import UplinkBudget
from tests.unit.service_fakes import Camera, FakeSip, Locator, gateway_endpoint
from tests.unit.sip_memnet import MemNet, Tail, udp

NVR = "12010100001180000001"
CH1 = "12010100001310000001"
CH2 = "12010100001310000002"
CH3 = "12010100001310000003"
CAM_HOST, CAM_PORT = "10.0.0.2", 5061
KG = "120101000021600001"


class SubCamera(Camera):
    """A camera that answers sub-stream offers as ``sub`` says: ``"ok"``, ``"refuse"`` (488) or ``"main"``."""

    sub = "ok"

    def _answer(self, requested: MediaRequested, status: int, now: float) -> None:
        asked = requested.spec.stream_number
        if asked and self.sub == "refuse":
            self.calls.reject(requested.call_id, 488, now)
        elif asked and self.sub == "main":
            self.calls.accept(requested.call_id, self.endpoint.local_host, 40000, now, stream_number=0)
        else:
            super()._answer(requested, status, now)


class OneKindergarten(StreamPlanner):
    """Every channel in KG."""

    def kindergarten_of(self, channel_id: str) -> str | None:
        return KG


@dataclass
class Rig:
    net: MemNet
    live: LiveService
    camera: SubCamera
    planner: StreamPlanner
    uplink: UplinkBudget

    def offers(self) -> list[bytes]:
        return [r.body for r in self.net.requests("INVITE")]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    net = MemNet()
    gw = gateway_endpoint()
    sip = FakeSip(gw, peers={NVR: udp(CAM_HOST, CAM_PORT)})
    planner = OneKindergarten()
    uplink = UplinkBudget(5000, main_kbps=4000, sub_kbps=768)
    live = LiveService(
        sip, Locator({CH1: NVR, CH2: NVR, CH3: NVR}), play_timeout=2.0, rtp_timeout=60.0, planner=planner, uplink=uplink
    )
    net.add("gw", gw, [live, Tail(gw)])
    camera_endpoint = SipEndpoint(SeededIds("cam"), local_host=CAM_HOST, local_port=CAM_PORT)
    camera = SubCamera(camera_endpoint)
    net.add("camera", camera_endpoint, [camera], unclaimed_status=200)
    yield Rig(net, live, camera, planner, uplink)
    for key in list(live.streams):
        live.close(key, "test over")
    await net.settle()
    net.close()


async def test_one_invite_per_channel_and_stream_with_two_viewers_each(rig: Rig) -> None:
    rig.uplink.default_kbps = 0  # no limit here
    (main_a, _), (main_b, _), (sub_a, _), (sub_b, _) = await asyncio.gather(
        rig.live.watch(CH1),
        rig.live.watch(CH1),
        rig.live.watch(CH1, stream=SUB),
        rig.live.watch(CH1, stream=StreamChoice.SUB),
    )

    assert main_a is main_b is rig.live.streams[CH1] and main_a.stream_number == MAIN
    assert sub_a is sub_b is rig.live.streams[stream_key(CH1, SUB)] and sub_a.stream_number == SUB
    assert rig.live.invites_sent == 2 and len(rig.offers()) == 2
    sub_offer = sub_a.session.invite.body if sub_a.session.invite else b""
    main_offer = main_a.session.invite.body if main_a.session.invite else b""
    assert b"a=streamnumber:1\r\n" in sub_offer
    assert b"stream" not in main_offer.replace(b"streamnumber", b"?"), "a main offer carries no stream attribute"
    assert rig.live.streams_of(CH1) == [main_a, sub_a]
    auto, _ = await rig.live.watch(CH1, stream=StreamChoice.AUTO)
    assert auto is main_a and rig.live.invites_sent == 2


async def test_the_offer_uses_the_devices_spelling(rig: Rig) -> None:
    rig.uplink.default_kbps = 0
    rig.planner.style_overrides = {NVR: StreamStyle.STREAMPROFILE}

    stream, _ = await rig.live.watch(CH2, stream=SUB)

    (offer,) = rig.offers()
    assert b"a=streamprofile:1\r\n" in offer and b"a=streamnumber" not in offer
    assert parse_sdp(offer).stream_number == 1 and stream.stream_number == SUB


async def test_a_camera_refusing_the_sub_stream_gets_main_and_is_not_asked_again(rig: Rig) -> None:
    rig.uplink.default_kbps = 0
    rig.camera.sub = "refuse"

    stream, _ = await rig.live.watch(CH1, stream=SUB)

    assert stream.stream_number == MAIN and stream.key == CH1
    assert "488" in rig.planner.no_sub[CH1]
    assert rig.live.invites_sent == 2  # the refused sub, then main
    again, _ = await rig.live.watch(CH1, stream=SUB)
    assert again is stream and rig.live.invites_sent == 2, "no second sub-stream INVITE"


async def test_a_camera_answering_the_sub_offer_with_main_is_filed_as_main(rig: Rig) -> None:
    rig.uplink.default_kbps = 0
    rig.camera.sub = "main"

    stream, _ = await rig.live.watch(CH1, stream=SUB)

    assert stream.stream_number == MAIN and stream.key == CH1 and rig.live.streams[CH1] is stream
    assert stream_key(CH1, SUB) not in rig.live.streams and CH1 in rig.planner.no_sub
    main, _ = await rig.live.watch(CH1)
    assert main is stream and rig.live.invites_sent == 1


async def test_over_budget_main_becomes_sub_then_refused_naming_what_uses_the_uplink(rig: Rig) -> None:
    first, _ = await rig.live.watch(CH1)  # 4000 of 5000
    second, _ = await rig.live.watch(CH2)  # main would be 8000: the sub (4768) fits

    assert first.stream_number == MAIN and second.stream_number == SUB
    assert rig.uplink.used(KG) == 4768

    with pytest.raises(LiveUplinkExceeded) as refused:
        await rig.live.watch(CH3, stream=SUB)  # 4768 + 768 > 5000
    text = str(refused.value)
    assert CH1 in text and CH2 in text and "上行带宽" in text and "uplink budget" in text
    assert refused.value.used_kbps == 4768 and refused.value.budget_kbps == 5000
    assert rig.live.invites_sent == 2

    # A stream that runs costs nothing more: CH2's main viewer over budget joins its sub.
    joined, _ = await rig.live.watch(CH2)
    assert joined is second and rig.live.invites_sent == 2

    rig.live.close(first.key, "test")
    assert rig.uplink.used(KG) == 768, "a closed stream gives its share back"
    third, _ = await rig.live.watch(CH3)
    assert third.stream_number == MAIN and rig.uplink.used(KG) == 4768
