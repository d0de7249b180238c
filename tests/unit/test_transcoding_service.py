"""TranscodeService (gateway/transcoding.py) over a fake live service and the real H.265 capture."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.gb28181.play import PlayState
from gateway.media.ps import AccessUnit, PsDemuxer, StreamType
from gateway.media.relay import StreamFanout
from gateway.transcoding import TranscodeLimitReached, TranscodeService
from tests.conftest import wait_for

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ps" / "zlm_h265_640x360_idr50.ps"


@dataclass
class _Session:
    state: PlayState = PlayState.STREAMING


@dataclass(eq=False)
class _Stream:
    channel_id: str
    fanout: StreamFanout
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    session: _Session = field(default_factory=_Session)
    stream_number: int = 0

    @property
    def key(self) -> str:
        return self.channel_id


class _Live:
    """The two things a transcode asks of the live service, recorded."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.left: list[tuple[str, str]] = []

    def leave(self, channel_id: str, consumer: str) -> None:
        self.left.append((channel_id, consumer))


def _units() -> list[AccessUnit]:
    demuxer = PsDemuxer()
    return demuxer.feed(FIXTURE.read_bytes()) + demuxer.flush()


def _camera(channel_id: str) -> tuple[_Stream, str]:
    stream = _Stream(channel_id, StreamFanout(channel_id))
    stream.fanout.attach("viewer-1", 0.0)
    return stream, "viewer-1"


def _publish(stream: _Stream, units: list[AccessUnit]) -> None:
    for unit in units:
        stream.fanout.publish(unit, 0.0)
    stream.wakeup.set()


async def test_one_transcode_serves_every_viewer_and_stops_after_the_last() -> None:
    live = _Live()
    service = TranscodeService(live, max_transcodes=2, linger=0.05)
    stream, viewer = _camera("c1")
    first, a = service.join(stream, viewer)
    _publish(stream, _units()[:20])
    assert await wait_for(lambda: first.stats.frames_out == 20, timeout=30)
    out = first.fanout.pull(a)
    assert len(out) == 20 and out[0].keyframe and all(u.stream_type is StreamType.H264 for u in out)

    second_viewer = "viewer-2"
    stream.fanout.attach(second_viewer, 0.0)
    same, b = service.join(stream, second_viewer)
    assert same is first and len(service.transcodes) == 1
    assert ("c1", second_viewer) in live.left, "the second viewer's own place on the camera is given back"
    assert first.fanout.pull(b)[0].keyframe, "a joiner starts at the cached key frame"
    _publish(stream, _units()[20:22])
    assert await wait_for(lambda: first.stats.keyframes_forced == 1, timeout=30), "and a fresh one comes for it"

    service.leave("c1", a)
    service.leave("c1", b)
    service.leave("c1", b)  # idempotent
    assert await wait_for(lambda: not service.transcodes, timeout=10)
    assert ("c1", viewer) in live.left, "the transcode gave its place on the camera back"
    assert await wait_for(lambda: all(t.done() for t in first.tasks), timeout=5)
    assert service.totals().frames_out >= 22


async def test_limit_refuses_then_an_idle_transcode_is_given_up_for_a_new_camera() -> None:
    live = _Live()
    service = TranscodeService(live, max_transcodes=1, linger=60.0)
    stream1, viewer1 = _camera("c1")
    t1, a = service.join(stream1, viewer1)
    stream2, viewer2 = _camera("c2")
    with pytest.raises(TranscodeLimitReached, match="转码路数已满"):
        service.join(stream2, viewer2)
    assert ("c2", viewer2) in live.left and service.refused == 1
    service.leave("c1", a)  # c1 is unwatched, lingering
    stream2.fanout.attach("viewer-3", 0.0)
    t2, _ = service.join(stream2, "viewer-3")
    assert t1.stopped and list(service.transcodes) == [("c2", "main")]
    service.close()
    assert t2.stopped and not service.transcodes


async def test_viewers_are_let_go_when_the_camera_stream_ends() -> None:
    live = _Live()
    service = TranscodeService(live, max_transcodes=1)
    stream, viewer = _camera("c1")
    transcode, consumer = service.join(stream, viewer)
    stream.session.state = PlayState.CLOSED
    stream.wakeup.set()
    assert await wait_for(lambda: transcode.stopped, timeout=10)
    assert consumer not in transcode.fanout.consumers and not service.transcodes
    stream2, viewer2 = _camera("c1")  # the camera's stream opened again: a new transcode
    fresh, _ = service.join(stream2, viewer2)
    assert fresh is not transcode and fresh.source is stream2
    service.close()


def test_max_transcodes_setting_flag_and_simulator_flag(tmp_path: Path) -> None:
    from gateway.cli import build_parser, fleet_options_from_args, gateway_config_from_args
    from gateway.config import load_config
    from gateway.errors import ConfigError

    assert load_config(None).max_transcodes == 4
    path = tmp_path / "kgw.toml"
    path.write_text("[gateway]\nmax_transcodes = 2\n")
    assert load_config(path).max_transcodes == 2
    args = build_parser().parse_args(["gateway", "--config", str(path), "--max-transcodes", "6"])
    assert gateway_config_from_args(args).max_transcodes == 6, "the flag wins over the file"
    with pytest.raises(ConfigError, match="max_transcodes"):
        load_config(None, max_transcodes=-1)
    sim = build_parser().parse_args(["simulate", "--hevc-share", "0.5"])
    assert fleet_options_from_args(sim).hevc_share == 0.5


def test_simulated_h265_cameras_are_a_stable_share() -> None:
    from simulators.hevc import is_hevc_camera, profile_for_camera
    from simulators.video import VideoProfile

    ids = [f"120101001113100{n:05d}" for n in range(2000)]
    half = [i for i in ids if is_hevc_camera(i, 0.5)]
    assert 900 < len(half) < 1100 and half == [i for i in ids if is_hevc_camera(i, 0.5)]
    assert not any(is_hevc_camera(i, 0.0) for i in ids) and all(is_hevc_camera(i, 1.0) for i in ids)
    assert set(i for i in ids if is_hevc_camera(i, 0.1)) <= set(half), "a larger share keeps the smaller one's cameras"
    assert profile_for_camera(VideoProfile(), half[0], 0.5).codec == "hevc"
    assert profile_for_camera(VideoProfile(), half[0], 0.0).codec == "h264"
