"""The acceptance checks' rules (gateway/acceptance/rules.py), the picture measure and the report."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from gateway.acceptance.model import (
    Acceptance,
    AcceptanceState,
    CheckName,
    CheckResult,
    CheckState,
    DeviceRecord,
    checks_from_json,
    checks_to_json,
)
from gateway.acceptance.picture import measure_jpeg
from gateway.acceptance.report import render_report
from gateway.acceptance.rules import (
    CameraArea,
    CameraPicture,
    ExpectedChannel,
    ExpectedDevice,
    areas_check,
    channels_check,
    drill_check,
    judge_picture,
    overdue_reason,
    pictures_check,
    reacceptance_reasons,
)
from gateway.registry.model import AreaTag

NVR = "12010100001180000100"
CAM1 = "12010100001310000101"
CAM2 = "12010100001310000102"
BOX = "12010100001340000101"


def _jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return bytes(data.tobytes())


def _scene(width: int = 640, height: int = 360) -> np.ndarray:
    """A picture with content: a gradient, a gate, some text."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, 0] = np.linspace(40, 200, width, dtype=np.uint8)[None, :]
    image[:, :, 1] = np.linspace(60, 180, height, dtype=np.uint8)[:, None]
    cv2.rectangle(image, (200, 100), (440, 340), (20, 20, 200), -1)
    cv2.putText(image, "GATE 01", (30, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
    return image


# --- pictures -----------------------------------------------------------------------------------


def test_a_real_scene_passes_and_reports_its_size() -> None:
    stats = measure_jpeg(_jpeg(_scene()))
    assert stats is not None and (stats.width, stats.height) == (640, 360)
    ok, detail = judge_picture(stats)
    assert ok and "640×360" in detail


@pytest.mark.parametrize("level", [0, 8, 16])
def test_black_pictures_fail_as_black(level: int) -> None:
    image = np.full((360, 640, 3), level, np.uint8)
    ok, detail = judge_picture(measure_jpeg(_jpeg(image)))
    assert not ok and detail == "画面全黑"


def test_black_with_sensor_noise_is_still_black() -> None:
    rng = np.random.default_rng(1)
    image = np.clip(rng.normal(6, 3, (360, 640, 3)), 0, 255).astype(np.uint8)
    ok, detail = judge_picture(measure_jpeg(_jpeg(image)))
    assert not ok and detail == "画面全黑"


def test_a_dark_night_scene_with_lights_is_not_black() -> None:
    image = np.full((360, 640, 3), 10, np.uint8)
    cv2.circle(image, (320, 180), 80, (230, 230, 230), -1)  # a lamp over the gate
    ok, _ = judge_picture(measure_jpeg(_jpeg(image)))
    assert ok


@pytest.mark.parametrize("colour", [(128, 128, 128), (0, 200, 0), (255, 255, 255)])
def test_a_uniform_picture_fails_as_without_content(colour: tuple[int, int, int]) -> None:
    image = np.zeros((360, 640, 3), np.uint8)
    image[:] = colour
    ok, detail = judge_picture(measure_jpeg(_jpeg(image)))
    assert not ok and "单一颜色" in detail


def test_garbage_does_not_decode() -> None:
    assert measure_jpeg(b"") is None
    assert measure_jpeg(b"\xff\xd8\xff\xe0 not really a jpeg") is None
    ok, detail = judge_picture(None)
    assert not ok and detail == "图像无法解码"


def test_a_large_picture_is_measured_downscaled_but_reports_its_size() -> None:
    stats = measure_jpeg(_jpeg(cv2.resize(_scene(), (1920, 1080))))
    assert stats is not None and (stats.width, stats.height) == (1920, 1080) and stats.std > 10


def test_pictures_check_groups_fixes_by_cause_and_names_the_cameras() -> None:
    result = pictures_check(
        [
            CameraPicture(CAM1, "大门口", False, "画面全黑", True),
            CameraPicture(CAM2, "周界东", True, "640×360 画面正常", True, 1.2),
            CameraPicture("12010100001310000103", "操场", False, "摄像机离线，无法取图"),
            CameraPicture("12010100001310000104", "走廊", False, "取不到视频画面（timeout）"),
        ]
    )
    assert result.state is CheckState.FAILED and result.summary == "3/4 路摄像机画面异常"
    lines = result.fix.splitlines()
    assert lines[0].startswith("画面全黑：大门口（") and "镜头" in lines[0]
    assert lines[1].startswith("摄像机离线：操场")
    assert lines[2].startswith("取不到视频：走廊") and "RTP" in lines[2]
    assert [i.ok for i in result.items] == [False, True, False, False]
    assert result.items[1].extra == {"snapshot": True, "elapsed": 1.2}


def test_pictures_check_passes_when_every_camera_is_good_and_fails_without_cameras() -> None:
    good = pictures_check([CameraPicture(CAM1, "大门口", True, "ok", True)])
    assert good.state is CheckState.PASSED and good.fix == ""
    none = pictures_check([])
    assert none.state is CheckState.FAILED and none.fix


# --- channels -----------------------------------------------------------------------------------


def _nvr(*, online: bool = True, cam2_up: bool = True) -> ExpectedDevice:
    return ExpectedDevice(
        NVR,
        "录像机",
        online,
        (ExpectedChannel(CAM1, "大门口", True, True), ExpectedChannel(CAM2, "周界东", cam2_up, True)),
    )


def _box(channels: bool = True) -> ExpectedDevice:
    return ExpectedDevice(BOX, "一键报警", True, (ExpectedChannel(BOX, "一键报警", True, False),) if channels else ())


def test_channels_pass_when_every_device_and_channel_is_online() -> None:
    result = channels_check([_nvr(), _box()])
    assert result.state is CheckState.PASSED and result.summary == "2 台设备、3 个通道全部在线"
    assert all(i.ok for i in result.items)


def test_an_offline_channel_fails_with_its_name() -> None:
    result = channels_check([_nvr(cam2_up=False), _box()])
    assert result.state is CheckState.FAILED
    assert result.fix.startswith(f"通道离线：周界东（{CAM2}）") and "供电" in result.fix
    assert [i.subject for i in result.items if not i.ok] == [CAM2]


def test_an_offline_device_fails_with_its_name_and_not_each_channel_again() -> None:
    result = channels_check([_nvr(online=False), _box()])
    assert result.fix.startswith(f"设备离线：录像机（{NVR}）") and "注册参数" in result.fix
    assert "通道离线" not in result.fix  # its channels are down because the device is
    assert {i.subject for i in result.items if not i.ok} == {NVR, CAM1, CAM2}


def test_a_device_without_channels_fails_with_its_name() -> None:
    result = channels_check([_nvr(), _box(channels=False)])
    assert result.state is CheckState.FAILED and f"设备没有通道：一键报警（{BOX}）" in result.fix


def test_no_devices_or_no_camera_fails() -> None:
    assert channels_check([]).state is CheckState.FAILED
    only_box = channels_check([_box()])
    assert only_box.state is CheckState.FAILED and "没有摄像机" in only_box.fix


# --- areas --------------------------------------------------------------------------------------


def test_areas_pass_with_a_confirmed_entrance_and_say_what_police_see() -> None:
    result = areas_check(
        [
            CameraArea(CAM1, "大门口", AreaTag.ENTRANCE),
            CameraArea(CAM2, "教室一", AreaTag.CLASSROOM),
        ]
    )
    assert result.state is CheckState.PASSED and "1 路共享给公安" in result.summary
    assert result.items[0].extra == {"area": "entrance", "police": True}
    assert result.items[1].extra == {"area": "classroom", "police": False}


def test_no_confirmed_entrance_fails_and_says_to_confirm_one() -> None:
    result = areas_check([CameraArea(CAM1, "周界", AreaTag.PERIMETER), CameraArea(CAM2, "操场", AreaTag.PLAYGROUND)])
    assert result.state is CheckState.FAILED
    assert "没有已确认的出入口摄像机" in result.fix and "出入口" in result.fix


def test_unconfirmed_cameras_fail_with_their_names() -> None:
    result = areas_check([CameraArea(CAM1, "大门口", AreaTag.ENTRANCE), CameraArea(CAM2, "周界东", None)])
    assert result.state is CheckState.FAILED and result.fix.startswith(f"未确认区域：周界东（{CAM2}）")


def test_an_entrance_whose_name_says_indoor_is_not_shared_and_fails() -> None:
    result = areas_check([CameraArea(CAM1, "教室门口", AreaTag.ENTRANCE)])
    assert result.items[0].extra["police"] is False
    assert result.state is CheckState.FAILED and "名称" in result.fix


# --- drill --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    level: str
    name: str
    state: str
    delivered_at: float | None
    error: str = ""


@dataclass(frozen=True)
class Proof:
    alarm_id: str
    received_at: float
    targets: tuple[Target, ...]


def test_the_drill_passes_when_every_level_delivered_and_reports_times() -> None:
    proof = Proof(
        "a1",
        100.0,
        (
            Target("district", "district-120101", "delivered", 100.4),
            Target("municipal", "municipal", "delivered", 100.6),
            Target("police_mqtt", "mqtt", "delivered", 101.5),
        ),
    )
    result = drill_check(proof, waited=60, pressed=True)
    assert result.state is CheckState.PASSED and "最慢端到端 1.5 秒" in result.summary
    assert [i.extra["elapsed"] for i in result.items] == [0.4, 0.6, 1.5]
    assert result.items[2].detail == "已送达，端到端 1.5 秒"


def test_the_drill_fails_naming_the_target_that_did_not_get_it() -> None:
    proof = Proof(
        "a1",
        100.0,
        (
            Target("district", "district-120101", "delivered", 100.4),
            Target("municipal", "municipal", "pending", None, "503 Service Unavailable"),
            Target("police_platform", "police", "delivered", 100.9),
        ),
    )
    result = drill_check(proof, waited=60, pressed=True)
    assert result.state is CheckState.FAILED
    assert "演练报警没有送达：市级平台 municipal" in result.fix
    assert result.items[1].detail == "未送达（503 Service Unavailable）"


def test_the_drill_fails_when_a_level_is_not_configured() -> None:
    proof = Proof("a1", 1.0, (Target("municipal", "municipal", "delivered", 1.2),))
    result = drill_check(proof, waited=60, pressed=True)
    assert result.state is CheckState.FAILED
    assert "没有配置区级接收端" in result.fix and "没有配置公安接收端" in result.fix


def test_no_press_fails_with_what_to_do() -> None:
    result = drill_check(None, waited=90, pressed=False)
    assert result.state is CheckState.FAILED and result.summary == "90 秒内没有收到一键报警"
    assert "按下一键报警" in result.fix


# --- re-acceptance, reminder, JSON, report ------------------------------------------------------


def test_reacceptance_reasons_new_device_changed_info_and_removed() -> None:
    then = (DeviceRecord(NVR, "录像机", 118, "Hik", "DS-7808", "V4.1"), DeviceRecord(BOX, "一键报警", 134))
    same = (DeviceRecord(NVR, "录像机", 118, "Hik", "DS-7808", "V4.1"), DeviceRecord(BOX, "一键报警", 134, "X"))
    assert reacceptance_reasons(then, same) == []  # a field learnt since (was empty) is no change
    swapped = (DeviceRecord(NVR, "录像机", 118, "Dahua", "DS-7808", ""), DeviceRecord(CAM1, "新摄像机", 132))
    reasons = reacceptance_reasons(then, swapped)
    assert reasons == [
        f"设备 录像机（{NVR}） 的厂商由 Hik 变为 Dahua",
        f"新设备 新摄像机（{CAM1}） 未验收",
        f"设备 一键报警（{BOX}） 已移除",
    ]


def test_overdue_reason() -> None:
    day = 86400.0
    assert overdue_reason(None, 1000 * day, 180 * day) == "从未通过报警演练"
    assert overdue_reason(900 * day, 1000 * day, 180 * day) is None
    assert overdue_reason(700 * day, 1000 * day, 180 * day) == "上次通过报警演练已是 300 天前（要求每 180 天一次）"


def test_checks_round_trip_through_json() -> None:
    checks = (
        pictures_check([CameraPicture(CAM1, "大门口", False, "画面全黑", True, 0.5)]),
        CheckResult(CheckName.DRILL),
    )
    assert checks_from_json(checks_to_json(checks)) == checks


def test_report_has_the_verdict_checks_fixes_snapshots_devices_and_escapes() -> None:
    pictures = pictures_check([CameraPicture(CAM1, "<b>大门口</b>", False, "画面全黑", True)])
    run = Acceptance(
        "r1",
        "12010100002160000001",
        "120101",
        "admin",
        1_767_225_600.0,  # 2026-01-01 08:00 Tianjin time
        AcceptanceState.FAILED,
        1_767_225_660.0,
        None,
        (channels_check([_nvr(), _box()]), pictures, areas_check([CameraArea(CAM1, "<b>大门口</b>", None)])),
        (DeviceRecord(NVR, "录像机", 118, "Hik", "DS-7808", "V4.1", True, 2),),
    )
    jpeg = _jpeg(_scene())
    page = render_report(
        run, kindergarten_name="和平区第一幼儿园", district_name="和平区", snapshots={CAM1: jpeg}, channel_names={}
    )
    assert '<div class="verdict failed" id="verdict">验收未通过</div>' in page
    assert "2026-01-01 08:00:00" in page and "2026-01-01 08:01:00" in page and "admin" in page
    assert "需整改：</b>画面全黑" in page and "@media print" in page
    assert "data:image/jpeg;base64," in page and "DS-7808" in page
    assert "<b>大门口</b>" not in page and "&lt;b&gt;大门口&lt;/b&gt;" in page
    assert "未通过的检查：摄像机画面、摄像机区域确认" in page


def test_a_press_without_a_proof_fails_saying_so() -> None:
    result = drill_check(None, waited=90, pressed=True)
    assert result.state is CheckState.FAILED and "送达证明" in result.summary
