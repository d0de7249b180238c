"""Which of a service's play sessions a SIP event belongs to: live view, playback, downloads.

Each of those services owns :class:`~gateway.gb28181.play.PlaySession` s (one INVITE each)
and is a handler on the SIP router. An event is theirs by the INVITE/BYE transaction's
context (the session itself) or by the Call-ID of a request in the dialog (the device's
BYE, INFO answers, a MediaStatus MESSAGE). A session whose owner closed it still takes its
dialog's messages for :data:`RETIRED_FOR` seconds, so that a late 2xx is ACKed and hung up
rather than left streaming. A service claims only its own sessions, so the order of the
handlers on the router does not matter.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Generic, TypeVar

from gateway.errors import GatewayError
from gateway.gb28181.play import PlaySession
from gateway.gb28181.sip.endpoint import RequestReceived, ResponseReceived, SipEvent, TransactionTimedOut

__all__ = ["RETIRED_FOR", "PlaySessionHandler", "PlaySessions"]

# s a closed session still takes its dialog's messages: 64*T1, as long as a camera may
# retransmit a 2xx (RFC 3261 §13.3.1.4), so that a late answer is ACKed and hung up, not left running.
RETIRED_FOR = 32.0

_Owner = TypeVar("_Owner")


class PlaySessions(Generic[_Owner]):
    """The open sessions of one service by Call-ID, each with its owner (a stream, a playback…), and the retired."""

    def __init__(self, loop: asyncio.AbstractEventLoop, retired_for: float = RETIRED_FOR) -> None:
        self._loop = loop
        self._retired_for = retired_for
        self._open: dict[str, tuple[PlaySession, _Owner]] = {}
        self._retired: dict[str, PlaySession] = {}

    def __len__(self) -> int:
        return len(self._open)

    def add(self, session: PlaySession, owner: _Owner) -> None:
        """A session whose INVITE was just sent (:meth:`PlaySession.start`), and what it serves."""
        if session.invite is not None:
            self._open[session.invite.call_id] = (session, owner)

    def retire(self, session: PlaySession) -> None:
        """The owner closed the session: it takes its dialog's late messages for a while, then is forgotten."""
        if session.invite is None:
            return
        call_id = session.invite.call_id
        entry = self._open.get(call_id)
        if entry is not None and entry[0] is session:
            del self._open[call_id]
        self._retired[call_id] = session
        self._loop.call_later(self._retired_for, self._forget, call_id, session)

    def lookup(self, event: SipEvent) -> tuple[PlaySession | None, _Owner | None]:
        """The session the event belongs to and its owner (None once retired); (None, None): not ours."""
        session: PlaySession | None = None
        if isinstance(event, ResponseReceived | TransactionTimedOut) and isinstance(event.context, PlaySession):
            session = event.context
            if session.invite is None:
                return None, None
            call_id = session.invite.call_id
        elif isinstance(event, RequestReceived | ResponseReceived):
            try:
                call_id = event.request.call_id if isinstance(event, RequestReceived) else event.response.call_id
            except GatewayError:  # no usable Call-ID: nobody's dialog
                return None, None
        else:
            return None, None
        entry = self._open.get(call_id)
        if entry is not None and (session is None or entry[0] is session):
            return entry
        retired = self._retired.get(call_id)
        if retired is not None and (session is None or retired is session):
            return retired, None
        return None, None

    def route(self, event: SipEvent, now: float, after: Callable[[_Owner], None]) -> bool:
        """Feed the event to its session and run ``after(owner)`` for an open one; False when not ours."""
        session, owner = self.lookup(event)
        if session is None:
            return False
        if isinstance(event, RequestReceived):
            handled = session.handle_request(event, now)
        else:
            handled = session.handle_response(event, now)
        if handled and owner is not None:
            after(owner)
        elif handled:  # a retired session: a late 2xx is ACKed and hung up by the session itself
            while session.next_event() is not None:
                pass
        return handled

    def _forget(self, call_id: str, session: PlaySession) -> None:
        if self._retired.get(call_id) is session:
            del self._retired[call_id]


class PlaySessionHandler(ABC, Generic[_Owner]):
    """A service's face on the SIP router: its play sessions' events, by :class:`PlaySessions`.

    The sessions' timers run on the loop (one per session), so the router's timer hooks
    have nothing to do; :meth:`_after` drains a session's events once it was fed one.
    """

    _sessions: PlaySessions[_Owner]

    def get_timer(self) -> float | None:
        """None: the sessions' timers run on the loop (one per session)."""
        return None

    def handle_timer(self, now: float) -> None:
        """Nothing: see :meth:`get_timer`."""

    def route(self, event: SipEvent, now: float) -> bool:
        """Take the SIP events of our sessions (closed ones too, for a while); False for the rest."""
        return self._sessions.route(event, now, self._after)

    @abstractmethod
    def _after(self, owner: _Owner) -> None:
        """Drain the owner's session events (and re-arm its timer) after the session took one."""
