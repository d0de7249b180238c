"""PlaySessions: a service claims the SIP events of its own play sessions only, and a closed one's for a while."""

from __future__ import annotations

import asyncio

from gateway.gb28181.play import PlayState
from gateway.gb28181.sip.endpoint import RequestReceived
from gateway.play_sessions import PlaySessions
from tests.unit.test_play_session import Rig, peer_of, rig


def _exchange(r: Rig, books: list[PlaySessions[str]], claimed: list[tuple[int, str]], after: list[str]) -> None:
    """Move datagrams both ways; each gateway event goes to the first book that claims it."""
    moved = True
    while moved:
        moved = False
        r.device.pump(r.clock.now)
        while (event := r.gw.next_event()) is not None:
            for index, book in enumerate(books):
                if book.route(event, r.clock.now, after.append):
                    claimed.append((index, type(event).__name__))
                    break
            else:
                claimed.append((-1, type(event).__name__))
        for src, dst in ((r.gw, r.dev), (r.dev, r.gw)):
            for data, _ in src.data_to_send():
                moved = True
                dst.receive(data, peer_of(src), r.clock.now)


async def test_only_the_owning_service_claims_its_sessions_events() -> None:
    loop = asyncio.get_running_loop()
    other: PlaySessions[str] = PlaySessions(loop)
    mine: PlaySessions[str] = PlaySessions(loop, retired_for=0.05)
    r = rig()
    r.session.start(r.clock.now)
    mine.add(r.session, "stream-1")
    claimed: list[tuple[int, str]] = []
    after: list[str] = []
    # "other" comes first on the router, as live view did before playback and downloads: it must not
    # take the answer to an INVITE whose context is a PlaySession it does not own.
    _exchange(r, [other, mine], claimed, after)
    assert r.session.state is PlayState.STREAMING
    assert claimed and all(book == 1 for book, _ in claimed), claimed
    assert after and set(after) == {"stream-1"}
    assert len(mine) == 1 and len(other) == 0

    # Closed: the device's BYE still reaches the session (answered 200), the owner is not told.
    mine.retire(r.session)
    after.clear()
    claimed.clear()
    r.device.send_bye(r.gw, r.clock.now)
    _exchange(r, [other, mine], claimed, after)
    assert (1, RequestReceived.__name__) in claimed and after == []
    assert [resp.status for resp in r.device.responses if resp.cseq.method == "BYE"] == [200]
    assert len(mine) == 0

    # After the retirement, the dialog is nobody's.
    deadline = loop.time() + 5
    while mine.lookup(_a_request_of(r))[0] is not None:
        assert loop.time() < deadline, "the retired session was never forgotten"
        await asyncio.sleep(0.01)


def _a_request_of(r: Rig) -> RequestReceived:
    assert r.session.invite is not None
    return RequestReceived(r.session.invite, peer_of(r.dev), None)
