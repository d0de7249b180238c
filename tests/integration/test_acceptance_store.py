"""The acceptance store on both backends (db_url: SQLite file and PostgreSQL), and a run against fakes.

The run's service here gets a real directory and store, and fakes only at its edges
(snapshots, the drill desk, the area path), so every state of a run is reached quickly;
tests/integration/test_acceptance_gateway.py runs it through a real gateway.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pytest

from gateway.acceptance.model import (
    Acceptance,
    AcceptanceState,
    CheckName,
    CheckState,
    DeviceRecord,
)
from gateway.acceptance.rules import CameraPicture, pictures_check
from gateway.acceptance.service import (
    AcceptanceBusy,
    AcceptanceService,
    AcceptanceSettings,
    NotRunning,
)
from gateway.acceptance.store import PgAcceptanceStore, open_acceptance_store
from gateway.errors import GatewayError, StoreError
from gateway.registry.directory import Directory
from gateway.registry.model import AreaConfirmation, AreaTag, Channel, Device, Kindergarten
from gateway.registry.provisioning import AreaChoice
from tests.conftest import wait_for

KG = "12010100002160000001"
NVR = "12010100001180000100"
BOX = "12010100001340000101"
CAMS = [f"120101000013100001{n:02d}" for n in range(1, 5)]


def _jpeg(level: int | None) -> bytes:
    image = np.full((180, 320, 3), level or 0, np.uint8)
    if level is None:  # a scene
        image[:, :, 1] = np.linspace(0, 255, 320, dtype=np.uint8)[None, :]
        cv2.putText(image, "KG", (40, 120), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 5)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return bytes(data.tobytes())


def test_runs_snapshots_and_latest_on_both_backends(db_url: str) -> None:
    store = open_acceptance_store(db_url)
    assert isinstance(store, PgAcceptanceStore) == db_url.startswith("postgresql://")
    kg2 = "12010300002160000002" + uuid.uuid4().hex[:4]  # PostgreSQL: a database shared by tests
    kg1 = KG + uuid.uuid4().hex[:4]
    try:
        checks = (pictures_check([CameraPicture(CAMS[0], "大门口", False, "画面全黑", True, 0.4)]),)
        first = Acceptance(uuid.uuid4().hex, kg1, "120101", "admin", 1000.0, checks=checks)
        store.put(first)
        store.put_snapshot(first.id, CAMS[0], 1001.0, b"\xff\xd8jpeg\x00bytes")
        store.put_snapshot(first.id, CAMS[0], 1002.0, b"\xff\xd8newer")  # a retake replaces it
        assert store.snapshots(first.id) == {CAMS[0]: b"\xff\xd8newer"}
        assert store.snapshot(first.id, CAMS[1]) is None
        devices = (DeviceRecord(NVR, "录像机", 118, "Hik", "DS", "V1", True, 4),)
        done = Acceptance(
            first.id,
            kg1,
            "120101",
            "admin",
            1000.0,
            AcceptanceState.FAILED,
            1100.0,
            "alarm-1",
            checks,
            devices,
            "<html>报告</html>",
        )
        store.put(done)
        assert store.get(first.id) == done
        second = Acceptance(uuid.uuid4().hex, kg1, "120101", "区值班", 2000.0, AcceptanceState.RUNNING)
        store.put(second)
        other = Acceptance(uuid.uuid4().hex, kg2, "120103", "admin", 1500.0, AcceptanceState.PASSED, 1600.0)
        store.put(other)
        listed = store.list_for(kg1)
        assert [r.id for r in listed] == [second.id, first.id] and listed[1].report == ""  # lists skip reports
        assert listed[1].devices == devices
        latest = store.latest_by_kindergarten()
        assert latest[kg1].id == second.id and latest[kg1].state is AcceptanceState.RUNNING
        assert latest[kg2].state is AcceptanceState.PASSED and latest[kg2].finished_at == 1600.0
        assert latest[kg1].drill_passed_at is None  # the drill of the first run did not pass
        assert store.latest_passed_devices()[kg2] == ()
        assert {r.id for r in store.unfinished()} >= {second.id}
        assert store.get("nope") is None
    finally:
        store.close()


def test_a_snapshot_of_an_unknown_run_is_refused(db_url: str) -> None:
    store = open_acceptance_store(db_url)
    try:
        with pytest.raises(StoreError):
            store.put_snapshot("no-such-run-" + uuid.uuid4().hex, CAMS[0], 1.0, b"x")
    finally:
        store.close()


# --- a run against fakes at the edges ------------------------------------------------------------


@dataclass
class Target:
    level: str
    name: str
    state: str
    delivered_at: float | None
    error: str = ""


@dataclass
class Proof:
    alarm_id: str
    received_at: float
    targets: tuple[Target, ...]


@dataclass
class FakeAlarm:
    id: str


@dataclass
class Desk:
    """The alarm service's drill contract, driven by the test."""

    opened: list[tuple[str, str, float]] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    pressed: asyncio.Event = field(default_factory=asyncio.Event)
    proof: Proof | None = None

    def open_drill(self, kindergarten_id: str, ref: str, until: float) -> None:
        self.opened.append((kindergarten_id, ref, until))

    def close_drill(self, kindergarten_id: str) -> None:
        self.closed.append(kindergarten_id)

    async def wait_drill(self, kindergarten_id: str, timeout: float) -> Any:
        async with asyncio.timeout(timeout):
            await self.pressed.wait()
        return FakeAlarm("drill-alarm-1")

    async def wait_drill_proof(self, alarm_id: str, timeout: float) -> Any:
        assert self.proof is not None
        if not all(t.state == "delivered" for t in self.proof.targets):
            raise TimeoutError
        return self.proof

    def drill_proof(self, alarm_id: str) -> Any:
        return self.proof


