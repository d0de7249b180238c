"""Running an acceptance (验收): the four checks in order, the operator's steps, the stored report.

A run goes ``running`` (channels, then every camera's snapshot, cameras in
parallel with a bound) → ``confirm_areas`` (the operator picks each camera's
area on its snapshot; the confirmation goes through the one provisioning path,
so police sharing follows it at once) → ``drill`` (a drill window is open on the
alarm service; the guard presses the one-button alarm; the gateway waits for
its delivery proof) → ``passed`` / ``failed`` with the HTML report stored. The
operator may finish early (what was not checked is *skipped* and the run fails)
or abort. One run per kindergarten at a time; any number over time.

The reminder (:meth:`AcceptanceService.refresh_overdue`, every
``check_interval`` s) lists kindergartens whose last passed drill is older than
``overdue_after`` s (or that never passed one), per district for the metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

from prometheus_client.core import GaugeMetricFamily, Metric

from gateway.acceptance.model import (
    Acceptance,
    AcceptanceState,
    AcceptanceSummary,
    CheckName,
    CheckResult,
    CheckState,
    DeviceRecord,
)
from gateway.acceptance.picture import measure_jpeg
from gateway.acceptance.report import render_report
from gateway.acceptance.rules import (
    CameraArea,
    CameraPicture,
    DrillProofLike,
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
from gateway.acceptance.store import AcceptanceStore
from gateway.errors import GatewayError
from gateway.gb28181.ids import TIANJIN_DISTRICTS
from gateway.registry.directory import CAMERA_TYPES, Directory
from gateway.registry.model import AreaTag
from gateway.registry.provisioning import AreaChoice
from gateway.uplink import UplinkExceeded

if TYPE_CHECKING:
    from gateway.live import LiveService

__all__ = [
    "AcceptanceBusy",
    "AcceptanceError",
    "AcceptanceService",
    "AcceptanceSettings",
    "AreaConfirmer",
    "DrillDesk",
    "NotRunning",
    "Overdue",
    "SnapshotSource",
    "UnknownKindergarten",
    "UnknownRun",
    "idle_closer",
]

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


class AcceptanceError(GatewayError):
    """A run cannot do what was asked."""


class UnknownKindergarten(AcceptanceError, KeyError):
    """No such kindergarten in the directory."""


class UnknownRun(AcceptanceError, KeyError):
    """No such run."""


class AcceptanceBusy(AcceptanceError):
    """The kindergarten has a run in progress already."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"an acceptance of this kindergarten is in progress ({run_id})")
        self.run_id = run_id


class NotRunning(AcceptanceError):
    """The run is not at the step the request is for (finished, or not yet there)."""


class SnapshotSource(Protocol):
    """Takes a camera's picture (:meth:`gateway.live.LiveService.snapshot`)."""

    async def snapshot(self, channel_id: str, wait: float = 5.0) -> bytes: ...


class DrilledAlarm(Protocol):
    """What the run needs of the drill alarm (:class:`gateway.alarms.model.Alarm`)."""

    @property
    def id(self) -> str: ...


class DrillDesk(Protocol):
    """The alarm service's drill windows (contract of issue 13, ``gateway/alarms/drills.py``)."""

    def open_drill(self, kindergarten_id: str, ref: str, until: float) -> None: ...

    def close_drill(self, kindergarten_id: str) -> None: ...

    async def wait_drill(self, kindergarten_id: str, timeout: float) -> Any: ...

    async def wait_drill_proof(self, alarm_id: str, timeout: float) -> Any: ...

    def drill_proof(self, alarm_id: str) -> Any: ...


class AreaConfirmer(Protocol):
    """The provisioning path that stores and applies confirmed areas (police sharing follows it)."""

    async def confirm_areas(self, choices: Sequence[AreaChoice], by: str, wall: float) -> Sequence[object]: ...


REMINDER_POLL = 5.0  # s between looks at the directory's kindergartens between two reminder refreshes


