"""Each kindergarten's uplink budget: what its devices may send upstream at once.

A kindergarten's line (often a 20–50 Mbit/s business line shared with the office) carries
every stream its cameras send to the gateway: live main and sub streams, the streams
upper platforms pull through the gateway's live service, playbacks and downloads. Every
such upstream session takes a :class:`Reservation` with an estimated bitrate (main ≈ 4
Mbit/s, sub ≈ 0.75 Mbit/s by default), replaced by the measured rate once the session has
run long enough (``measure``). A session that would take the sum over the budget raises
:class:`UplinkExceeded`, whose message names what uses the line (zh-CN and English), so a
caller can try the sub-stream instead or refuse (HTTP 503, SIP 486/503).

Use from another service (playback, download)::

    try:
        reservation = budget.reserve(kindergarten_id, 4000, "playback 1201…0001 前门", kind="playback")
    except UplinkExceeded as exc:
        ...  # 503 with str(exc)
    ...
    reservation.release()  # when the session ends (idempotent)

No I/O and no clock: ``measure`` callbacks bring the rates in.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import GatewayError

__all__ = [
    "DEFAULT_BUDGET_KBPS",
    "DEFAULT_MAIN_KBPS",
    "DEFAULT_SUB_KBPS",
    "Reservation",
    "UplinkBudget",
    "UplinkExceeded",
]

DEFAULT_BUDGET_KBPS = 20_000  # 20 Mbit/s per kindergarten unless configured
DEFAULT_MAIN_KBPS = 4_000  # a 1080p/720p main stream
DEFAULT_SUB_KBPS = 768  # a CIF/360p sub-stream


@dataclass(eq=False)
class Reservation:
    """One upstream session's share of a kindergarten's uplink."""

    id: int
    kindergarten_id: str
    estimate_kbps: int
    what: str
    kind: str = "live"
    channel_id: str | None = None
    measure: Callable[[], float | None] | None = None  # measured kbit/s, None while unknown
    released: bool = False
    _budget: UplinkBudget | None = field(default=None, repr=False)

    @property
    def kbps(self) -> int:
        """What it counts: the measured rate once known, else the estimate."""
        if self.measure is not None:
            measured = self.measure()
            if measured is not None and measured > 0:
                return round(measured)
        return self.estimate_kbps

    @property
    def measured(self) -> bool:
        """True when :attr:`kbps` is a measurement."""
        if self.measure is None:
            return False
        value = self.measure()
        return value is not None and value > 0

    def update(self, estimate_kbps: int, what: str | None = None) -> None:
        """A new estimate (the session turned out to be another stream); never refused."""
        self.estimate_kbps = estimate_kbps
        if what is not None:
            self.what = what

    def release(self) -> None:
        """The session ended (idempotent)."""
        if self.released:
            return
        self.released = True
        if self._budget is not None:
            self._budget._forget(self)

    def view(self) -> dict[str, Any]:
        """The API's row for this session."""
        return {
            "what": self.what,
            "kind": self.kind,
            "channel_id": self.channel_id,
            "kbps": self.kbps,
            "estimate_kbps": self.estimate_kbps,
            "measured": self.measured,
        }


class UplinkExceeded(GatewayError):
    """A session would take a kindergarten over its uplink budget; the message names what uses it."""

    def __init__(self, kindergarten_id: str, wanted_kbps: int, budget_kbps: int, users: list[Reservation]) -> None:
        self.kindergarten_id = kindergarten_id
        self.wanted_kbps = wanted_kbps
        self.budget_kbps = budget_kbps
        self.used_kbps = sum(r.kbps for r in users)
        self.users = [r.view() for r in users]
        listing = "; ".join(f"{r['what']} {_mbps(r['kbps'])}" for r in self.users) or "-"
        super().__init__(
            f"幼儿园 {kindergarten_id} 上行带宽不足: 已用 {_mbps(self.used_kbps)} / 预算 {_mbps(budget_kbps)}, "
            f"新会话需 {_mbps(wanted_kbps)}; 正在使用: {listing} "
            f"(uplink budget of kindergarten {kindergarten_id} exceeded: {_mbps(self.used_kbps)} of "
            f"{_mbps(budget_kbps)} in use, the new session needs {_mbps(wanted_kbps)}; in use by: {listing})"
        )


