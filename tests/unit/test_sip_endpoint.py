"""SipEndpoint: two in-memory peers, NAT stamping, stateless errors, no leaks."""

from __future__ import annotations

import pytest

from gateway.gb28181.sip import (
    Headers,
    Peer,
    RequestReceived,
    ResponseReceived,
    SeededIds,
    SipEndpoint,
    SipEvent,
    SipRequest,
    SipResponse,
    SipTimers,
    TransactionTimedOut,
    Transport,
    make_request,
    make_response,
    parse_message,
)
from gateway.gb28181.sip import endpoint as endpoint_module
from gateway.gb28181.sip.testing import FakeClock, peer_of, run_timers, transfer

PLATFORM_ID = "34020000002000000001"
DEVICE_ID = "34020000001320000001"
DOMAIN = "3402000000"


def events(ep: SipEndpoint) -> list[SipEvent]:
    out: list[SipEvent] = []
    while (event := ep.next_event()) is not None:
        out.append(event)
    return out


def pair() -> tuple[SipEndpoint, SipEndpoint, FakeClock]:
    gw = SipEndpoint(SeededIds("gw"), local_host="127.0.0.1", local_port=15060, timers=SipTimers(t1=0.5))
    dev = SipEndpoint(SeededIds("dev"), local_host="127.0.0.1", local_port=5060, timers=SipTimers(t1=0.5))
    return gw, dev, FakeClock()


def new_request(ep: SipEndpoint, method: str, cseq: int = 1, body: bytes = b"") -> SipRequest:
    headers = Headers(
        [
            ("From", f"<sip:{DEVICE_ID}@{DOMAIN}>;tag={ep.new_tag()}"),
            ("To", f"<sip:{PLATFORM_ID}@{DOMAIN}>"),
            ("Call-ID", ep.new_call_id()),
            ("CSeq", f"{cseq} {method}"),
            ("Max-Forwards", "70"),
        ]
    )
    if method == "REGISTER":
        headers.add("Contact", f"<sip:{DEVICE_ID}@{ep.local_host}:{ep.local_port}>")
        headers.add("Expires", "3600")
    if body:
        headers.add("Content-Type", "Application/MANSCDP+xml")
    return make_request(method, f"sip:{PLATFORM_ID}@{DOMAIN}", headers, body)


def exchange(gw: SipEndpoint, dev: SipEndpoint, clock: FakeClock, method: str, body: bytes = b"") -> ResponseReceived:
    """dev sends ``method`` to gw, gw answers 200; return dev's ResponseReceived."""
    key = dev.send_request(new_request(dev, method, body=body), peer_of(gw), clock.now, context=method)
    transfer(dev, gw, clock)
    (received,) = events(gw)
    assert isinstance(received, RequestReceived)
    assert received.request.method == method
    assert received.request.body == body
    assert received.peer == peer_of(dev)
    assert received.transaction is not None
    assert gw.send_response(received.transaction, make_response(received.request, 200, to_tag=gw.new_tag()), clock.now)
    transfer(dev, gw, clock)
    (answer,) = events(dev)
    assert isinstance(answer, ResponseReceived)
    assert answer.transaction == key
    assert answer.context == method
    assert answer.response.status == 200
    return answer


