"""Coverage of a kindergarten: the facts that prove it is connected, and the status they give.

District staff must see at a glance which kindergartens are not fully connected
(README "Coverage"). Every kindergarten gets one :class:`CoverageStatus` with the
reasons in words (:class:`Finding`, zh-CN), computed from a snapshot of
:class:`KindergartenFacts` by :func:`evaluate` under :class:`CoverageRules`:

* 未接入 (``missing``): no device known for it, or none of its devices online —
  nothing of the kindergarten reaches the city;
* 部分接入 (``partial``): something reaches the city but one rule fails (a missing
  or offline entrance camera, an unconfirmed entrance area, no perimeter camera,
  no or an offline one-button alarm, no recent successful drill, recordings that
  do not answer, a lossy or flapping uplink, devices or channels offline);
* 达标 (``complete``): every rule holds.

What is *unknown* never demotes: recordings nobody searched yet, an uplink with
no stream in the last 24 h. Pure: no I/O, no clock (``now`` comes in).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from gateway.registry.directory import Directory
from gateway.registry.model import AreaTag, Channel, Kindergarten

__all__ = [
    "ALARM_INPUT_TYPE",
    "CAMERA_TYPES",
    "SORT_KEYS",
    "CoverageRules",
    "CoverageStatus",
    "DistrictSummary",
    "Finding",
    "KindergartenCoverage",
    "KindergartenFacts",
    "Reason",
    "UplinkSample",
    "collect_facts",
    "evaluate",
    "evaluate_all",
    "select",
    "summarise",
]

CAMERA_TYPES: Final = frozenset({131, 132})
ALARM_INPUT_TYPE: Final = 134
DAY: Final = 86400.0


class CoverageStatus(StrEnum):
    """A kindergarten's coverage; the order of :data:`STATUS_ORDER` is worst first."""

    MISSING = "missing"
    PARTIAL = "partial"
    COMPLETE = "complete"

    @property
    def label(self) -> str:
        """The console's word."""
        return _STATUS_LABELS[self]


_STATUS_LABELS: Final = {
    CoverageStatus.MISSING: "未接入",
    CoverageStatus.PARTIAL: "部分接入",
    CoverageStatus.COMPLETE: "达标",
}
STATUS_ORDER: Final = {CoverageStatus.MISSING: 0, CoverageStatus.PARTIAL: 1, CoverageStatus.COMPLETE: 2}


class Reason(StrEnum):
    """Why a kindergarten is not 达标 (stable codes: the API filters by them)."""

    NO_DEVICES = "no_devices"
    ALL_OFFLINE = "all_offline"
    NO_ENTRANCE = "no_entrance"
    ENTRANCE_OFFLINE = "entrance_offline"
    ENTRANCE_UNCONFIRMED = "entrance_unconfirmed"
    NO_PERIMETER = "no_perimeter"
    PERIMETER_OFFLINE = "perimeter_offline"
    NO_ALARM = "no_alarm"
    ALARM_OFFLINE = "alarm_offline"
    NEVER_DRILLED = "never_drilled"
    DRILL_OLD = "drill_old"
    NO_RECORDING = "no_recording"
    UPLINK_LOSS = "uplink_loss"
    FLAPPING = "flapping"
    DEVICES_OFFLINE = "devices_offline"
    CHANNELS_OFFLINE = "channels_offline"

    @property
    def label(self) -> str:
        """The reason's general name (the filter's option text)."""
        return _REASON_LABELS[self]


