"""The rules of each acceptance check: what passes, what fails, and what to tell the installer (zh-CN).

Inputs are plain values the service gathers (devices and channels from the
directory, the picture statistics, the operator's areas, the drill's delivery
proof); outputs are :class:`~gateway.acceptance.model.CheckResult`. Pure: no
I/O, no clock — times come in as arguments — so every rule is unit-tested.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.acceptance.model import CheckItem, CheckName, CheckResult, CheckState, DeviceRecord
from gateway.registry.model import AreaTag, name_allows_public

__all__ = [
    "AREA_LABELS",
    "BLACK_MEAN",
    "BLACK_STD",
    "LEVEL_LABELS",
    "REQUIRED_LEVELS",
    "UNIFORM_STD",
    "CameraArea",
    "CameraPicture",
    "DrillProofLike",
    "DrillTargetLike",
    "ExpectedChannel",
    "ExpectedDevice",
    "PictureStats",
    "areas_check",
    "channels_check",
    "drill_check",
    "judge_picture",
    "overdue_reason",
    "pictures_check",
    "reacceptance_reasons",
]

# --- 1. channels ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExpectedChannel:
    """A channel the kindergarten is known to have, and whether it is up now."""

    id: str
    name: str
    up: bool
    camera: bool


@dataclass(frozen=True, slots=True)
class ExpectedDevice:
    """A device placed in the kindergarten, whether it is online, and its channels."""

    id: str
    name: str
    online: bool
    channels: tuple[ExpectedChannel, ...]


def _label(name: str, ident: str) -> str:
    return f"{name}（{ident}）" if name else ident


def _names(items: Iterable[CheckItem], limit: int = 8) -> str:
    labels = [i.label or i.subject for i in items]
    shown = "、".join(labels[:limit])
    return shown + (f" 等 {len(labels)} 个" if len(labels) > limit else "")


def channels_check(devices: Sequence[ExpectedDevice]) -> CheckResult:
    """Every device online with at least one channel, every channel up, at least one camera."""
    if not devices:
        return CheckResult(
            CheckName.CHANNELS,
            CheckState.FAILED,
            "本园没有任何已登记的设备",
            "请确认录像机/摄像机/报警主机已按本园的国标编码配置，并已注册到网关（SIP 服务器编码、域、密码）。",
        )
    items: list[CheckItem] = []
    fixes: list[str] = []
    offline_devices = [d for d in devices if not d.online]
    empty_devices = [d for d in devices if d.online and not d.channels]
    for device in devices:
        if not device.online:
            items.append(CheckItem(device.id, _label(device.name, device.id), False, "设备离线", {"kind": "device"}))
        elif not device.channels:
            items.append(
                CheckItem(device.id, _label(device.name, device.id), False, "设备没有上报任何通道", {"kind": "device"})
            )
        for channel in device.channels:
            up = channel.up and device.online
            detail = "在线" if up else "离线"
            items.append(CheckItem(channel.id, _label(channel.name, channel.id), up, detail, {"kind": "channel"}))
    down = [i for i in items if not i.ok and i.extra.get("kind") == "channel"]
    if offline_devices:
        fixes.append(
            f"设备离线：{_names(i for i in items if i.subject in {d.id for d in offline_devices})}。"
            "请检查设备供电、网线和注册参数（SIP 服务器编码、端口、密码）。"
        )
    if empty_devices:
        fixes.append(
            f"设备没有通道：{_names(i for i in items if i.subject in {d.id for d in empty_devices})}。"
            "请在设备上检查国标通道编码配置，然后重新推送目录。"
        )
    down_online = [i for i in down if not any(i.subject in {c.id for c in d.channels} for d in offline_devices)]
    if down_online:
        fixes.append(f"通道离线：{_names(down_online)}。请检查这些摄像机的供电及与录像机/网络的连接。")
    cameras = sum(1 for d in devices for c in d.channels if c.camera)
    if not cameras and not fixes:
        fixes.append("本园没有摄像机通道：请把出入口、周界摄像机接入录像机或直接注册到网关。")
    channel_count = sum(len(d.channels) for d in devices)
    if fixes:
        failed = sum(1 for i in items if not i.ok)
        return CheckResult(
            CheckName.CHANNELS, CheckState.FAILED, f"{failed} 项不在线或缺失", "\n".join(fixes), tuple(items)
        )
    return CheckResult(
        CheckName.CHANNELS,
        CheckState.PASSED,
        f"{len(devices)} 台设备、{channel_count} 个通道全部在线",
        "",
        tuple(items),
    )


# --- 2. pictures --------------------------------------------------------------------------------

# A picture is black when it is dark AND flat (a night scene with lights has a spread), and
# uniform (a covered lens, a test card of one colour, a decoder's green frame) when flat at any
# brightness. Grey levels 0-255 of the luma.
BLACK_MEAN = 24.0
BLACK_STD = 10.0
UNIFORM_STD = 3.0


@dataclass(frozen=True, slots=True)
class PictureStats:
    """What the decoded picture looked like: size and its grey-level mean and spread."""

    width: int
    height: int
    mean: float
    std: float


def judge_picture(stats: PictureStats | None) -> tuple[bool, str]:
    """(ok, zh-CN detail) of one decoded picture; None means it did not decode."""
    if stats is None:
        return False, "图像无法解码"
    if stats.mean < BLACK_MEAN and stats.std < BLACK_STD:
        return False, "画面全黑"
    if stats.std < UNIFORM_STD:
        return False, "画面为单一颜色（无图像内容）"
    return True, f"{stats.width}×{stats.height} 画面正常"


@dataclass(frozen=True, slots=True)
class CameraPicture:
    """One camera's outcome: ``detail`` from :func:`judge_picture`, or why no picture came."""

    channel_id: str
    name: str
    ok: bool
    detail: str
    has_snapshot: bool = False
    elapsed: float | None = None


