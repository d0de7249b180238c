"""Failure modes of the simulated city, on purpose: every acceptance and coverage check can fail.

A fault is written ``TARGET:MODE[:CAMERA]`` (``kgw simulate --fault``, ``kgw demo --fault``):

* ``TARGET`` is a kindergarten: its index among the kindergartens the simulator runs (``0``,
  ``7``: the same index ``POST /press {"kindergarten": 7}`` takes) or its 20-digit ID
  (``12010100112160000300``). For ``upper-down`` it is an upper platform's name instead
  (``municipal``, ``police``, ``district-120101``: the demo's platforms).
* ``MODE`` is a :class:`Fault`.
* ``CAMERA`` (camera faults only) is the camera's number NN, the last two digits of its channel
  ID (``1`` is the kindergarten's first camera, its main gate 大门口); without it, the fault
  hits every camera of the kindergarten.

What each mode looks like, as the real failure would:

* ``camera-offline``: behind an NVR the NVR stays registered and reports the channel
  ``<Status>OFF</Status>`` in its catalog, and refuses an INVITE for it (480 Temporarily
  Unavailable); a camera that registers itself (``--ipc``) is powered off: it never registers.
* ``black-picture``: the camera streams valid video (H.264, or H.265 for the cameras that
  stream it) of an all-black picture: the lens is covered or the sensor is dead.
* ``no-entrance``: the kindergarten has no camera at an entrance: its entrance positions
  (大门口, 后门) are indoor positions instead (洗衣房, 储藏室, area ``other``) with the same
  channel IDs, so neither the installer's confirmation nor a name suggests an entrance.
* ``silent-alarm``: the one-key alarm box registers and keeps alive, but a press sends no
  ``Notify/Alarm`` (a broken button or a cut wire): the press API says it was pressed.
* ``upper-down``: an upper platform refuses the gateway's alarm MESSAGEs (503) or does not
  answer them at all; switchable at run time (:mod:`simulators.upper_down`).

This module is pure (parsing and plan changes); the fleet (:mod:`simulators.fleet`) applies
the faults to its devices and streams.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from gateway.errors import ConfigError
from simulators.city import SimChannel, SimDevice, SimKindergarten

__all__ = [
    "CAMERA_FAULTS",
    "DEMO_FAULTS",
    "Fault",
    "FaultError",
    "FaultSpec",
    "KindergartenFaults",
    "NO_ENTRANCE_NAMES",
    "apply_plan_faults",
    "describe",
    "parse_fault",
    "parse_faults",
    "resolve_faults",
]


class FaultError(ConfigError):
    """A fault spec that cannot be parsed or does not fit the simulated city."""


class Fault(str, Enum):
    """What can be made to fail."""

    CAMERA_OFFLINE = "camera-offline"
    BLACK_PICTURE = "black-picture"
    NO_ENTRANCE = "no-entrance"
    SILENT_ALARM = "silent-alarm"
    UPPER_DOWN = "upper-down"

    @property
    def label_zh(self) -> str:
        """How the console and banner say it."""
        return _LABELS[self]


_LABELS = {
    Fault.CAMERA_OFFLINE: "摄像机离线",
    Fault.BLACK_PICTURE: "黑屏",
    Fault.NO_ENTRANCE: "无大门口摄像机",
    Fault.SILENT_ALARM: "报警箱不上报",
    Fault.UPPER_DOWN: "上级平台不可用",
}

CAMERA_FAULTS = frozenset({Fault.CAMERA_OFFLINE, Fault.BLACK_PICTURE})
"""The modes that take an optional camera number."""

MAX_CAMERA_NUMBER = 99
KINDERGARTEN_ID_LENGTH = 20
KINDERGARTEN_TYPE = "216"

NO_ENTRANCE_NAMES: tuple[str, ...] = ("洗衣房", "储藏室", "资料室", "配电室")
"""What a no-entrance kindergarten's entrance positions are instead (indoor, area ``other``)."""