_REASON_LABELS: Final = {
    Reason.NO_DEVICES: "无设备登记",
    Reason.ALL_OFFLINE: "设备全部离线",
    Reason.NO_ENTRANCE: "无大门口摄像机",
    Reason.ENTRANCE_OFFLINE: "大门口摄像机离线",
    Reason.ENTRANCE_UNCONFIRMED: "大门口区域未确认",
    Reason.NO_PERIMETER: "无周界摄像机",
    Reason.PERIMETER_OFFLINE: "周界摄像机离线",
    Reason.NO_ALARM: "无一键报警",
    Reason.ALARM_OFFLINE: "一键报警离线",
    Reason.NEVER_DRILLED: "从未演练",
    Reason.DRILL_OLD: "演练过期",
    Reason.NO_RECORDING: "录像不可用",
    Reason.UPLINK_LOSS: "上行丢包",
    Reason.FLAPPING: "频繁掉线",
    Reason.DEVICES_OFFLINE: "设备离线",
    Reason.CHANNELS_OFFLINE: "通道离线",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One failed rule: its code and the words shown (with the figure that failed)."""

    reason: Reason
    text: str


@dataclass(frozen=True, slots=True)
class CoverageRules:
    """The thresholds of :func:`evaluate` (``coverage_*`` settings of ``kgw gateway``)."""

    drill_max_age_days: float = 180.0  # a successful drill older than this no longer proves the alarm path
    loss_percent: float = 2.0  # RTP loss over the last 24 h at or above this is an uplink problem
    min_packets: int = 1000  # below this many RTP packets in 24 h the loss figure means nothing
    flaps_per_day: int = 3  # device offline transitions in 24 h at or above this: a flapping uplink
    require_perimeter: bool = True  # a kindergarten without a perimeter camera is partial

    def __post_init__(self) -> None:
        if self.drill_max_age_days <= 0 or not 0 < self.loss_percent <= 100 or self.flaps_per_day < 1:
            raise ValueError("coverage rules: drill age > 0 days, loss within (0, 100] %, flaps >= 1")


@dataclass(frozen=True, slots=True)
class UplinkSample:
    """RTP packets received and lost from a kindergarten's streams over the last 24 h."""

    received: int = 0
    lost: int = 0

    @property
    def loss_percent(self) -> float:
        """Lost over expected (received + lost), in percent."""
        expected = self.received + self.lost
        return 100.0 * self.lost / expected if expected else 0.0


@dataclass(frozen=True, slots=True)
class KindergartenFacts:
    """What is known of one kindergarten now (the dashboard's columns)."""

    id: str
    name: str
    district_code: str
    devices: int = 0
    devices_online: int = 0
    channels: int = 0
    channels_online: int = 0
    cameras: int = 0
    cameras_online: int = 0
    entrance: int = 0  # cameras looking at the entrance (confirmed, else suggested by the name)
    entrance_online: int = 0
    entrance_confirmed: bool = False  # an operator confirmed one of them as the entrance
    perimeter: int = 0
    perimeter_online: int = 0
    alarms: int = 0  # one-button alarm inputs (type 134, not perimeter)
    alarms_online: int = 0
    last_drill: float | None = None  # wall time of the latest drill every sink received
    recording: bool | None = None  # RecordInfo answered (True), failed (False), never asked (None)
    uplink: UplinkSample | None = None  # None: no stream in the last 24 h
    flaps: int = 0  # device offline transitions in the last 24 h


@dataclass(frozen=True, slots=True)
class KindergartenCoverage:
    """A kindergarten's facts, status and findings."""

    facts: KindergartenFacts
    status: CoverageStatus
    findings: tuple[Finding, ...] = ()

    @property
    def reasons(self) -> frozenset[Reason]:
        """The failed rules' codes."""
        return frozenset(f.reason for f in self.findings)

    @property
    def reason_text(self) -> str:
        """The findings as one line (CSV/XLSX and the table)."""
        return "；".join(f.text for f in self.findings)


def evaluate(facts: KindergartenFacts, rules: CoverageRules, now: float) -> KindergartenCoverage:
    """The status and findings of one kindergarten (module doc)."""
    if facts.devices == 0:
        return KindergartenCoverage(facts, CoverageStatus.MISSING, (Finding(Reason.NO_DEVICES, "无设备登记"),))
    if facts.devices_online == 0:
        text = f"设备全部离线（{facts.devices}台）"
        return KindergartenCoverage(facts, CoverageStatus.MISSING, (Finding(Reason.ALL_OFFLINE, text),))
    found: list[Finding] = []

    def fail(reason: Reason, text: str | None = None) -> None:
        found.append(Finding(reason, text or reason.label))

    if facts.entrance == 0:
        fail(Reason.NO_ENTRANCE)
    else:
        if facts.entrance_online == 0:
            fail(Reason.ENTRANCE_OFFLINE)
        if not facts.entrance_confirmed:
            fail(Reason.ENTRANCE_UNCONFIRMED)
    if facts.perimeter == 0:
        if rules.require_perimeter:
            fail(Reason.NO_PERIMETER)
    elif facts.perimeter_online < facts.perimeter:
        fail(
            Reason.PERIMETER_OFFLINE, f"周界摄像机离线（{facts.perimeter - facts.perimeter_online}/{facts.perimeter}）"
        )
    if facts.alarms == 0:
        fail(Reason.NO_ALARM)
    elif facts.alarms_online == 0:
        fail(Reason.ALARM_OFFLINE)
    if facts.last_drill is None:
        fail(Reason.NEVER_DRILLED)
    elif now - facts.last_drill > rules.drill_max_age_days * DAY:
        fail(Reason.DRILL_OLD, f"演练已超过{rules.drill_max_age_days:g}天")
    if facts.recording is False:
        fail(Reason.NO_RECORDING)
    uplink = facts.uplink
    measured = uplink is not None and uplink.received + uplink.lost >= rules.min_packets
    if uplink is not None and measured and uplink.loss_percent >= rules.loss_percent:
        fail(Reason.UPLINK_LOSS, f"上行丢包 {uplink.loss_percent:.1f}%")
    if facts.flaps >= rules.flaps_per_day:
        fail(Reason.FLAPPING, f"24小时内掉线{facts.flaps}次")
    if facts.devices_online < facts.devices:
        fail(Reason.DEVICES_OFFLINE, f"{facts.devices - facts.devices_online}台设备离线")
    down = facts.channels - facts.channels_online
    if down > 0:
        fail(Reason.CHANNELS_OFFLINE, f"{down}路通道离线")
    status = CoverageStatus.PARTIAL if found else CoverageStatus.COMPLETE
    return KindergartenCoverage(facts, status, tuple(found))


# --- facts from the directory ---------------------------------------------------------------


def _type_of(channel: Channel) -> int:
    if channel.type_code:
        return channel.type_code
    code = channel.id[10:13]
    return int(code) if len(channel.id) == 20 and code.isdigit() else 0


def _is_central(device_id: str) -> bool:
    """A lower platform or gateway (types 200-214): its catalog's area tags went through its own confirmation."""
    code = device_id[10:13]
    return len(device_id) == 20 and code.isdigit() and 200 <= int(code) <= 214


def collect_facts(
    directory: Directory,
    *,
    kindergartens: Iterable[Kindergarten] | None = None,
    last_drills: Mapping[str, float] | None = None,
    recordings: Mapping[str, bool] | None = None,
    uplinks: Mapping[str, UplinkSample] | None = None,
    flaps: Mapping[str, int] | None = None,
) -> list[KindergartenFacts]:
    """The facts of every kindergarten (or of ``kindergartens``) from the directory and the other inputs.

    ``last_drills``: kindergarten id -> wall time of its latest successful drill;
    ``recordings``: channel id -> whether its last RecordInfo search was answered;
    ``uplinks``: kindergarten id -> RTP of the last 24 h; ``flaps``: device id -> offline
    transitions in the last 24 h. A kindergarten's devices are the devices placed in
    it and the devices serving its channels (a lower platform, on a platform node).
    """
    drills, records, lossy, flapping = last_drills or {}, recordings or {}, uplinks or {}, flaps or {}
    placed: dict[str, set[str]] = {}
    for device_id, entry in directory.devices.items():
        if entry.row.kindergarten_id:
            placed.setdefault(entry.row.kindergarten_id, set()).add(device_id)
    chosen = directory.kindergartens.values() if kindergartens is None else kindergartens
    out: list[KindergartenFacts] = []
    for kg in chosen:
        device_ids = set(placed.get(kg.id, ()))
        channels = directory.channels_of_kindergarten(kg.id)
        counts = dict.fromkeys(
            (
                "channels_online",
                "cameras",
                "cameras_online",
                "perimeter",
                "perimeter_online",
                "alarms",
                "alarms_online",
            ),
            0,
        )
        entrances: list[tuple[bool, bool]] = []  # (confirmed, up)
        answered: list[bool] = []
        for channel in channels:
            device_ids.add(channel.device_id)
            up = directory.is_up(channel)
            counts["channels_online"] += up
            kind = _type_of(channel)
            area = channel.effective_area
            if kind in CAMERA_TYPES:
                counts["cameras"] += 1
                counts["cameras_online"] += up
                if area is AreaTag.ENTRANCE:
                    confirmed = channel.confirmed_area is AreaTag.ENTRANCE or (
                        channel.confirmed_area is None and _is_central(channel.device_id)
                    )
                    entrances.append((confirmed, up))
                elif area is AreaTag.PERIMETER:
                    counts["perimeter"] += 1
                    counts["perimeter_online"] += up
                if (answer := records.get(channel.id)) is not None:
                    answered.append(answer)
            elif kind == ALARM_INPUT_TYPE and area is not AreaTag.PERIMETER:
                counts["alarms"] += 1
                counts["alarms_online"] += up
        confirmed_entrances = [up for confirmed, up in entrances if confirmed]
        counted = confirmed_entrances or [up for _, up in entrances]
        known = [directory.devices[d].row for d in device_ids if d in directory.devices]
        devices_online = sum(1 for row in known if row.online)
        out.append(
            KindergartenFacts(
                id=kg.id,
                name=kg.name,
                district_code=kg.district_code,
                devices=len(known),
                devices_online=devices_online,
                channels=len(channels),
                entrance=len(entrances),
                entrance_online=sum(counted),
                entrance_confirmed=bool(confirmed_entrances),
                last_drill=drills.get(kg.id),
                recording=(any(answered) if answered else None),
                uplink=lossy.get(kg.id),
                flaps=sum(flapping.get(d, 0) for d in device_ids),
                **counts,
            )
        )
    return out


def evaluate_all(facts: Iterable[KindergartenFacts], rules: CoverageRules, now: float) -> list[KindergartenCoverage]:
    """:func:`evaluate` of each."""
    return [evaluate(f, rules, now) for f in facts]


# --- lists and counts ---------------------------------------------------------------------------


def _sort_key(name: str) -> Callable[[KindergartenCoverage], object]:
    keys: dict[str, Callable[[KindergartenCoverage], object]] = {
        "status": lambda c: (STATUS_ORDER[c.status], -len(c.findings), c.facts.district_code, c.facts.id),
        "name": lambda c: (c.facts.name, c.facts.id),
        "id": lambda c: c.facts.id,
        "district": lambda c: (c.facts.district_code, c.facts.id),
        "reasons": lambda c: (-len(c.findings), c.facts.id),
        "devices_online": lambda c: (c.facts.devices_online, c.facts.id),
        "last_drill": lambda c: (c.facts.last_drill or 0.0, c.facts.id),
        "flaps": lambda c: (c.facts.flaps, c.facts.id),
    }
    return keys[name]


SORT_KEYS: Final = ("status", "name", "id", "district", "reasons", "devices_online", "last_drill", "flaps")


def select(
    rows: Sequence[KindergartenCoverage],
    *,
    district: str | None = None,
    status: CoverageStatus | None = None,
    reason: Reason | None = None,
    text: str = "",
    sort: str = "status",
    descending: bool = False,
) -> list[KindergartenCoverage]:
    """Rows matching every filter given (``text``: in the name or id), sorted by ``sort`` (:data:`SORT_KEYS`)."""
    if sort not in SORT_KEYS:
        raise ValueError(f"unknown sort key {sort!r}")
    picked = [
        r
        for r in rows
        if (district is None or r.facts.district_code == district)
        and (status is None or r.status is status)
        and (reason is None or reason in r.reasons)
        and (not text or text in r.facts.name or text in r.facts.id)
    ]
    picked.sort(key=_sort_key(sort), reverse=descending)  # type: ignore[arg-type]
    return picked


@dataclass(frozen=True, slots=True)
class DistrictSummary:
    """Counts of one district (or the city: ``district_code`` "")."""

    district_code: str
    total: int = 0
    complete: int = 0
    partial: int = 0
    missing: int = 0

    @property
    def rate(self) -> float:
        """Share of kindergartens 达标 (0 when there are none)."""
        return self.complete / self.total if self.total else 0.0


def summarise(rows: Iterable[KindergartenCoverage]) -> tuple[list[DistrictSummary], DistrictSummary]:
    """Per-district counts (by code) and the city's."""
    counts: dict[str, list[int]] = {}
    for row in rows:
        c = counts.setdefault(row.facts.district_code, [0, 0, 0])
        c[STATUS_ORDER[row.status]] += 1
    districts = [
        DistrictSummary(code, missing + partial + complete, complete, partial, missing)
        for code, (missing, partial, complete) in sorted(counts.items())
    ]
    city = DistrictSummary(
        "",
        sum(d.total for d in districts),
        sum(d.complete for d in districts),
        sum(d.partial for d in districts),
        sum(d.missing for d in districts),
    )
    return districts, city