_PICTURE_FIXES = (
    ("画面全黑", "画面全黑：{names}。请检查镜头是否被遮挡、夜视红外/补光是否正常，以及摄像机的图像参数。"),
    ("单一颜色", "画面无内容：{names}。请检查镜头遮挡、视频线缆和摄像机是否输出正常图像。"),
    ("无法解码", "图像无法解码：{names}。请把摄像机编码设为 H.264 或 H.265，并检查码流是否完整。"),
    ("离线", "摄像机离线：{names}。请先恢复这些摄像机在线。"),
    ("", "取不到视频：{names}。请检查摄像机到网关的媒体通道（防火墙、RTP 端口、TCP/UDP 传输方式）。"),
)


def pictures_check(pictures: Sequence[CameraPicture]) -> CheckResult:
    """Every camera gave a good picture; the fix groups the failures by cause."""
    items = tuple(
        CheckItem(
            p.channel_id,
            _label(p.name, p.channel_id),
            p.ok,
            p.detail,
            {"snapshot": p.has_snapshot, **({"elapsed": round(p.elapsed, 3)} if p.elapsed is not None else {})},
        )
        for p in pictures
    )
    if not items:
        return CheckResult(
            CheckName.PICTURES, CheckState.FAILED, "没有摄像机可以取图", "请先接入摄像机并确认其在线。", items
        )
    failed = [i for i in items if not i.ok]
    if not failed:
        return CheckResult(CheckName.PICTURES, CheckState.PASSED, f"{len(items)} 路摄像机画面正常", "", items)
    fixes: list[str] = []
    left = list(failed)
    for marker, text in _PICTURE_FIXES:
        group = [i for i in left if marker in i.detail]
        if group:
            fixes.append(text.format(names=_names(group)))
            left = [i for i in left if i not in group]
    return CheckResult(
        CheckName.PICTURES, CheckState.FAILED, f"{len(failed)}/{len(items)} 路摄像机画面异常", "\n".join(fixes), items
    )


# --- 3. areas -----------------------------------------------------------------------------------

