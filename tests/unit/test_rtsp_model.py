"""RTSP camera values (gateway/rtsp/model.py, units.py): IDs, credentials out of URLs and logs, backoff, units."""

from __future__ import annotations

import pytest

from gateway.media.ps import StreamType
from gateway.registry.model import AreaTag
from gateway.rtsp.model import (
    CameraState,
    InvalidRtspCamera,
    RtspCamera,
    RtspCameraConfig,
    backoff_delay,
    channel_id_for,
    is_virtual_id,
    redact_url,
    split_credentials,
    virtual_device_id,
)
from gateway.rtsp.units import access_unit, nal_types, to_90khz
from simulators.city import build_city

KG = "12010100112160012300"


def test_ids_follow_the_convention_on_network_digit_8_and_never_meet_the_city_s_real_ones() -> None:
    assert virtual_device_id(KG) == "12010100111188012300"
    assert channel_id_for(KG, 1) == "12010100111318012301"
    assert channel_id_for(KG, 99).endswith("012399")
    with pytest.raises(InvalidRtspCamera):
        channel_id_for(KG, 100)
    real = {d.id for kg in build_city(40, seed=7) for d in kg.devices} | {
        c.id for kg in build_city(40, seed=7) for d in kg.devices for c in d.channels
    }
    assert real and not any(is_virtual_id(i) for i in real)
    assert is_virtual_id(virtual_device_id(KG)) and is_virtual_id(channel_id_for(KG, 7))


def test_credentials_leave_the_url_and_never_show_in_logs() -> None:
    assert split_credentials("RTSP://ad%40min:p%3Aw@192.168.1.10:554/Streaming/101?x=1") == (
        "rtsp://192.168.1.10:554/Streaming/101?x=1",
        "ad@min",
        "p:w",
    )
    for bad in ("http://h/x", "rtsp:///x", "rtsp://h:99999/x", "rtsp://h/a b"):
        with pytest.raises(InvalidRtspCamera):
            split_credentials(bad)
    assert redact_url("open rtsp://u:secret@h/x failed") == "open rtsp://***@h/x failed"
    camera = RtspCamera("c", "d", KG, "120101", "n", AreaTag.ENTRANCE, "rtsp://h:554/x", "u@x", "p w")
    assert camera.pull_url == "rtsp://u%40x:p%20w@h:554/x"
    assert "p w" not in repr(camera) and "secret" not in repr(RtspCameraConfig(KG, "n", "entrance", "u", "", "secret"))


def test_configuration_checks() -> None:
    checked = RtspCameraConfig(KG, " 大门口 ", "entrance", "rtsp://a:b@h/x").checked()
    assert (checked.name, checked.url, checked.username, checked.password) == ("大门口", "rtsp://h/x", "a", "b")
    explicit = RtspCameraConfig(KG, "n", "entrance", "rtsp://a:b@h/x", "c", "d").checked()
    assert (explicit.username, explicit.password) == ("c", "d")  # the fields win over the URL's
    for bad in (
        RtspCameraConfig("1201", "n", "entrance", "rtsp://h/x"),
        RtspCameraConfig("12010100111320012301", "n", "entrance", "rtsp://h/x"),  # a camera, not a kindergarten
        RtspCameraConfig(KG, "", "entrance", "rtsp://h/x"),
        RtspCameraConfig(KG, "n", "roof", "rtsp://h/x"),
    ):
        with pytest.raises(InvalidRtspCamera):
            bad.checked()


def test_backoff_grows_is_capped_and_jittered() -> None:
    delays = [backoff_delay(n, 0.999, base=0.5, cap=30.0) for n in range(1, 12)]
    assert delays == sorted(delays) and delays[-1] <= 30.0 and delays[0] < 0.51
    assert backoff_delay(3, 0.0) == pytest.approx(0.5 * backoff_delay(3, 0.99999), rel=1e-3)
    assert backoff_delay(10_000, 0.5, cap=60.0) <= 60.0
    assert not CameraState.AUTH_FAILED.retries_soon and not CameraState.UNSUPPORTED_CODEC.retries_soon
    assert CameraState.AUTH_FAILED.label == "认证失败"


SPS, PPS = b"\x00\x00\x00\x01\x67\x42\x00\x1e", b"\x00\x00\x00\x01\x68\xce\x38\x80"


def test_a_key_frame_gets_the_sdp_parameter_sets_when_it_lacks_them() -> None:
    idr, delta = b"\x00\x00\x00\x01\x65\x88", b"\x00\x00\x00\x01\x41\x9a"
    unit = access_unit(StreamType.H264, idr, 3000, None, SPS + PPS)
    assert unit.keyframe and unit.data == SPS + PPS + idr and unit.dts == 3000
    assert list(nal_types(unit.data, StreamType.H264)) == [7, 8, 5]
    inband = access_unit(StreamType.H264, SPS + PPS + idr, 0, 0, SPS + PPS)
    assert inband.data == SPS + PPS + idr  # not twice
    assert not access_unit(StreamType.H264, delta, 0, 0, SPS + PPS).keyframe
    assert access_unit(StreamType.H264, idr, 0, 0, b"\x01avcC").data == idr  # not Annex-B: left alone
    assert to_90khz(1, 1, 25) == 3600 and to_90khz(None, 1, 90000) is None