def raw(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


HEADERS = (
    f"From: <sip:{DEVICE_ID}@{DOMAIN}>;tag=d1",
    f"To: <sip:{PLATFORM_ID}@{DOMAIN}>",
    "Call-ID: nat-1",
    "CSeq: 20 MESSAGE",
    "Content-Length: 0",
)
NAT = Peer(Transport.UDP, "203.0.113.7", 40000)


# --- exchanges ------------------------------------------------------------------------------


def test_register_and_message_round_trips() -> None:
    gw, dev, clock = pair()
    answer = exchange(gw, dev, clock, "REGISTER")
    assert answer.response.cseq.method == "REGISTER"
    assert answer.response.to.tag is not None
    # Our Via asked for rport, and gw stamped it with the port it saw.
    assert answer.response.top_via.params["rport"] == "5060"
    exchange(gw, dev, clock, "MESSAGE", body=b"<?xml version='1.0'?><Notify/>")
    assert gw.stats["in_request_REGISTER"] == gw.stats["in_request_MESSAGE"] == 1


def test_seeded_ids_make_every_byte_reproducible() -> None:
    def wire() -> list[bytes]:
        gw, dev, clock = pair()
        dev.send_request(new_request(dev, "REGISTER"), peer_of(gw), clock.now)
        return [data for data, _ in dev.data_to_send()]

    assert wire() == wire()


def test_received_and_rport_stamped_for_a_request_from_behind_nat() -> None:
    gw, _, clock = pair()
    data = raw(
        f"MESSAGE sip:{PLATFORM_ID}@{DOMAIN} SIP/2.0",
        "Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bKnat1",
        *HEADERS,
    )
    gw.receive(data, NAT, clock.now)
    (event,) = events(gw)
    assert isinstance(event, RequestReceived)
    top = event.request.top_via
    assert (top.host, top.params["received"], top.params["rport"]) == ("192.168.1.64", "203.0.113.7", "40000")
    assert event.transaction is not None
    gw.send_response(event.transaction, make_response(event.request, 200, to_tag="x"), clock.now)
    ((out, dest),) = gw.data_to_send()
    assert dest == NAT
    response = parse_message(out)
    assert isinstance(response, SipResponse)
    via = response.top_via
    assert (via.params["received"], via.params["rport"]) == ("203.0.113.7", "40000")


def test_retransmitted_request_absorbed_then_answered_with_last_response() -> None:
    gw, _, clock = pair()
    data = raw(
        f"MESSAGE sip:{PLATFORM_ID}@{DOMAIN} SIP/2.0",
        "Via: SIP/2.0/UDP 192.168.1.64:5060;branch=z9hG4bKre1",
        *HEADERS,
    )
    gw.receive(data, NAT, 0.0)
    (event,) = events(gw)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    gw.receive(data, NAT, 0.4)  # in Trying: no event, nothing sent
    assert events(gw) == [] and gw.data_to_send() == []
    assert gw.send_response(event.transaction, make_response(event.request, 200, to_tag="x"), 0.5)
    (first,) = gw.data_to_send()
    gw.receive(data, NAT, 1.0)  # in Completed: the same response again
    assert gw.data_to_send() == [first]
    assert events(gw) == []
    assert gw.stats["retransmission_absorbed"] == 2


def test_tu_answering_twice_is_refused_and_the_transaction_survives() -> None:
    # The second answer used to terminate the transaction, so the next
    # retransmission of the request reached the application as a new request.
    gw, _, clock = pair()
    data = raw(
        f"MESSAGE sip:{PLATFORM_ID}@{DOMAIN} SIP/2.0",
        "Via: SIP/2.0/UDP 192.168.1.64:5060;branch=z9hG4bKtwice",
        *HEADERS,
    )
    gw.receive(data, NAT, 0.0)
    (event,) = events(gw)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    ok = make_response(event.request, 200, to_tag="x")
    assert gw.send_response(event.transaction, ok, 0.0)
    assert not gw.send_response(event.transaction, make_response(event.request, 500), 0.1)
    assert gw.stats["response_refused_by_state"] == 1
    gw.data_to_send()
    gw.receive(data, NAT, 0.2)
    assert events(gw) == []
    ((again, _),) = gw.data_to_send()
    resent = parse_message(again)
    assert isinstance(resent, SipResponse) and resent.status == 200


# --- broken input ----------------------------------------------------------------------------


def test_stateless_400_for_a_request_missing_call_id() -> None:
    gw, _, clock = pair()
    data = raw(
        f"MESSAGE sip:{PLATFORM_ID}@{DOMAIN} SIP/2.0",
        "Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bKbad",
        *[h for h in HEADERS if not h.startswith("Call-ID")],
    )
    gw.receive(data, NAT, clock.now)
    assert events(gw) == []
    ((out, dest),) = gw.data_to_send()
    assert dest == NAT
    response = parse_message(out)
    assert isinstance(response, SipResponse)
    assert response.status == 400
    assert response.top_via.branch == "z9hG4bKbad"
    assert gw.stats["dropped_bad_headers"] == 1
    assert gw.transaction_count == 0


def test_nothing_for_a_broken_ack() -> None:
    gw, _, clock = pair()
    data = raw(
        f"ACK sip:{PLATFORM_ID}@{DOMAIN} SIP/2.0",
        "Via: SIP/2.0/UDP 192.168.1.64:5060;branch=z9hG4bKack",
        *[h.replace("MESSAGE", "ACK") for h in HEADERS if not h.startswith("Call-ID")],
    )
    gw.receive(data, NAT, clock.now)
    assert events(gw) == [] and gw.data_to_send() == []
    assert gw.stats["dropped_bad_headers"] == 1


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\xff\xfegarbage",
        b"",
        b"\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: ,\r\n\r\n",
        b"MESSAGE sip:a@b SIP/2.0\r\nVia: ,\r\nFrom: <sip:a@b>\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\n\r\n",
        "MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKu\r\nFrom: <sip:a@b:\u00b2>\r\n\r\n".encode(),
    ],
)
def test_garbage_is_dropped_and_counted(data: bytes) -> None:
    # The last two used to raise IndexError / ValueError out of receive().
    gw, _, clock = pair()
    gw.receive(data, NAT, clock.now)
    assert events(gw) == []
    assert gw.transaction_count == 0
    dropped = gw.stats["dropped_unparsable"] + gw.stats["dropped_bad_headers"]
    assert dropped == 1
    for out, _ in gw.data_to_send():  # at most a stateless 400
        response = parse_message(out)
        assert isinstance(response, SipResponse) and response.status == 400


