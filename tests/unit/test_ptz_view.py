"""The simulated PTZ picture (simulators/ptz_view.py): views follow the pose, the marker survives H.264."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest

from gateway.gb28181.device_ptz import PtzCameras, PtzPose
from simulators.city import SimChannel
from simulators.ptz_view import ViewClips, ViewFollower, ViewKey, encode_view, ptz_type_for, read_marker, render_view
from simulators.video import VideoProfile

PROFILE = VideoProfile(width=320, height=180, fps=10, seconds=1.0)


def _decode(units: list[bytes]) -> list[np.ndarray]:
    decoder = av.CodecContext.create("h264", "r")
    frames = []
    for data in units:
        frames += [f.to_ndarray(format="bgr24") for f in decoder.decode(av.Packet(data))]
    return frames


@pytest.mark.parametrize("key", [ViewKey(8, 4, 0), ViewKey(0, 0, 12), ViewKey(16, 8, 5), ViewKey(3, 7, 1)])
def test_the_marker_reads_back_after_h264(key: ViewKey) -> None:
    clip = encode_view("幼儿园", "大门口", key, PROFILE, font_path=None)
    assert clip.frames[0][2], "a view clip starts on a key frame"
    frames = _decode([unit.data for unit in clip.access_units])
    assert len(frames) == PROFILE.fps
    assert {read_marker(frame) for frame in frames} == {key}


def test_views_differ_and_poses_quantise() -> None:
    a = render_view("k", "c", ViewKey(8, 4, 0), PROFILE, None)
    b = render_view("k", "c", ViewKey(9, 4, 0), PROFILE, None)
    assert float(np.abs(a.astype(int) - b.astype(int))[40:].mean()) > 1.0  # the picture itself moved
    assert ViewKey.of(PtzPose()) == ViewKey(8, 4, 0)
    assert ViewKey.of(PtzPose(1.0, -1.0, 4.0)) == ViewKey(16, 0, 12)
    for key in (ViewKey(0, 0, 0), ViewKey(5, 3, 7), ViewKey(16, 8, 12)):
        assert ViewKey.of(key.pose()) == key
    assert read_marker(np.zeros((180, 320, 3), np.uint8)) is None


def test_ptz_types_of_the_plan() -> None:
    def channel(area: str, kind: str = "camera") -> SimChannel:
        return SimChannel("1", "x", area, 131, kind, 0.0, 0.0, "")

    assert ptz_type_for(channel("entrance")) == 1 and ptz_type_for(channel("perimeter")) == 1
    assert ptz_type_for(channel("classroom")) == 3 and ptz_type_for(channel("other", "alarm")) is None


async def test_the_follower_switches_with_continuous_timestamps() -> None:
    cameras = PtzCameras(["cam"])
    now = [0.0]
    clips = ViewClips(font_path=None)
    follower = ViewFollower(cameras, "cam", "k", "c", PROFILE, clips)
    first = await asyncio.to_thread(follower.initial, 0.0)
    replayer = follower.replayer(first, lambda: now[0])
    sent = list(replayer.frames_due(0.45))
    assert len(sent) == 5
    cameras.channels["cam"].pose = PtzPose(pan=0.5)  # the camera moved (as a preset call would do)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    switched = []
    while not switched and loop.time() < deadline:
        frames = list(replayer.frames_due(replayer.next_due_time()))
        sent += frames
        switched = [f for f in frames if f.keyframe and follower.shown == ViewKey.of(PtzPose(pan=0.5))]
        await asyncio.sleep(0.01)
    assert switched and follower.switches == 1 and clips.encoded == 2
    stamps = [f.timestamp for f in sent]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    steps = {b - a for a, b in zip(stamps, stamps[1:], strict=False)}
    assert steps == {9000}, "one frame interval between every two frames, across the switch"