class Pictures:
    def __init__(self, black: set[str], broken: set[str]) -> None:
        self.black, self.broken = black, broken
        self.concurrent = self.most = 0
        self.released: list[str] = []

    async def snapshot(self, channel_id: str, wait: float = 5.0) -> bytes:
        self.concurrent += 1
        self.most = max(self.most, self.concurrent)
        try:
            await asyncio.sleep(0.05)
            if channel_id in self.broken:
                raise GatewayError("no decodable key frame")
            return _jpeg(0 if channel_id in self.black else None)
        finally:
            self.concurrent -= 1


class Areas:
    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.calls: list[tuple[list[AreaChoice], str]] = []

    async def confirm_areas(self, choices: Sequence[AreaChoice], by: str, wall: float) -> list[object]:
        self.calls.append((list(choices), by))
        for c in choices:
            assert c.area is not None
            self.directory.confirm_area(AreaConfirmation(c.channel_id, c.area, by, wall, c.name or ""), 0.0)
        return []


def _directory(*, cam_down: str | None = None) -> Directory:
    directory = Directory()
    directory.add_kindergartens([Kindergarten(KG, "和平区第一幼儿园", "120101")])
    directory.put_device(Device(NVR, KG, "120101", "录像机", 118, "Hik", "DS-7808", "V4", online=True))
    directory.put_device(Device(BOX, KG, "120101", "一键报警", 134, online=True))
    names = ["大门口", "周界东", "操场", "教室一"]
    directory.upsert_channels(
        NVR,
        [Channel(c, NVR, KG, "120101", n, type_code=131, online=c != cam_down) for c, n in zip(CAMS, names)],
    )
    directory.upsert_channels(BOX, [Channel(BOX, BOX, KG, "120101", "一键报警", type_code=134, online=True)])
    return directory


async def _service(
    tmp_path: Any, directory: Directory, pictures: Pictures, desk: Desk, **settings: Any
) -> AcceptanceService:
    store = open_acceptance_store(str(tmp_path / "kgw.db"))
    service = AcceptanceService(
        store,
        directory,
        pictures,
        Areas(directory),
        desk,
        AcceptanceSettings(
            snapshot_concurrency=settings.pop("snapshot_concurrency", 2),
            drill_wait=settings.pop("drill_wait", 30.0),
            **settings,
        ),
        release=pictures.released.append,
    )
    await service.start()
    return service


async def _at(service: AcceptanceService, run_id: str, state: AcceptanceState) -> Acceptance:
    assert await wait_for(
        lambda: (service.active.get(run_id) or None) is None or service.active[run_id].run.state is state, 30
    )
    return await service.get(run_id)


GOOD_PROOF = Proof(
    "drill-alarm-1",
    100.0,
    (
        Target("district", "district-120101", "delivered", 100.3),
        Target("municipal", "municipal", "delivered", 100.5),
        Target("police_mqtt", "mqtt", "delivered", 100.8),
    ),
)