def test_oversized_request_gets_a_stateless_513() -> None:
    # The 513 was never sent: the head was re-parsed with a Content-Length
    # pointing at the body that had been cut off.
    gw, _, clock = pair()
    body = b"x" * 70_000
    data = raw(
        f"MESSAGE sip:{PLATFORM_ID}@{DOMAIN} SIP/2.0",
        "Via: SIP/2.0/UDP 192.168.1.64:5060;branch=z9hG4bKbig",
        *[h for h in HEADERS if not h.startswith("Content-Length")],
        f"Content-Length: {len(body)}",
        body=body,
    )
    gw.receive(data, NAT, clock.now)
    assert events(gw) == []
    ((out, _),) = gw.data_to_send()
    response = parse_message(out)
    assert isinstance(response, SipResponse) and response.status == 513
    assert gw.stats["dropped_too_large"] == 1


def test_response_with_unknown_branch_is_a_stray() -> None:
    gw, _, clock = pair()
    data = raw("SIP/2.0 200 OK", "Via: SIP/2.0/UDP 127.0.0.1:15060;branch=z9hG4bKnobody", *HEADERS)
    gw.receive(data, NAT, clock.now)
    assert events(gw) == [] and gw.data_to_send() == []
    assert gw.stats["stray_response"] == 1


def test_made_up_methods_share_one_counter() -> None:
    gw, _, clock = pair()
    for i in range(20):
        gw.receive(
            raw(
                f"X{i} sip:a@b SIP/2.0",
                f"Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKm{i}",
                *[h.replace("MESSAGE", f"X{i}") for h in HEADERS],
            ),
            NAT,
            clock.now,
        )
    assert gw.stats["in_request_other"] == 20
    assert not any(k.startswith("in_request_X") for k in gw.stats)