AREA_LABELS: Mapping[AreaTag, str] = {
    AreaTag.ENTRANCE: "出入口",
    AreaTag.PERIMETER: "周界",
    AreaTag.PLAYGROUND: "室外活动场地",
    AreaTag.OTHER: "其他室外公共区域",
    AreaTag.CLASSROOM: "室内·教室/活动室",
    AreaTag.DORMITORY: "室内·寝室",
    AreaTag.KITCHEN: "室内·厨房/食堂",
    AreaTag.CORRIDOR: "室内·走廊/楼道",
}


@dataclass(frozen=True, slots=True)
class CameraArea:
    """A camera and the area an operator confirmed for it (None: not confirmed)."""

    channel_id: str
    name: str
    confirmed: AreaTag | None


def areas_check(cameras: Sequence[CameraArea]) -> CheckResult:
    """Every camera's area confirmed, and at least one confirmed entrance camera (what police see)."""
    items = []
    for camera in cameras:
        area = camera.confirmed
        shared = area is not None and area.is_public and name_allows_public(camera.name)
        detail = "未确认区域" if area is None else AREA_LABELS[area] + ("（共享给公安）" if shared else "")
        items.append(
            CheckItem(
                camera.channel_id,
                _label(camera.name, camera.channel_id),
                area is not None,
                detail,
                {"area": area.value if area is not None else None, "police": shared},
            )
        )
    fixes = []
    unconfirmed = [i for i in items if not i.ok]
    if unconfirmed:
        fixes.append(f"未确认区域：{_names(unconfirmed)}。请在快照上为每路摄像机选择区域。")
    entrances = [c for c in cameras if c.confirmed is AreaTag.ENTRANCE]
    if not entrances:
        fixes.append(
            "没有已确认的出入口摄像机：请把对准幼儿园大门的摄像机确认为「出入口」；"
            "若大门没有摄像机，请先加装。只有确认为出入口/周界的摄像机才会共享给公安。"
        )
    elif not any(i.extra.get("police") for i in items if i.extra.get("area") == AreaTag.ENTRANCE.value):
        fixes.append("出入口摄像机的名称表明是室内区域，不会共享给公安：请在设备上更正通道名称后重新确认。")
    if fixes:
        return CheckResult(
            CheckName.AREAS, CheckState.FAILED, f"{len(unconfirmed)} 路未确认区域", "\n".join(fixes), tuple(items)
        )
    shared_count = sum(1 for i in items if i.extra.get("police"))
    return CheckResult(
        CheckName.AREAS,
        CheckState.PASSED,
        f"{len(items)} 路摄像机区域已确认，{shared_count} 路共享给公安",
        "",
        tuple(items),
    )


# --- 4. drill -----------------------------------------------------------------------------------


class DrillTargetLike(Protocol):
    """One upper level a drill went to (``gateway.alarms.drills.DrillTarget``)."""

    @property
    def level(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def delivered_at(self) -> float | None: ...
    @property
    def error(self) -> str: ...


class DrillProofLike(Protocol):
    """A drill alarm's delivery proof (``gateway.alarms.drills.DrillProof``)."""

    @property
    def alarm_id(self) -> str: ...
    @property
    def received_at(self) -> float: ...
    @property
    def targets(self) -> Sequence[DrillTargetLike]: ...


LEVEL_LABELS: Mapping[str, str] = {
    "district": "区级平台",
    "municipal": "市级平台",
    "police_platform": "公安平台",
    "police_mqtt": "公安报警接口（MQTT）",
    "webhook": "Webhook 接收端",
}

#: The levels a drill must reach: each is one group, any of its levels counts as configured.
REQUIRED_LEVELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("区级", ("district",)),
    ("市级", ("municipal",)),
    ("公安", ("police_platform", "police_mqtt")),
)


