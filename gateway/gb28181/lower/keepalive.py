"""Keepalive bookkeeping of the lower side (docs/gb28181.md §4, §16.2): what counts as a failure, when the server is gone.

:class:`Keepalives` only counts; the client sends and acts on the
:class:`KeepaliveResult`. Answers are matched to an online *session* (bumped
each time the registration comes online), so a late answer to a keepalive of
an earlier session changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["KeepaliveOutcome", "KeepaliveRef", "KeepaliveResult", "Keepalives"]


class KeepaliveOutcome(Enum):
    """What a keepalive answer (or its absence) means."""

    FINE = "fine"  # answered 2xx, or nothing to count
    FAILED = "failed"  # a failure, counted; the server is still considered there
    LOST = "lost"  # the failures in a row reached the policy's limit: the server is gone
    FORGOTTEN = "forgotten"  # the server says it does not know us (e.g. 404 after its restart)


@dataclass(frozen=True, slots=True)
class KeepaliveResult:
    """An outcome, the single failure's ``error`` and, for LOST, the ``reason`` to go offline with."""

    outcome: KeepaliveOutcome
    error: str = ""
    reason: str = ""


FINE = KeepaliveResult(KeepaliveOutcome.FINE)


@dataclass(frozen=True, slots=True)
class KeepaliveRef:
    """Which keepalive a request was: the online session and its number in it."""

    session: int
    seq: int


class Keepalives:
    """Counts keepalives and their failures in a row for one client.

    ``missed``: failures in a row that mean the server is gone (None: never).
    ``unanswered_is_missed``: a keepalive still unanswered when the next is due
    counts as missed — over UDP, waiting for the transaction's own time-out
    (32 s) would take minutes to notice a restarted server; a late 200 still
    clears the count. ``forgotten``: statuses meaning the server lost us.
    """

    def __init__(self, *, missed: int | None, unanswered_is_missed: bool, forgotten: frozenset[int]) -> None:
        self.missed = missed
        self.unanswered_is_missed = unanswered_is_missed
        self.forgotten = forgotten
        self.failures = 0  # in a row, this session
        self.sent = 0  # keepalives sent, ever
        self.session = 0
        self._seq = 0
        self._unanswered: set[int] = set()

    def begin_session(self) -> None:
        """The registration came online: answers to earlier keepalives no longer count."""
        self.session += 1
        self._unanswered.clear()
        self.failures = 0

    def interval_passed(self) -> KeepaliveResult:
        """The next keepalive is due: count the previous one as missed if it is still unanswered."""
        if not (self.unanswered_is_missed and self._unanswered):
            return FINE
        self._unanswered.clear()
        return self._failed("no answer within the keepalive interval", None)

    def sending(self) -> KeepaliveRef:
        """Note a keepalive going out; the ref comes back with its answer."""
        self._seq += 1
        self.sent += 1
        self._unanswered.add(self._seq)
        return KeepaliveRef(self.session, self._seq)

    def answered(self, ref: KeepaliveRef, status: int | None) -> KeepaliveResult:
        """A final answer (``status`` None: timed out) to the keepalive ``ref``."""
        if ref.session != self.session:
            return FINE
        counted = ref.seq not in self._unanswered  # already counted as missed when the next one went out
        self._unanswered.discard(ref.seq)
        if status is not None and 200 <= status < 300:
            self.failures = 0
            return FINE
        if counted:
            return FINE
        return self._failed(f"keepalive {status if status is not None else 408}", status)

    def _failed(self, error: str, status: int | None) -> KeepaliveResult:
        self.failures += 1
        if status is not None and status in self.forgotten:
            return KeepaliveResult(KeepaliveOutcome.FORGOTTEN, error, f"the server forgot us ({error})")
        if self.missed is not None and self.failures >= self.missed:
            # The server is gone or restarted and forgot us (WVP: 3 failures, docs/gb28181.md §16.2).
            reason = f"{self.failures} keepalives failed (last: {error})"
            return KeepaliveResult(KeepaliveOutcome.LOST, error, reason)
        return KeepaliveResult(KeepaliveOutcome.FAILED, error)