def _mbps(kbps: int) -> str:
    return f"{kbps / 1000:.1f} Mbit/s"


class UplinkBudget:
    """Reservations against each kindergarten's uplink budget (kbit/s)."""

    def __init__(
        self,
        default_kbps: int = DEFAULT_BUDGET_KBPS,
        overrides: Mapping[str, int] | None = None,
        *,
        main_kbps: int = DEFAULT_MAIN_KBPS,
        sub_kbps: int = DEFAULT_SUB_KBPS,
    ) -> None:
        self.default_kbps = default_kbps  # 0: no limit
        self.overrides = dict(overrides or {})
        self.main_kbps = main_kbps
        self.sub_kbps = sub_kbps
        self.refused = 0
        self._ids = itertools.count(1)
        self._by_kg: dict[str, list[Reservation]] = {}

    def budget_of(self, kindergarten_id: str) -> int:
        """The kindergarten's budget in kbit/s (0: unlimited)."""
        return self.overrides.get(kindergarten_id, self.default_kbps)

    def used(self, kindergarten_id: str) -> int:
        """kbit/s its sessions use now (measured where known)."""
        return sum(r.kbps for r in self._by_kg.get(kindergarten_id, ()))

    def fits(self, kindergarten_id: str, kbps: int) -> bool:
        """Whether a session of ``kbps`` would stay within the budget."""
        budget = self.budget_of(kindergarten_id)
        return budget <= 0 or self.used(kindergarten_id) + kbps <= budget

    def reserve(
        self,
        kindergarten_id: str,
        kbps: int,
        what: str,
        *,
        kind: str = "live",
        channel_id: str | None = None,
        measure: Callable[[], float | None] | None = None,
    ) -> Reservation:
        """Take ``kbps`` of the kindergarten's uplink, or raise :class:`UplinkExceeded`."""
        if not self.fits(kindergarten_id, kbps):
            self.refused += 1
            raise self.exceeded(kindergarten_id, kbps)
        reservation = Reservation(next(self._ids), kindergarten_id, kbps, what, kind, channel_id, measure, _budget=self)
        self._by_kg.setdefault(kindergarten_id, []).append(reservation)
        return reservation

    def exceeded(
        self, kindergarten_id: str, kbps: int, *, error_type: type[UplinkExceeded] = UplinkExceeded
    ) -> UplinkExceeded:
        """The error a session of ``kbps`` would get now (for callers that tried alternatives first)."""
        users = sorted(self._by_kg.get(kindergarten_id, ()), key=lambda r: -r.kbps)
        return error_type(kindergarten_id, kbps, self.budget_of(kindergarten_id), users)

    def sessions(self, kindergarten_id: str) -> list[Reservation]:
        """The kindergarten's current reservations."""
        return list(self._by_kg.get(kindergarten_id, ()))

    def usage(self, kindergarten_id: str) -> dict[str, Any]:
        """The API's view of one kindergarten: budget, use, and each session."""
        sessions = self.sessions(kindergarten_id)
        budget = self.budget_of(kindergarten_id)
        used = sum(r.kbps for r in sessions)
        return {
            "kindergarten_id": kindergarten_id,
            "budget_kbps": budget,
            "used_kbps": used,
            "free_kbps": None if budget <= 0 else max(0, budget - used),
            "sessions": [r.view() for r in sorted(sessions, key=lambda r: r.id)],
        }

    def summary(self, kindergarten_ids: Iterable[str]) -> dict[str, dict[str, int]]:
        """``{kindergarten: {"budget_kbps", "used_kbps", "sessions"}}`` for lists."""
        return {
            k: {"budget_kbps": self.budget_of(k), "used_kbps": self.used(k), "sessions": len(self._by_kg.get(k, ()))}
            for k in kindergarten_ids
        }

    def _forget(self, reservation: Reservation) -> None:
        held = self._by_kg.get(reservation.kindergarten_id)
        if held is None:
            return
        if reservation in held:
            held.remove(reservation)
        if not held:
            del self._by_kg[reservation.kindergarten_id]