async def test_a_passing_run_goes_through_every_step_and_stores_its_report(tmp_path: Any) -> None:
    directory = _directory()
    pictures, desk = Pictures(set(), set()), Desk(proof=GOOD_PROOF)
    service = await _service(tmp_path, directory, pictures, desk)
    try:
        run = await service.begin(KG, "admin")
        with pytest.raises(AcceptanceBusy):
            await service.begin(KG, "other")
        run = await _at(service, run.id, AcceptanceState.CONFIRM_AREAS)
        assert run.state is AcceptanceState.CONFIRM_AREAS
        assert [c.state for c in run.checks] == [
            CheckState.PASSED,
            CheckState.PASSED,
            CheckState.RUNNING,
            CheckState.PENDING,
        ]
        assert pictures.most == 2 and sorted(pictures.released) == CAMS  # bounded, and each stream let go
        assert {d.id for d in run.devices} == {NVR, BOX}
        areas = {CAMS[0]: AreaTag.ENTRANCE, CAMS[1]: AreaTag.PERIMETER, CAMS[2]: AreaTag.PLAYGROUND}
        areas[CAMS[3]] = AreaTag.CLASSROOM
        run = await service.confirm(run.id, areas, "admin")
        assert run.state is AcceptanceState.DRILL and desk.opened and desk.opened[0][:2] == (KG, run.id)
        assert run.check(CheckName.AREAS).state is CheckState.PASSED  # type: ignore[union-attr]
        assert directory.entrance_camera(KG) == CAMS[0]  # through the provisioning path
        assert [o.kindergarten_id for o in service.overdue] == [KG]  # the reminder at start: never drilled
        desk.pressed.set()
        assert await wait_for(lambda: run.id not in service.active, 30)
        # The reminder refreshes by itself when a run ends, and when a kindergarten is provisioned later.
        assert await wait_for(lambda: not service.overdue, 10)
        later = "12010100112160000200"
        directory.add_kindergartens([Kindergarten(later, "和平区第二幼儿园", "120101")])
        assert await wait_for(lambda: [o.kindergarten_id for o in service.overdue] == [later], 15)
        done = await service.get(run.id)
        assert done.state is AcceptanceState.PASSED and done.drill_alarm_id == "drill-alarm-1"
        assert desk.closed == [KG]
        assert "验收通过" in done.report and done.report.count("data:image/jpeg;base64,") == 4
        assert len(await service.list_for(KG)) == 1
        summary = (await service.summaries())[KG]
        assert summary.state is AcceptanceState.PASSED and summary.drill_passed_at == done.finished_at
        assert not summary.needs_reacceptance
        # a device is replaced: a new ID in the kindergarten, and the NVR reports other DeviceInfo
        directory.put_device(Device("12010100001320000105", KG, "120101", "新摄像机", 132, online=True))
        row = directory.device(NVR)
        assert row is not None
        from dataclasses import replace

        directory.put_device(replace(row, model="DS-9999"))
        summary = (await service.summaries())[KG]
        assert summary.needs_reacceptance
        assert summary.reasons == (
            f"设备 录像机（{NVR}） 的型号由 DS-7808 变为 DS-9999",
            "新设备 新摄像机（12010100001320000105） 未验收",
        )
        assert (await service.summary(KG))["needs_reacceptance"] is True
        assert KG not in {o.kindergarten_id for o in await service.refresh_overdue()}  # it just passed a drill
    finally:
        await service.stop()


async def test_black_offline_and_broken_cameras_fail_the_pictures_and_channels(tmp_path: Any) -> None:
    directory = _directory(cam_down=CAMS[3])
    pictures, desk = Pictures({CAMS[0]}, {CAMS[1]}), Desk(proof=GOOD_PROOF)
    service = await _service(tmp_path, directory, pictures, desk)
    try:
        run = await service.begin(KG, "admin")
        run = await _at(service, run.id, AcceptanceState.CONFIRM_AREAS)
        channels, shots = run.check(CheckName.CHANNELS), run.check(CheckName.PICTURES)
        assert channels is not None and channels.state is CheckState.FAILED and "教室一" in channels.fix
        assert shots is not None and shots.state is CheckState.FAILED
        details = {i.subject: i.detail for i in shots.items}
        assert details[CAMS[0]] == "画面全黑" and "取不到视频画面" in details[CAMS[1]]
        assert details[CAMS[3]] == "摄像机离线，无法取图" and "画面正常" in details[CAMS[2]]
        assert await service.snapshot(run.id, CAMS[0]) is not None  # the black picture is kept as evidence
        # no entrance camera confirmed; the operator ends the run before pressing
        run = await service.confirm(run.id, {CAMS[1]: AreaTag.PERIMETER}, "admin")
        assert run.check(CheckName.AREAS).state is CheckState.FAILED  # type: ignore[union-attr]
        done = await service.finish(run.id, "admin")
        assert done.state is AcceptanceState.FAILED
        assert done.check(CheckName.DRILL).state is CheckState.FAILED  # type: ignore[union-attr]
        with pytest.raises(NotRunning):
            await service.finish(run.id, "admin")
        assert "画面全黑" in done.report and "没有已确认的出入口摄像机" in done.report
        stored = await service.get(run.id)
        assert stored.report == done.report
        overdue = await service.refresh_overdue()
        assert [o.reason for o in overdue] == ["从未通过报警演练"]
        metrics = {
            s.labels["district"]: s.value
            for m in service.collect()
            for s in m.samples
            if m.name == "kgw_acceptance_overdue"
        }
        assert metrics == {"120101": 1}
    finally:
        await service.stop()