def test_503_beyond_max_transactions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoint_module, "MAX_TRANSACTIONS", 1)
    gw, _, clock = pair()
    for branch in ("z9hG4bKone", "z9hG4bKtwo"):
        gw.receive(
            raw(f"MESSAGE sip:{PLATFORM_ID}@{DOMAIN} SIP/2.0", f"Via: SIP/2.0/UDP 10.0.0.9;branch={branch}", *HEADERS),
            NAT,
            clock.now,
        )
    assert len(events(gw)) == 1
    ((out, _),) = gw.data_to_send()
    response = parse_message(out)
    assert isinstance(response, SipResponse) and response.status == 503
    assert gw.stats["refused_overload"] == 1


# --- timers through the endpoint ------------------------------------------------------------


def test_client_timeout_reported_after_timer_f() -> None:
    gw, dev, clock = pair()
    key = dev.send_request(new_request(dev, "MESSAGE"), peer_of(gw), clock.now, context="ctx")
    assert len(dev.data_to_send()) == 1
    fired = run_timers([dev], clock, until=40.0)
    assert fired[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert fired[-1] == 32.0
    assert len(dev.data_to_send()) == 10  # retransmissions up to 31.5
    (event,) = events(dev)
    assert isinstance(event, TransactionTimedOut)
    assert (event.transaction, event.context, event.request.method) == (key, "ctx", "MESSAGE")
    assert dev.transaction_count == 0
    assert dev.stats["client_timeout"] == 1


def test_lost_request_is_retransmitted_and_answered() -> None:
    gw, dev, clock = pair()
    dev.send_request(new_request(dev, "REGISTER"), peer_of(gw), clock.now)
    assert transfer(dev, gw, clock, loss=lambda i: i == 0) == 0
    run_timers([dev, gw], clock, until=0.5)
    transfer(dev, gw, clock)
    (event,) = events(gw)
    assert isinstance(event, RequestReceived) and event.transaction is not None
    gw.send_response(event.transaction, make_response(event.request, 200, to_tag="t"), clock.now)
    transfer(dev, gw, clock)
    assert [type(e) for e in events(dev)] == [ResponseReceived]


def test_no_transaction_leaks_after_all_timers_fire() -> None:
    gw, dev, clock = pair()
    exchange(gw, dev, clock, "REGISTER")
    exchange(gw, dev, clock, "MESSAGE")
    assert gw.transaction_count == 2 and dev.transaction_count == 2  # Completed, absorbing
    run_timers([gw, dev], clock, until=clock.now + 60.0)
    assert gw.transaction_count == 0 and dev.transaction_count == 0


def test_no_leak_over_tcp_where_timers_j_and_k_are_zero() -> None:
    gw, dev, clock = pair()
    tcp_gw = peer_of(gw, Transport.TCP)
    dev.send_request(new_request(dev, "MESSAGE"), tcp_gw, clock.now)
    transfer(dev, gw, clock, transport=Transport.TCP)
    (event,) = events(gw)
    assert isinstance(event, RequestReceived) and event.peer.transport is Transport.TCP
    assert event.transaction is not None
    gw.send_response(event.transaction, make_response(event.request, 200, to_tag="t"), clock.now)
    transfer(dev, gw, clock, transport=Transport.TCP)
    run_timers([gw, dev], clock, until=clock.now)
    assert gw.transaction_count == 0 and dev.transaction_count == 0


def invite_dialog(gw: SipEndpoint, dev: SipEndpoint, clock: FakeClock) -> tuple[RequestReceived, ResponseReceived]:
    """gw INVITEs dev, dev answers 200, gw gets the 200 (no ACK yet)."""
    invite = new_request(gw, "INVITE", cseq=5, body=b"v=0\r\n")
    gw.send_request(invite, peer_of(dev), clock.now)
    transfer(gw, dev, clock)
    (offer,) = events(dev)
    assert isinstance(offer, RequestReceived) and offer.transaction is not None
    dev.send_response(offer.transaction, make_response(offer.request, 200, to_tag="ok", body=b"v=0\r\n"), clock.now)
    transfer(gw, dev, clock)
    (answer,) = events(gw)
    assert isinstance(answer, ResponseReceived) and answer.response.status == 200
    return offer, answer


def ack_for(answer: ResponseReceived) -> SipRequest:
    response = answer.response
    headers = Headers(
        [
            ("From", response.headers["From"]),
            ("To", response.headers["To"]),
            ("Call-ID", response.call_id),
            ("CSeq", f"{response.cseq.seq} ACK"),
            ("Max-Forwards", "70"),
        ]
    )
    return make_request("ACK", f"sip:{DEVICE_ID}@127.0.0.1:5060", headers)


def test_invite_2xx_retransmitted_until_the_ack_matched_by_call_id_and_cseq() -> None:
    gw, dev, clock = pair()
    _, answer = invite_dialog(gw, dev, clock)
    run_timers([dev], clock, until=1.6)
    resent = dev.data_to_send()
    assert len(resent) == 2  # Timer G at 0.5 and 1.5
    assert all(parse_message(data).status == 200 for data, _ in resent)  # type: ignore[union-attr]
    gw.send_ack(ack_for(answer), peer_of(dev))  # a new branch: the 2xx ACK is its own transaction
    transfer(gw, dev, clock)
    (ack,) = events(dev)
    assert isinstance(ack, RequestReceived)
    assert (ack.request.method, ack.transaction) == ("ACK", None)
    run_timers([dev, gw], clock, until=100.0)
    assert dev.data_to_send() == []  # no more 200s after the ACK
    assert dev.transaction_count == 0 and gw.transaction_count == 0


def test_ack_reusing_the_invite_branch_still_reaches_the_tu() -> None:
    # An ACK for a 2xx that reused the INVITE branch used to be swallowed.
    gw, dev, clock = pair()
    offer, answer = invite_dialog(gw, dev, clock)
    ack = ack_for(answer)
    ack.headers.prepend("Via", offer.request.headers.get_all("Via")[0])
    dev.receive(bytes(ack), peer_of(gw), clock.now)
    (event,) = events(dev)
    assert isinstance(event, RequestReceived) and event.request.method == "ACK"
    assert dev.transaction_count == 0


def test_unacked_invite_2xx_ends_with_timer_l_without_leaking() -> None:
    gw, dev, clock = pair()
    invite_dialog(gw, dev, clock)
    run_timers([dev, gw], clock, until=100.0)
    assert dev.transaction_count == 0 and gw.transaction_count == 0
    assert dev.stats["server_timeout"] == 1
    # The (Call-ID, CSeq) → transaction map used to keep the entry forever.
    assert dev._accepted_invites == {}


def test_invite_rejected_is_acked_by_the_client_transaction() -> None:
    gw, dev, clock = pair()
    gw.send_request(new_request(gw, "INVITE", cseq=9), peer_of(dev), clock.now)
    transfer(gw, dev, clock)
    (offer,) = events(dev)
    assert isinstance(offer, RequestReceived) and offer.transaction is not None
    dev.send_response(offer.transaction, make_response(offer.request, 486, to_tag="busy"), clock.now)
    transfer(gw, dev, clock)  # 486 → gw, gw's ACK → dev (absorbed by dev's transaction)
    (rejected,) = events(gw)
    assert isinstance(rejected, ResponseReceived) and rejected.response.status == 486
    assert events(dev) == []
    run_timers([dev, gw], clock, until=100.0)
    assert dev.data_to_send() == []  # the ACK stopped Timer G
    assert dev.transaction_count == 0 and gw.transaction_count == 0


def test_transport_error_fails_client_transactions_on_that_peer() -> None:
    gw, dev, clock = pair()
    tcp = peer_of(gw, Transport.TCP)
    key = dev.send_request(new_request(dev, "MESSAGE"), tcp, clock.now)
    dev.transport_error(tcp, clock.now)
    (event,) = events(dev)
    assert isinstance(event, TransactionTimedOut) and event.transaction == key
    assert dev.transaction_count == 0