DEMO_FAULTS: tuple[str, ...] = ("5:camera-offline:1", "10:black-picture", "15:no-entrance")
"""``kgw demo``'s faulty kindergartens (those within its city): the entrance camera offline, every
camera black, no entrance camera. No silent alarm box: the demo's random presses must all arrive."""


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One parsed ``TARGET:MODE[:CAMERA]``."""

    target: int | str  # kindergarten index (int) or ID (str); for upper-down a platform name
    fault: Fault
    camera: int | None = None  # camera number NN; None: every camera

    def __str__(self) -> str:
        text = f"{self.target}:{self.fault.value}"
        return text if self.camera is None else f"{text}:{self.camera}"


def parse_fault(text: str) -> FaultSpec:
    """``"3:camera-offline:1"`` → FaultSpec(3, CAMERA_OFFLINE, 1); raises FaultError with what is wrong."""
    parts = [p.strip() for p in text.strip().split(":")]
    if len(parts) not in (2, 3) or not all(parts):
        raise FaultError(f"a fault is TARGET:MODE[:CAMERA], not {text!r}")
    try:
        fault = Fault(parts[1].lower())
    except ValueError:
        known = ", ".join(f.value for f in Fault)
        raise FaultError(f"unknown fault mode {parts[1]!r} in {text!r}; known: {known}") from None
    target = _target(parts[0], fault, text)
    camera = None
    if len(parts) == 3:
        if fault not in CAMERA_FAULTS:
            raise FaultError(f"{fault.value} takes no camera number ({text!r})")
        if not parts[2].isdecimal() or not 1 <= int(parts[2]) <= MAX_CAMERA_NUMBER:
            raise FaultError(f"camera number must be 1..{MAX_CAMERA_NUMBER}, not {parts[2]!r} ({text!r})")
        camera = int(parts[2])
    return FaultSpec(target, fault, camera)


def _target(text: str, fault: Fault, spec: str) -> int | str:
    if fault is Fault.UPPER_DOWN:
        if text.isdecimal():
            raise FaultError(f"upper-down names an upper platform (e.g. municipal), not a kindergarten ({spec!r})")
        return text
    if not text.isascii() or not text.isdecimal():
        raise FaultError(f"a kindergarten is an index or its 20-digit ID, not {text!r} ({spec!r})")
    if len(text) == KINDERGARTEN_ID_LENGTH:
        if text[10:13] != KINDERGARTEN_TYPE:
            raise FaultError(f"{text} is not a kindergarten ID (type 216) ({spec!r})")
        return text
    if len(text) > 6:
        raise FaultError(f"a kindergarten index is small and an ID has 20 digits, not {text!r} ({spec!r})")
    return int(text)


def parse_faults(texts: Iterable[str]) -> tuple[FaultSpec, ...]:
    """Every ``--fault`` of a command line."""
    return tuple(parse_fault(text) for text in texts)


# --------------------------------------------------------------------------- resolved per kindergarten


@dataclass(frozen=True, slots=True)
class KindergartenFaults:
    """The faults of one kindergarten, resolved to its channels."""

    kindergarten_id: str
    index: int
    specs: tuple[FaultSpec, ...] = ()
    offline: frozenset[str] = frozenset()  # camera channel IDs
    black: frozenset[str] = frozenset()  # camera channel IDs
    no_entrance: bool = False
    silent_alarm: bool = False
    modes: frozenset[Fault] = field(default=frozenset())

    def as_json(self) -> dict[str, object]:
        """For the simulator's control endpoint (``GET /faults``)."""
        return {
            "kindergarten_id": self.kindergarten_id,
            "index": self.index,
            "faults": sorted(m.value for m in self.modes),
            "specs": [str(s) for s in self.specs],
            "offline_channels": sorted(self.offline),
            "black_channels": sorted(self.black),
        }


def resolve_faults(
    city: Sequence[SimKindergarten], specs: Iterable[FaultSpec], *, partial: bool = False
) -> dict[str, KindergartenFaults]:
    """The faults of each named kindergarten of ``city`` (the kindergartens this simulator runs).

    ``partial``: the simulator runs only part of the city (``--shard``, ``--only-districts``), so
    an ID it does not run is another process's, not a mistake. ``upper-down`` is a platform's
    fault and has no place here. Raises FaultError for what does not fit.
    """
    index_of = {k.id: i for i, k in enumerate(city)}
    grouped: dict[str, list[FaultSpec]] = {}
    for spec in specs:
        if spec.fault is Fault.UPPER_DOWN:
            raise FaultError(
                f"{spec}: upper-down is an upper platform's fault (kgw platform --fault upper-down, "
                "kgw demo --fault municipal:upper-down), not a kindergarten's"
            )
        if isinstance(spec.target, int):
            if not 0 <= spec.target < len(city):
                raise FaultError(f"{spec}: no kindergarten #{spec.target} (the simulator runs {len(city)})")
            kg_id = city[spec.target].id
        elif spec.target in index_of:
            kg_id = spec.target
        elif partial:
            continue
        else:
            raise FaultError(f"{spec}: kindergarten {spec.target} is not in the simulated city")
        grouped.setdefault(kg_id, []).append(spec)
    return {kg_id: _resolve_one(city[index_of[kg_id]], index_of[kg_id], tuple(s)) for kg_id, s in grouped.items()}


