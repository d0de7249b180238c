"""Byte-identical UDP retransmissions are absorbed without a second parse, exactly as the parsed path would."""

from __future__ import annotations

from test_sip_endpoint import DOMAIN, HEADERS, NAT, PLATFORM_ID, events, pair, raw

from gateway.gb28181.sip import RequestReceived, make_response
from gateway.gb28181.sip.testing import run_timers
from gateway.gb28181.sip.transport import Peer, Transport

DATA = raw(
    f"MESSAGE sip:{PLATFORM_ID}@{DOMAIN} SIP/2.0",
    "Via: SIP/2.0/UDP 192.168.1.64:5060;branch=z9hG4bKfast1",
    *HEADERS,
)


def test_a_retransmission_is_absorbed_unparsed_and_answered_with_the_last_response() -> None:
    gw, _, clock = pair()
    gw.receive(DATA, NAT, 0.0)
    (event,) = events(gw)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    gw.receive(DATA, NAT, 0.4)  # Trying: nothing
    assert events(gw) == [] and gw.data_to_send() == []
    assert gw.send_response(event.transaction, make_response(event.request, 200, to_tag="x"), 0.5)
    (first,) = gw.data_to_send()
    gw.receive(DATA, NAT, 1.0)  # Completed: the same answer again
    assert gw.data_to_send() == [first]
    assert events(gw) == []
    assert gw.stats["retransmission_unparsed"] == 2
    assert gw.stats["retransmission_absorbed"] == 2
    assert gw.stats["in_request_MESSAGE"] == 3  # every copy counted, as before


def test_the_same_bytes_from_another_address_take_the_parsed_path() -> None:
    gw, _, _ = pair()
    gw.receive(DATA, NAT, 0.0)
    (event,) = events(gw)
    other = Peer(Transport.UDP, "203.0.113.8", 40000)
    gw.receive(DATA, other, 0.1)
    assert gw.stats["retransmission_unparsed"] == 0
    assert gw.stats["retransmission_absorbed"] == 1  # same branch and Via: the parsed path's own rule
    assert events(gw) == []


def test_after_the_transaction_ends_the_same_bytes_are_a_new_request_and_nothing_leaks() -> None:
    gw, dev, clock = pair()
    gw.receive(DATA, NAT, 0.0)
    (event,) = events(gw)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    assert gw.send_response(event.transaction, make_response(event.request, 200, to_tag="x"), 0.0)
    gw.data_to_send()
    run_timers([gw, dev], clock, until=60.0)  # Timer J ends it
    assert gw.transaction_count == 0
    assert gw._datagrams == {} and gw._datagram_of == {}
    gw.receive(DATA, NAT, 61.0)
    (again,) = events(gw)
    assert isinstance(again, RequestReceived)
    assert gw.stats["retransmission_unparsed"] == 0


def test_tcp_is_never_matched_by_bytes() -> None:
    gw, _, _ = pair()
    tcp = Peer(Transport.TCP, "203.0.113.7", 40000, conn_id=1)
    gw.receive(DATA.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"), tcp, 0.0)
    assert len(events(gw)) == 1
    assert gw._datagrams == {}