def drill_check(proof: DrillProofLike | None, *, waited: float, pressed: bool) -> CheckResult:
    """Passed when district, municipal and police each have a target and every target delivered.

    ``pressed`` False: no drill alarm came within ``waited`` seconds (``proof`` is None).
    """
    if pressed and proof is None:
        return CheckResult(
            CheckName.DRILL,
            CheckState.FAILED,
            "收到了演练报警，但无法取得各级的送达证明",
            "请检查网关的报警推送（上级平台、MQTT）是否正常，然后重新演练。",
        )
    if proof is None:
        return CheckResult(
            CheckName.DRILL,
            CheckState.FAILED,
            f"{waited:.0f} 秒内没有收到一键报警",
            "请让保安按下一键报警按钮后重新验收；若已按下，请检查报警主机是否在线、"
            "报警通道是否配置（国标报警上报），以及报警主机到网关的网络。",
        )
    items = []
    for target in proof.targets:
        label = f"{LEVEL_LABELS.get(target.level, target.level)} {target.name}".strip()
        delivered = target.state == "delivered" and target.delivered_at is not None
        if delivered:
            assert target.delivered_at is not None
            took = max(0.0, target.delivered_at - proof.received_at)
            detail = f"已送达，端到端 {_seconds(took)}"
            extra: dict[str, object] = {"level": target.level, "elapsed": round(took, 3)}
        else:
            detail = "送达失败" if target.state == "failed" else "未送达"
            detail += f"（{target.error}）" if target.error else ""
            extra = {"level": target.level, "elapsed": None}
        items.append(CheckItem(target.name, label, delivered, detail, extra))
    fixes = []
    levels = {t.level for t in proof.targets}
    for group, members in REQUIRED_LEVELS:
        if not levels & set(members):
            fixes.append(
                f"没有配置{group}接收端：请在网关配置中添加{group}上级平台或报警接口，演练报警才能送达{group}。"
            )
    missing = [i for i in items if not i.ok]
    if missing:
        fixes.append(
            f"演练报警没有送达：{_names(missing)}。请检查网关到这些接收端的网络、注册状态和账号配置，然后重新演练。"
        )
    if fixes:
        return CheckResult(
            CheckName.DRILL, CheckState.FAILED, f"{len(missing)} 个接收端未送达", "\n".join(fixes), tuple(items)
        )
    times = [float(i.extra["elapsed"]) for i in items if isinstance(i.extra.get("elapsed"), float)]
    slowest = max(times) if times else 0.0
    return CheckResult(
        CheckName.DRILL,
        CheckState.PASSED,
        f"演练报警已送达区级、市级和公安（{len(items)} 个接收端），最慢端到端 {_seconds(slowest)}",
        "",
        tuple(items),
    )


# --- re-acceptance and the reminder -------------------------------------------------------------

_INFO_FIELDS = (("manufacturer", "厂商"), ("model", "型号"), ("firmware", "固件"))


def reacceptance_reasons(then: Sequence[DeviceRecord], now: Sequence[DeviceRecord]) -> list[str]:
    """Why a kindergarten needs 重新验收: a device that was not there at acceptance, or one whose
    DeviceInfo changed (a box swapped under the same ID reports another manufacturer, model or firmware).

    A field counts only when both sides know it (a device that has not answered DeviceInfo
    since a restart is not "changed"); a device removed since is a reason too.
    """
    reasons = []
    before = {d.id: d for d in then}
    current = {d.id: d for d in now}
    for device in now:
        old = before.get(device.id)
        if old is None:
            reasons.append(f"新设备 {_label(device.name, device.id)} 未验收")
            continue
        for attr, label in _INFO_FIELDS:
            was, is_ = getattr(old, attr), getattr(device, attr)
            if was and is_ and was != is_:
                reasons.append(f"设备 {_label(device.name, device.id)} 的{label}由 {was} 变为 {is_}")
    for device in then:
        if device.id not in current:
            reasons.append(f"设备 {_label(device.name, device.id)} 已移除")
    return reasons


def overdue_reason(last_drill: float | None, now: float, period: float) -> str | None:
    """Why a kindergarten's drill is overdue (zh-CN), or None when its last passed drill is recent."""
    if last_drill is None:
        return "从未通过报警演练"
    age = now - last_drill
    if age <= period:
        return None
    return f"上次通过报警演练已是 {int(age // 86400)} 天前（要求每 {period / 86400:.0f} 天一次）"


def _seconds(value: float) -> str:
    """An end-to-end time as staff read it: milliseconds under a second (a drill takes tens of them)."""
    return f"{value * 1000:.0f} 毫秒" if value < 1.0 else f"{value:.1f} 秒"