async def test_no_press_fails_the_drill_and_an_undelivered_target_is_named(tmp_path: Any) -> None:
    directory = _directory()
    desk = Desk(proof=GOOD_PROOF)
    service = await _service(tmp_path, directory, Pictures(set(), set()), desk, drill_wait=0.3)
    try:
        run = await service.begin(KG, "admin")
        await _at(service, run.id, AcceptanceState.CONFIRM_AREAS)
        await service.confirm(run.id, {CAMS[0]: AreaTag.ENTRANCE, CAMS[1]: AreaTag.PERIMETER}, "admin")
        assert await wait_for(lambda: run.id not in service.active, 30)
        done = await service.get(run.id)
        drill = done.check(CheckName.DRILL)
        assert drill is not None and drill.state is CheckState.FAILED and "没有收到一键报警" in drill.summary
        # again, pressed, but the municipal platform never confirms
        desk.proof = Proof(
            "drill-alarm-1",
            100.0,
            (
                *GOOD_PROOF.targets[:1],
                Target("municipal", "municipal", "failed", None, "timeout"),
                GOOD_PROOF.targets[2],
            ),
        )
        desk.pressed.set()
        run = await service.begin(KG, "admin")
        await _at(service, run.id, AcceptanceState.CONFIRM_AREAS)
        await service.confirm(run.id, {}, "admin")
        assert await wait_for(lambda: run.id not in service.active, 30)
        drill = (await service.get(run.id)).check(CheckName.DRILL)
        assert drill is not None and drill.state is CheckState.FAILED and "市级平台 municipal" in drill.fix
    finally:
        await service.stop()


async def test_abort_and_a_restart_marks_left_runs_aborted(tmp_path: Any) -> None:
    directory = _directory()
    service = await _service(tmp_path, directory, Pictures(set(), set()), Desk(proof=GOOD_PROOF))
    run = await service.begin(KG, "admin")
    await _at(service, run.id, AcceptanceState.CONFIRM_AREAS)
    aborted = await service.abort(run.id, "admin")
    assert aborted.state is AcceptanceState.ABORTED and "已中止" in aborted.report
    left = await service.begin(KG, "admin")
    await _at(service, left.id, AcceptanceState.CONFIRM_AREAS)
    await service._call(service.store.close)  # a crash: nothing more is written
    service._executor.shutdown()
    again = await _service(tmp_path, directory, Pictures(set(), set()), Desk(proof=GOOD_PROOF))
    try:
        assert (await again.get(left.id)).state is AcceptanceState.ABORTED
    finally:
        await again.stop()


class FullUplink(Pictures):
    """Refuses a snapshot (as LiveService does: a LiveError caused by LiveUplinkExceeded) beyond two at once."""

    def __init__(self) -> None:
        super().__init__(set(), set())
        self.refused = 0

    async def snapshot(self, channel_id: str, wait: float = 5.0) -> bytes:
        from gateway.live import LiveError, LiveUplinkExceeded

        if self.concurrent >= 2:
            self.refused += 1
            try:
                raise LiveUplinkExceeded(KG, 4000, 8000, [])
            except LiveUplinkExceeded as exc:
                raise LiveError(f"cannot open {channel_id}: {exc}") from exc
        return await super().snapshot(channel_id, wait)


async def test_a_full_uplink_makes_snapshots_wait_their_turn_not_fail(tmp_path: Any) -> None:
    pictures = FullUplink()
    service = await _service(tmp_path, _directory(), pictures, Desk(proof=GOOD_PROOF), snapshot_concurrency=4)
    try:
        run = await service.begin(KG, "admin")
        run = await _at(service, run.id, AcceptanceState.CONFIRM_AREAS)
        assert run.check(CheckName.PICTURES).state is CheckState.PASSED  # type: ignore[union-attr]
        assert pictures.refused >= 1 and pictures.most == 2
    finally:
        await service.stop()
