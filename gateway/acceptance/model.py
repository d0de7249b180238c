"""Values of an acceptance run (验收): its checks, the devices it saw, the run itself.

Frozen dataclasses and enums only, with their JSON forms (the ``checks`` and
``devices`` columns of the v7 ``acceptance`` table hold them as JSON text).
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "Acceptance",
    "AcceptanceState",
    "AcceptanceSummary",
    "CheckItem",
    "CheckName",
    "CheckResult",
    "CheckState",
    "DeviceRecord",
    "checks_from_json",
    "checks_to_json",
    "devices_from_json",
    "devices_to_json",
]


class CheckName(StrEnum):
    """The four checks of a run, in the order they are shown."""

    CHANNELS = "channels"  # every expected channel online
    PICTURES = "pictures"  # every camera gives a decodable, non-uniform picture
    AREAS = "areas"  # the operator confirmed each camera's area; an entrance camera exists
    DRILL = "drill"  # a drill alarm reached district, municipal and police

    @property
    def label(self) -> str:
        """The check's zh-CN title (console and report)."""
        return _TITLES[self]


_TITLES = {
    CheckName.CHANNELS: "通道在线",
    CheckName.PICTURES: "摄像机画面",
    CheckName.AREAS: "摄像机区域确认",
    CheckName.DRILL: "一键报警演练",
}


class CheckState(StrEnum):
    """Where a check stands."""

    PENDING = "pending"
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def label(self) -> str:
        """zh-CN label."""
        return _STATE_LABELS[self]


_STATE_LABELS = {
    CheckState.PENDING: "等待",
    CheckState.RUNNING: "进行中",
    CheckState.PASSED: "通过",
    CheckState.FAILED: "未通过",
    CheckState.SKIPPED: "跳过",
}


class AcceptanceState(StrEnum):
    """Where a run stands: checks running, waiting for the operator's areas, waiting for the drill, done."""

    RUNNING = "running"
    CONFIRM_AREAS = "confirm_areas"
    DRILL = "drill"
    PASSED = "passed"
    FAILED = "failed"
    ABORTED = "aborted"

    @property
    def finished(self) -> bool:
        """True once the run can change no more."""
        return self in (AcceptanceState.PASSED, AcceptanceState.FAILED, AcceptanceState.ABORTED)

    @property
    def label(self) -> str:
        """zh-CN label."""
        return _RUN_LABELS[self]


_RUN_LABELS = {
    AcceptanceState.RUNNING: "检查中",
    AcceptanceState.CONFIRM_AREAS: "待确认区域",
    AcceptanceState.DRILL: "等待一键报警",
    AcceptanceState.PASSED: "验收通过",
    AcceptanceState.FAILED: "验收未通过",
    AcceptanceState.ABORTED: "已中止",
}


@dataclass(frozen=True, slots=True)
class CheckItem:
    """One subject of a check (a device, a channel, a camera, an upper target) and how it fared."""

    subject: str  # device / channel id, or the target's name
    label: str  # what a person calls it (name)
    ok: bool
    detail: str = ""  # zh-CN: what was seen ("离线", "画面全黑", "送达 1.2 秒")
    extra: Mapping[str, Any] = field(default_factory=dict)  # area, elapsed, level...


@dataclass(frozen=True, slots=True)
class CheckResult:
    """A check's outcome; ``fix`` says in zh-CN what to do when it failed."""

    name: CheckName
    state: CheckState = CheckState.PENDING
    summary: str = ""
    fix: str = ""
    items: tuple[CheckItem, ...] = ()
    elapsed: float | None = None  # s the check took

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name.value,
            "title": self.name.label,
            "state": self.state.value,
            "state_label": self.state.label,
            "summary": self.summary,
            "fix": self.fix,
            "elapsed": self.elapsed,
            "items": [
                {"subject": i.subject, "label": i.label, "ok": i.ok, "detail": i.detail, **dict(i.extra)}
                for i in self.items
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckResult:
        items = tuple(
            CheckItem(
                str(i["subject"]),
                str(i.get("label", "")),
                bool(i.get("ok")),
                str(i.get("detail", "")),
                {k: v for k, v in i.items() if k not in ("subject", "label", "ok", "detail")},
            )
            for i in data.get("items", ())
        )
        elapsed = data.get("elapsed")
        return cls(
            CheckName(data["name"]),
            CheckState(data.get("state", "pending")),
            str(data.get("summary", "")),
            str(data.get("fix", "")),
            items,
            float(elapsed) if elapsed is not None else None,
        )


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A device as the run saw it: what re-acceptance compares against (a replaced box, new firmware)."""

    id: str
    name: str = ""
    device_type: int = 0
    manufacturer: str = ""
    model: str = ""
    firmware: str = ""
    online: bool = False
    channels: int = 0


@dataclass(frozen=True, slots=True)
class Acceptance:
    """One run of one kindergarten, as stored (``report`` is the HTML once finished)."""

    id: str
    kindergarten_id: str
    district_code: str
    started_by: str
    started_at: float
    state: AcceptanceState = AcceptanceState.RUNNING
    finished_at: float | None = None
    drill_alarm_id: str | None = None
    checks: tuple[CheckResult, ...] = ()
    devices: tuple[DeviceRecord, ...] = ()
    report: str = ""

    def check(self, name: CheckName) -> CheckResult | None:
        """The named check's result, if the run has one."""
        return next((c for c in self.checks if c.name is name), None)


@dataclass(frozen=True, slots=True)
class AcceptanceSummary:
    """A kindergarten's latest run, for lists (and the coverage page): state, when, re-acceptance due."""

    id: str
    kindergarten_id: str
    state: AcceptanceState
    started_at: float
    finished_at: float | None
    drill_passed_at: float | None = None  # the latest run whose drill check passed
    needs_reacceptance: bool = False
    reasons: tuple[str, ...] = ()


def checks_to_json(checks: Sequence[CheckResult]) -> list[dict[str, Any]]:
    return [c.to_json() for c in checks]


def checks_from_json(data: Sequence[Mapping[str, Any]]) -> tuple[CheckResult, ...]:
    return tuple(CheckResult.from_json(c) for c in data)


def devices_to_json(devices: Sequence[DeviceRecord]) -> list[dict[str, Any]]:
    return [
        {
            "id": d.id,
            "name": d.name,
            "device_type": d.device_type,
            "manufacturer": d.manufacturer,
            "model": d.model,
            "firmware": d.firmware,
            "online": d.online,
            "channels": d.channels,
        }
        for d in devices
    ]


def devices_from_json(data: Sequence[Mapping[str, Any]]) -> tuple[DeviceRecord, ...]:
    return tuple(
        DeviceRecord(
            str(d["id"]),
            str(d.get("name", "")),
            int(d.get("device_type", 0)),
            str(d.get("manufacturer", "")),
            str(d.get("model", "")),
            str(d.get("firmware", "")),
            bool(d.get("online", False)),
            int(d.get("channels", 0)),
        )
        for d in data
    )