def _resolve_one(kg: SimKindergarten, index: int, specs: tuple[FaultSpec, ...]) -> KindergartenFaults:
    cameras = {int(c.id[-2:]): c.id for d in kg.devices for c in d.channels if c.kind == "camera"}
    chosen: dict[Fault, set[str]] = {Fault.CAMERA_OFFLINE: set(), Fault.BLACK_PICTURE: set()}
    for spec in specs:
        if spec.fault not in CAMERA_FAULTS:
            continue
        if spec.camera is None:
            chosen[spec.fault].update(cameras.values())
        elif spec.camera in cameras:
            chosen[spec.fault].add(cameras[spec.camera])
        else:
            raise FaultError(f"{spec}: {kg.name} has cameras 1..{len(cameras)}, not {spec.camera}")
    modes = frozenset(s.fault for s in specs)
    if Fault.SILENT_ALARM in modes and not any(d.kind == "alarm_box" for d in kg.devices):
        raise FaultError(f"{kg.name} ({kg.id}) has no one-key alarm box to silence")
    return KindergartenFaults(
        kindergarten_id=kg.id,
        index=index,
        specs=specs,
        offline=frozenset(chosen[Fault.CAMERA_OFFLINE]),
        black=frozenset(chosen[Fault.BLACK_PICTURE]),
        no_entrance=Fault.NO_ENTRANCE in modes,
        silent_alarm=Fault.SILENT_ALARM in modes,
        modes=modes,
    )


# --------------------------------------------------------------------------- plan changes


def apply_plan_faults(kg: SimKindergarten, faults: KindergartenFaults | None) -> SimKindergarten:
    """The kindergarten as it is installed with its faults: only no-entrance changes the plan.

    Its entrance cameras become indoor positions (same IDs, area ``other``, a name that
    suggests no entrance), so provisioning confirms no entrance and the catalog names none.
    """
    if faults is None or not faults.no_entrance:
        return kg
    names = iter(NO_ENTRANCE_NAMES)
    renamed: dict[str, SimChannel] = {}
    for device in kg.devices:
        for channel in device.channels:
            if channel.kind == "camera" and channel.area == "entrance":
                label = next(names, f"设备间{len(renamed) + 1}")
                renamed[channel.id] = replace(channel, name=f"{kg.name}·{label}", area="other")
    devices = tuple(_with_channels(device, renamed) for device in kg.devices)
    return replace(kg, devices=devices)


def _with_channels(device: SimDevice, renamed: dict[str, SimChannel]) -> SimDevice:
    channels = tuple(renamed.get(c.id, c) for c in device.channels)
    if channels == device.channels:
        return device
    if device.kind == "ipc":  # an IPC is named after its one camera
        return replace(device, name=channels[0].name, channels=channels)
    return replace(device, channels=channels)


def describe(kg: SimKindergarten, faults: KindergartenFaults) -> str:
    """One line for a banner: ``#5 和平区第六幼儿园 (1201…): camera-offline 大门口``."""
    names = {c.id: c.name.split("·", 1)[-1] for d in kg.devices for c in d.channels}
    parts = []
    for mode in sorted(faults.modes, key=lambda m: m.value):
        channels = {Fault.CAMERA_OFFLINE: faults.offline, Fault.BLACK_PICTURE: faults.black}.get(mode)
        cameras = sum(1 for d in kg.devices for c in d.channels if c.kind == "camera")
        if channels is None:
            parts.append(f"{mode.value} ({mode.label_zh})")
        elif len(channels) == cameras:
            parts.append(f"{mode.value} ({mode.label_zh}): every camera")
        else:
            parts.append(f"{mode.value} ({mode.label_zh}): " + "、".join(names[c] for c in sorted(channels)))
    return f"#{faults.index} {kg.name} ({kg.id}): " + "; ".join(parts)
