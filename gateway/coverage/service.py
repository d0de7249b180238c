"""The coverage collector: gathers the dashboard's inputs on the event loop and evaluates on demand.

What changes every second (devices, channels, presence, confirmed areas) is read
from the :class:`~gateway.registry.directory.Directory` when asked; what costs a
query is refreshed in the background every ``refresh`` seconds: the latest
successful drill per kindergarten (the alarm store), device offline transitions
of the last 24 h (``status_event``), and a sample of every open stream's RTP
counters (:class:`~gateway.coverage.uplink.LossWindow`). Recordings come from
:attr:`gateway.records.RecordService.answers` (the last search per channel).

The history (:meth:`CoverageService.history`) keeps each finished local day in
``coverage_day`` once computed from ``status_event``; a missing day (a new
database, a node that was down) is computed when first asked for, so the 90 days
fill in from whatever status history there is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Final, Protocol

from prometheus_client.core import GaugeMetricFamily

from gateway.coverage import store as sql
from gateway.coverage.history import CoverageDay, day_spans, replay_days
from gateway.coverage.model import (
    CoverageRules,
    CoverageStatus,
    KindergartenCoverage,
    collect_facts,
    evaluate_all,
)
from gateway.coverage.uplink import LossWindow, StreamCounters
from gateway.errors import StoreError
from gateway.gb28181.ids import TIANJIN_DISTRICTS
from gateway.live import LiveStream
from gateway.registry.directory import Directory
from gateway.registry.store_thread import StoreThread

__all__ = ["HISTORY_DAYS", "CoverageService", "StreamSource"]

log = logging.getLogger("kgw.coverage")

HISTORY_DAYS: Final = 90
OTHER_DISTRICT: Final = "other"
CACHE_TTL: Final = 1.0  # s an evaluation is reused (a page load asks summary, list and history at once)


class StreamSource(Protocol):
    """The live service's open streams (``LiveService.streams``)."""

    @property
    def streams(self) -> Mapping[str, LiveStream]: ...


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluation of every kindergarten, and when (wall time)."""

    at: float
    rows: tuple[KindergartenCoverage, ...]


class CoverageService:
    """The dashboard's inputs and evaluations (module doc); ``collect()`` exports ``kgw_kindergartens``."""

    def __init__(
        self,
        directory: Directory,
        store: StoreThread,
        *,
        rules: CoverageRules | None = None,
        drills: Callable[[], Awaitable[dict[str, float]]] | None = None,
        live: StreamSource | None = None,
        recordings: Mapping[str, bool] | None = None,
        districts: frozenset[str] = frozenset(),
        refresh: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.store = store
        self.rules = rules or CoverageRules()
        self.drills_source = drills
        self.live = live
        self.recordings: Mapping[str, bool] = recordings if recordings is not None else {}
        self.districts = districts
        self.refresh = refresh
        self.clock = clock
        self.loss = LossWindow()
        self.last_drills: dict[str, float] = {}
        self.flaps: dict[str, int] = {}
        self._cache: Evaluation | None = None
        self._task: asyncio.Task[None] | None = None
        self._history_lock = asyncio.Lock()

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Read the slow inputs once, then keep them fresh in the background."""
        await self.refresh_inputs()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="kgw-coverage")

    async def stop(self) -> None:
        """Stop refreshing."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            try:
                await self.refresh_inputs()
            except Exception:  # a store hiccup: the previous inputs stay, the next round retries
                log.exception("coverage inputs not refreshed")

    async def refresh_inputs(self) -> None:
        """Sample the streams, reload the drills and the last 24 h of offline transitions."""
        now = self.clock()
        self.sample_streams(now)
        if self.drills_source is not None:
            try:
                self.last_drills = await self.drills_source()
            except StoreError as exc:
                log.warning("coverage: drills not read: %s", exc)
        try:
            self.flaps = await self.store.call(sql.offline_counts, now - 86400.0)
        except StoreError as exc:
            log.warning("coverage: status history not read: %s", exc)
        self._cache = None

    def sample_streams(self, now: float) -> None:
        """Add the RTP counted by every open stream since the previous sample."""
        if self.live is None:
            return
        channels = self.directory.channels
        counters = []
        for stream in self.live.streams.values():
            channel = channels.get(stream.channel_id)
            if channel is None or not channel.kindergarten_id:
                continue
            stats = stream.receiver.stats
            counters.append(
                StreamCounters((stream.key, stream.opened_at), channel.kindergarten_id, stats.received, stats.lost)
            )
        self.loss.sample(counters, now)

    # --- evaluation -----------------------------------------------------------------------

    def _serves(self, district_code: str) -> bool:
        return not self.districts or district_code in self.districts

    def evaluate(self, *, fresh: bool = False) -> Evaluation:
        """Every kindergarten this node serves, evaluated now (reused for :data:`CACHE_TTL` s)."""
        now = self.clock()
        cached = self._cache
        if not fresh and cached is not None and 0 <= now - cached.at < CACHE_TTL:
            return cached
        kindergartens = [k for k in self.directory.kindergartens.values() if self._serves(k.district_code)]
        facts = collect_facts(
            self.directory,
            kindergartens=kindergartens,
            last_drills=self.last_drills,
            recordings=self.recordings,
            uplinks=self.loss.samples(),
            flaps=self.flaps,
        )
        self._cache = Evaluation(now, tuple(evaluate_all(facts, self.rules, now)))
        return self._cache

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """``kgw_kindergartens{district,status}``: every status of every district with kindergartens."""
        counts: dict[tuple[str, str], int] = {}
        for row in self.evaluate().rows:
            code = row.facts.district_code
            label = code if code in TIANJIN_DISTRICTS or code in self.districts else OTHER_DISTRICT
            counts[(label, row.status.value)] = counts.get((label, row.status.value), 0) + 1
        family = GaugeMetricFamily(
            "kgw_kindergartens",
            "Kindergartens by district and coverage status: complete (达标), partial (部分接入), missing (未接入)",
            labels=["district", "status"],
        )
        for district in sorted({d for d, _ in counts}):
            for status in CoverageStatus:
                family.add_metric([district, status.value], counts.get((district, status.value), 0))
        yield family

    # --- history ------------------------------------------------------------------------------

    async def history(self, days: int = HISTORY_DAYS) -> list[CoverageDay]:
        """The last ``days`` finished local days (yesterday back), per district; missing days computed and kept."""
        today = datetime.fromtimestamp(self.clock()).date()
        first = today - timedelta(days=days)
        async with self._history_lock:  # two page loads must not compute the same days twice
            kept = await self.store.call(sql.load_days, first.isoformat())
            have = {row.day for row in kept if self._serves(row.district_code)}
            wanted = [d for d in _days(first, today - timedelta(days=1)) if d.isoformat() not in have]
            if wanted:
                computed = await self._compute_days(wanted)
                await self.store.call(sql.save_days, computed)
                kept = [*kept, *computed]
        return sorted((row for row in kept if self._serves(row.district_code)), key=lambda r: (r.day, r.district_code))

    async def _compute_days(self, wanted: list[date]) -> list[CoverageDay]:
        spans = [span for d in wanted for span in day_spans(d, d)]
        directory = self.directory
        kindergartens = {
            k.id: k.district_code for k in directory.kindergartens.values() if self._serves(k.district_code)
        }
        devices: dict[str, str] = {}
        current: dict[str, bool] = {}
        for device_id, entry in directory.devices.items():
            current[device_id] = entry.row.online
            if entry.row.kindergarten_id in kindergartens:
                devices[device_id] = entry.row.kindergarten_id
        for kg in kindergartens:  # devices serving a kindergarten's channels (a lower platform)
            for channel in directory.channels_of_kindergarten(kg):
                devices.setdefault(channel.device_id, kg)
        before, events = await self.store.call(sql.device_events, spans[0].start, spans[-1].end)
        return await asyncio.to_thread(replay_days, spans, kindergartens, devices, current, before, events)


def _days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)