@dataclass(frozen=True, slots=True)
class AcceptanceSettings:
    """Timing of a run and of the reminder."""

    snapshot_wait: float = 8.0  # s for one camera to give a decodable key frame
    snapshot_concurrency: int = 8  # cameras opened at once (the kindergarten's uplink shares them)
    drill_wait: float = 180.0  # s for the guard to press the alarm once the drill window opened
    proof_wait: float = 60.0  # s for every upper level to confirm the drill's delivery
    overdue_after: float = 180 * 86400.0  # a passed drill older than this is due again
    check_interval: float = 3600.0  # s between reminder refreshes


@dataclass(frozen=True, slots=True)
class Overdue:
    """A kindergarten whose drill is due, and why (zh-CN)."""

    kindergarten_id: str
    name: str
    district_code: str
    last_drill: float | None
    reason: str


@dataclass(slots=True)
class _Active:
    """A run in progress: its latest value, the snapshots it took, its task."""

    run: Acceptance
    snapshots: dict[str, bytes] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    drill_task: asyncio.Task[None] | None = None
    drill_open: bool = False
    waiting_since: float | None = None  # wall time the drill window opened


def _pending_checks() -> tuple[CheckResult, ...]:
    return tuple(CheckResult(name) for name in CheckName)


class AcceptanceService:
    """Runs acceptances of the directory's kindergartens and keeps them in the store."""

    def __init__(
        self,
        store: AcceptanceStore,
        directory: Directory,
        snapshots: SnapshotSource,
        areas: AreaConfirmer,
        drills: DrillDesk,
        settings: AcceptanceSettings = AcceptanceSettings(),
        *,
        release: Callable[[str], None] = lambda channel_id: None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.directory = directory
        self.snapshots = snapshots
        self.areas = areas
        self.drills = drills
        self.settings = settings
        self.release = release  # after a snapshot: end the stream if the run alone opened it
        self.wall = wall
        self.active: dict[str, _Active] = {}  # run id -> run in progress
        self.overdue: list[Overdue] = []
        self.overdue_checked_at: float | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kgw-acceptance-store")
        self._reminder: asyncio.Task[None] | None = None
        self._recheck = asyncio.Event()  # a run finished: the reminder list may have changed
        self._checked_kindergartens = -1  # how many kindergartens the last reminder saw

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Mark runs a stopped gateway left open as aborted; start the reminder."""
        for run in await self._call(self.store.unfinished):
            await self._call(self.store.put, replace(run, state=AcceptanceState.ABORTED, finished_at=self.wall()))
        self._reminder = asyncio.get_running_loop().create_task(self._remind(), name="kgw-acceptance-reminder")

    async def stop(self) -> None:
        """Abort the runs in progress, stop the reminder, close the store."""
        if self._reminder is not None:
            self._reminder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reminder
        for run_id in list(self.active):
            with contextlib.suppress(AcceptanceError):
                await self.abort(run_id, "system")
        await self._call(self.store.close)
        self._executor.shutdown(wait=True)

    async def _call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    # --- runs ----------------------------------------------------------------------------------

    def device_records(self, kindergarten_id: str) -> tuple[DeviceRecord, ...]:
        """The kindergarten's devices as they are now (what a run records, and re-acceptance compares)."""
        rows = [e.row for e in self.directory.devices.values() if e.row.kindergarten_id == kindergarten_id]
        return tuple(
            DeviceRecord(
                d.id,
                d.name,
                d.device_type,
                d.manufacturer,
                d.model,
                d.firmware,
                d.online,
                len(self.directory.channels_of_device(d.id)),
            )
            for d in sorted(rows, key=lambda d: d.id)
        )

    def cameras(self, kindergarten_id: str) -> list[tuple[str, str]]:
        """The kindergarten's cameras (id, name), sorted."""
        return sorted(
            (c.id, c.name)
            for c in self.directory.channels_of_kindergarten(kindergarten_id)
            if c.type_code in CAMERA_TYPES
        )

    async def begin(self, kindergarten_id: str, actor: str) -> Acceptance:
        """Start a run (AcceptanceBusy while one runs for the kindergarten); the checks go on in a task."""
        kindergarten = self.directory.kindergartens.get(kindergarten_id)
        if kindergarten is None:
            raise UnknownKindergarten(kindergarten_id)
        for active in self.active.values():
            if active.run.kindergarten_id == kindergarten_id:
                raise AcceptanceBusy(active.run.id)
        run = Acceptance(
            id=uuid.uuid4().hex,
            kindergarten_id=kindergarten_id,
            district_code=kindergarten.district_code,
            started_by=actor[:120],
            started_at=self.wall(),
            checks=_pending_checks(),
            devices=self.device_records(kindergarten_id),
        )
        await self._call(self.store.put, run)
        active = self.active[run.id] = _Active(run)
        active.task = asyncio.get_running_loop().create_task(self._checks(active), name=f"kgw-acceptance-{run.id}")
        log.info("acceptance %s of %s started by %s", run.id, kindergarten_id, actor)
        return run

    async def get(self, run_id: str) -> Acceptance:
        """A run, in progress or stored (UnknownRun otherwise)."""
        active = self.active.get(run_id)
        if active is not None:
            return active.run
        run = await self._call(self.store.get, run_id)
        if run is None:
            raise UnknownRun(run_id)
        return run

    async def snapshot(self, run_id: str, channel_id: str) -> bytes | None:
        """A snapshot the run took (from memory while it runs, else the store)."""
        active = self.active.get(run_id)
        if active is not None:
            return active.snapshots.get(channel_id)
        return await self._call(self.store.snapshot, run_id, channel_id)

    async def list_for(self, kindergarten_id: str, limit: int = 50) -> list[Acceptance]:
        """A kindergarten's runs, newest first (without reports)."""
        runs = await self._call(self.store.list_for, kindergarten_id, limit)
        return [self.active[r.id].run if r.id in self.active else r for r in runs]

    def _set(self, active: _Active, check: CheckResult | None = None, **changes: Any) -> None:
        run = active.run
        if check is not None:
            changes["checks"] = tuple(check if c.name is check.name else c for c in run.checks)
        active.run = replace(run, **changes)

    async def _checks(self, active: _Active) -> None:
        """Checks 1 and 2, then wait for the operator's areas."""
        try:
            kg = active.run.kindergarten_id
            started = time.perf_counter()
            channels = channels_check(self._expected(kg))
            self._set(active, replace(channels, elapsed=time.perf_counter() - started))
            self._set(active, CheckResult(CheckName.PICTURES, CheckState.RUNNING, "正在取图…"))
            started = time.perf_counter()
            pictures = await self._pictures(active)
            self._set(active, replace(pictures_check(pictures), elapsed=time.perf_counter() - started))
            self._set(
                active,
                CheckResult(CheckName.AREAS, CheckState.RUNNING, "请在每路摄像机的快照上确认区域"),
                state=AcceptanceState.CONFIRM_AREAS,
            )
            await self._call(self.store.put, active.run)
        except Exception as exc:  # a bug must not leave the run hanging: it fails with the reason
            log.exception("acceptance %s: checks failed", active.run.id)
            await self._finalize(active, AcceptanceState.FAILED, note=f"内部错误：{exc}")

    def _expected(self, kindergarten_id: str) -> list[ExpectedDevice]:
        directory = self.directory
        devices = []
        for record in self.device_records(kindergarten_id):
            channels = tuple(
                ExpectedChannel(c.id, c.name, directory.is_up(c), c.type_code in CAMERA_TYPES)
                for c in sorted(directory.channels_of_device(record.id), key=lambda c: c.id)
            )
            devices.append(ExpectedDevice(record.id, record.name, record.online, channels))
        return devices

    async def _pictures(self, active: _Active) -> list[CameraPicture]:
        """Every camera's snapshot, at most ``snapshot_concurrency`` at once; each JPEG kept."""
        gate = asyncio.Semaphore(max(1, self.settings.snapshot_concurrency))
        run_id = active.run.id

        async def one(channel_id: str, name: str) -> CameraPicture:
            channel = self.directory.channels.get(channel_id)
            if channel is None or not self.directory.is_up(channel):
                return CameraPicture(channel_id, name, False, "摄像机离线，无法取图")
            async with gate:
                started = time.perf_counter()
                try:
                    jpeg = await self._snapshot(channel_id, started + self.settings.snapshot_wait * 2)
                except (GatewayError, TimeoutError) as exc:
                    return CameraPicture(channel_id, name, False, f"取不到视频画面（{exc}）"[:200])
                finally:
                    with contextlib.suppress(Exception):
                        self.release(channel_id)
                took = time.perf_counter() - started
            stats = await asyncio.to_thread(measure_jpeg, jpeg)
            ok, detail = judge_picture(stats)
            if jpeg:
                active.snapshots[channel_id] = jpeg
                await self._call(self.store.put_snapshot, run_id, channel_id, self.wall(), jpeg)
            return CameraPicture(channel_id, name, ok, detail, bool(jpeg), took)

        cameras = self.cameras(active.run.kindergarten_id)
        return list(await asyncio.gather(*(one(c, n) for c, n in cameras)))

    async def _snapshot(self, channel_id: str, deadline: float) -> bytes:
        """A snapshot; while the kindergarten's uplink is full (the other cameras' snapshots), try again."""
        while True:
            try:
                return await self.snapshots.snapshot(channel_id, self.settings.snapshot_wait)
            except GatewayError as exc:
                full = isinstance(exc, UplinkExceeded) or isinstance(exc.__cause__, UplinkExceeded)
                if not full or time.perf_counter() >= deadline:
                    raise
                await asyncio.sleep(0.2)  # a sibling's stream is released within moments

    async def confirm(self, run_id: str, choices: Mapping[str, AreaTag], actor: str) -> Acceptance:
        """The operator's areas for the run's cameras: stored through provisioning, then the drill opens.

        Allowed while waiting for areas or for the drill (a correction re-evaluates the check).
        ValueError for a channel that is not one of the run's cameras.
        """
        active = self._active(run_id, (AcceptanceState.CONFIRM_AREAS, AcceptanceState.DRILL))
        cameras = dict(self.cameras(active.run.kindergarten_id))
        foreign = sorted(set(choices) - set(cameras))
        if foreign:
            raise ValueError(f"not a camera of this kindergarten: {', '.join(foreign[:5])}")
        if choices:
            await self.areas.confirm_areas(
                [AreaChoice(c, area, cameras[c]) for c, area in sorted(choices.items())], actor, self.wall()
            )
        started = time.perf_counter()
        areas = areas_check(
            [
                CameraArea(c, name, ch.confirmed_area if (ch := self.directory.channels.get(c)) is not None else None)
                for c, name in sorted(cameras.items())
            ]
        )
        self._set(active, replace(areas, elapsed=time.perf_counter() - started))
        if not active.drill_open:
            try:
                self._open_drill(active)
            except GatewayError as exc:  # the alarm service refused the window: the drill cannot be proven
                self._set(
                    active,
                    CheckResult(
                        CheckName.DRILL,
                        CheckState.FAILED,
                        f"无法开启演练（{exc}）",
                        "报警服务拒绝了演练窗口：请检查网关的报警配置后重新验收。",
                    ),
                )
                return await self._finalize(active)
        await self._call(self.store.put, active.run)
        return active.run

    def _open_drill(self, active: _Active) -> None:
        run = active.run
        now = self.wall()
        self.drills.open_drill(run.kindergarten_id, run.id, now + self.settings.drill_wait + self.settings.proof_wait)
        active.drill_open = True
        active.waiting_since = now
        self._set(
            active,
            CheckResult(CheckName.DRILL, CheckState.RUNNING, "请按下一键报警"),
            state=AcceptanceState.DRILL,
        )
        active.drill_task = asyncio.get_running_loop().create_task(self._drill(active), name=f"kgw-drill-{run.id}")

    async def _drill(self, active: _Active) -> None:
        """Wait for the guard's press, then for every level's delivery; then the run is done."""
        settings, kg = self.settings, active.run.kindergarten_id
        started = time.perf_counter()
        proof: DrillProofLike | None = None
        pressed = False
        try:
            try:
                alarm = await self.drills.wait_drill(kg, settings.drill_wait)
            except (TimeoutError, GatewayError):
                alarm = None
            if alarm is not None:
                pressed = True
                alarm_id = str(alarm.id)
                self._set(
                    active,
                    CheckResult(CheckName.DRILL, CheckState.RUNNING, "已收到演练报警，正在确认各级送达…"),
                    drill_alarm_id=alarm_id,
                )
                await self._call(self.store.put, active.run)
                try:
                    proof = await self.drills.wait_drill_proof(alarm_id, settings.proof_wait)
                except (TimeoutError, GatewayError):
                    try:
                        proof = self.drills.drill_proof(alarm_id)  # what reached whom by now
                    except GatewayError:
                        proof = None
            check = drill_check(proof, waited=settings.drill_wait, pressed=pressed)
            self._set(active, replace(check, elapsed=time.perf_counter() - started))
            await self._finalize(active)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("acceptance %s: drill failed", active.run.id)
            await self._finalize(active, AcceptanceState.FAILED, note=f"内部错误：{exc}")

    def _active(self, run_id: str, states: Sequence[AcceptanceState]) -> _Active:
        active = self.active.get(run_id)
        if active is None:
            raise NotRunning("the run is over (or unknown)")
        if active.run.state not in states:
            raise NotRunning(f"the run is {active.run.state.value}")
        return active

    async def finish(self, run_id: str, actor: str) -> Acceptance:
        """End the run now: checks not done are skipped (and the run fails); the report is stored."""
        active = self._active(run_id, [s for s in AcceptanceState if not s.finished])
        log.info("acceptance %s finished early by %s", run_id, actor)
        await self._cancel(active)
        drill = active.run.check(CheckName.DRILL)
        if active.run.state is AcceptanceState.DRILL and drill is not None and drill.state is CheckState.RUNNING:
            self._set(
                active,
                CheckResult(
                    CheckName.DRILL,
                    CheckState.FAILED,
                    "验收在演练报警送达前被结束",
                    "请让保安按下一键报警，等待各级送达确认后再结束验收。",
                ),
            )
        return await self._finalize(active)

    async def abort(self, run_id: str, actor: str) -> Acceptance:
        """Abandon the run (state aborted); its report says so."""
        active = self._active(run_id, [s for s in AcceptanceState if not s.finished])
        log.info("acceptance %s aborted by %s", run_id, actor)
        await self._cancel(active)
        return await self._finalize(active, AcceptanceState.ABORTED)

    async def _cancel(self, active: _Active) -> None:
        for task in (active.task, active.drill_task):
            if task is not None and not task.done() and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _finalize(self, active: _Active, state: AcceptanceState | None = None, *, note: str = "") -> Acceptance:
        """Skip what was not checked, decide the verdict, close the drill, render and store the report."""
        if active.run.state.finished:
            return active.run
        if active.drill_open:
            with contextlib.suppress(Exception):
                self.drills.close_drill(active.run.kindergarten_id)
            active.drill_open = False
        fix = note or "本次验收未完成该项检查，请重新验收。"
        checks = tuple(
            c
            if c.state in (CheckState.PASSED, CheckState.FAILED)
            else CheckResult(c.name, CheckState.SKIPPED, "未检查", fix, c.items, c.elapsed)
            for c in active.run.checks
        )
        if state is None:
            state = (
                AcceptanceState.PASSED if all(c.state is CheckState.PASSED for c in checks) else AcceptanceState.FAILED
            )
        self._set(active, None, checks=checks, state=state, finished_at=self.wall())
        run = active.run
        kindergarten = self.directory.kindergartens.get(run.kindergarten_id)
        names = {c.id: c.name for c in self.directory.channels_of_kindergarten(run.kindergarten_id)}
        report = render_report(
            run,
            kindergarten_name=kindergarten.name if kindergarten is not None else run.kindergarten_id,
            district_name=TIANJIN_DISTRICTS.get(run.district_code, ""),
            snapshots=active.snapshots,
            channel_names=names,
        )
        active.run = run = replace(run, report=report)
        try:
            await self._call(self.store.put, run)
        finally:
            self.active.pop(run.id, None)
            self._recheck.set()
        log.info("acceptance %s of %s: %s", run.id, run.kindergarten_id, run.state.value)
        return run

    # --- summaries, re-acceptance, reminder ------------------------------------------------------

    async def summaries(self) -> dict[str, AcceptanceSummary]:
        """Each kindergarten's latest run, with 需重新验收 and its reasons (the coverage contract)."""
        latest = await self._call(self.store.latest_by_kindergarten)
        passed = await self._call(self.store.latest_passed_devices)
        out = {}
        for kg, summary in latest.items():
            then = passed.get(kg)
            reasons = reacceptance_reasons(then, self.device_records(kg)) if then is not None else []
            out[kg] = replace(summary, needs_reacceptance=bool(reasons), reasons=tuple(reasons))
        return out

    async def summary(self, kindergarten_id: str) -> dict[str, Any]:
        """One kindergarten's acceptance standing: latest run, last passed drill, re-acceptance."""
        summaries = await self.summaries()
        summary = summaries.get(kindergarten_id)
        return {
            "kindergarten_id": kindergarten_id,
            "latest": None
            if summary is None
            else {
                "id": summary.id,
                "state": summary.state.value,
                "state_label": summary.state.label,
                "started_at": summary.started_at,
                "finished_at": summary.finished_at,
            },
            "drill_passed_at": summary.drill_passed_at if summary is not None else None,
            "needs_reacceptance": bool(summary and summary.needs_reacceptance),
            "reasons": list(summary.reasons) if summary is not None else [],
            "active": next((a.run.id for a in self.active.values() if a.run.kindergarten_id == kindergarten_id), None),
        }

    async def refresh_overdue(self) -> list[Overdue]:
        """Recompute the kindergartens whose drill is due."""
        latest = await self._call(self.store.latest_by_kindergarten)
        now = self.wall()
        overdue = []
        for kg in sorted(self.directory.kindergartens.values(), key=lambda k: (k.district_code, k.id)):
            summary = latest.get(kg.id)
            last = summary.drill_passed_at if summary is not None else None
            reason = overdue_reason(last, now, self.settings.overdue_after)
            if reason is not None:
                overdue.append(Overdue(kg.id, kg.name, kg.district_code, last, reason))
        self.overdue, self.overdue_checked_at = overdue, now
        return overdue

    async def _remind(self) -> None:
        """Refresh the reminder every ``check_interval`` s, and at once after a run finished or when
        the directory's kindergartens changed (a gateway starts before its kindergartens are
        provisioned: the list must not stay empty for an interval)."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            if self._recheck.is_set() or loop.time() >= due or self._kindergartens_changed():
                self._recheck.clear()
                self._checked_kindergartens = len(self.directory.kindergartens)
                try:
                    await self.refresh_overdue()
                except GatewayError as exc:
                    log.warning("acceptance reminder not refreshed: %s", exc)
                due = loop.time() + self.settings.check_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._recheck.wait(), min(REMINDER_POLL, max(0.0, due - loop.time())))

    def _kindergartens_changed(self) -> bool:
        return len(self.directory.kindergartens) != self._checked_kindergartens

    def collect(self) -> Iterator[Metric]:
        """``kgw_acceptance_overdue{district}`` and runs in progress (labels bounded by district)."""
        overdue = GaugeMetricFamily(
            "kgw_acceptance_overdue",
            "Kindergartens whose last passed drill (验收演练) is older than the configured period, by district",
            labels=["district"],
        )
        counts: dict[str, int] = {k.district_code: 0 for k in self.directory.kindergartens.values()}
        for item in self.overdue:
            counts[item.district_code] = counts.get(item.district_code, 0) + 1
        for district, count in sorted(counts.items()):
            overdue.add_metric([district], count)
        yield overdue
        running = GaugeMetricFamily("kgw_acceptance_running", "Acceptance runs in progress")
        running.add_metric([], len(self.active))
        yield running


def idle_closer(live: LiveService) -> Callable[[str], None]:
    """After a run's snapshot: end the channel's streams if nobody watches them (no linger per camera)."""

    def release(channel_id: str) -> None:
        streams = live.streams_of(channel_id)
        if streams and all(s.fanout.consumer_count == 0 for s in streams):
            live.close_channel(channel_id, "acceptance_snapshot")

    return release
