"""Catalog subscriptions to lower platforms (sans-I/O) and catalog NOTIFYs reaching device access."""

from __future__ import annotations

from gb_harness import GATEWAY_ID, GW_PEER, IPC_ID, REALM
from test_device_access import registered, responses_from_gateway

from gateway.gb28181.access import CatalogNotified
from gateway.gb28181.catalog_subscriptions import RETRY_AFTER, CatalogSubscriber
from gateway.gb28181.manscdp import CatalogItem, CatalogQuery, CatalogResponse, Root, decode_message, serialize
from gateway.gb28181.requests import MANSCDP_CONTENT_TYPE, sip_uri
from gateway.gb28181.sip.endpoint import RequestReceived, SipEndpoint
from gateway.gb28181.sip.headers import Headers
from gateway.gb28181.sip.idsource import SeededIds
from gateway.gb28181.sip.message import SipRequest, make_response
from gateway.gb28181.sip.testing import FakeClock
from gateway.gb28181.sip.transport import Peer, Transport

PLATFORM = "12010000002000000001"
LOWER = "12010100002000000001"
LOWER_PEER = Peer(Transport.UDP, "10.0.0.9", 5070)
ME_PEER = Peer(Transport.UDP, "10.0.0.1", 5060)


class Pair:
    """Our subscriber's endpoint and a lower platform's, wired in memory."""

    def __init__(self, answer: int | None = 200, expires: str = "600") -> None:
        self.clock = FakeClock()
        self.me = SipEndpoint(SeededIds("me"), local_host=ME_PEER.host, local_port=ME_PEER.port)
        self.lower = SipEndpoint(SeededIds("low"), local_host=LOWER_PEER.host, local_port=LOWER_PEER.port)
        self.subscriber = CatalogSubscriber(self.me, PLATFORM, PLATFORM[:10])
        self.answer, self.expires = answer, expires
        self.subscribes: list[SipRequest] = []

    def pump(self) -> None:
        for _ in range(20):
            moved = 0
            for data, _ in self.me.data_to_send():
                moved += 1
                self.lower.receive(data, ME_PEER, self.clock.now)
            while (event := self.lower.next_event()) is not None:
                if isinstance(event, RequestReceived) and event.transaction is not None:
                    self.subscribes.append(event.request)
                    if self.answer is not None:
                        extra = [("Expires", self.expires)] if self.answer < 300 else None
                        self.lower.send_response(
                            event.transaction,
                            make_response(event.request, self.answer, to_tag="t", extra=extra),
                            self.clock.now,
                        )
            for data, _ in self.lower.data_to_send():
                moved += 1
                self.me.receive(data, LOWER_PEER, self.clock.now)
            while (event := self.me.next_event()) is not None:
                assert self.subscriber.route(event, self.clock.now)
            if not moved:
                return

    def run_until(self, t: float) -> None:
        while True:
            due = [
                x for x in (self.subscriber.get_timer(), self.me.get_timer(), self.lower.get_timer()) if x is not None
            ]
            if not due or min(due) > t:
                break
            self.clock.now = max(self.clock.now, min(due))
            self.me.handle_timer(self.clock.now)
            self.lower.handle_timer(self.clock.now)
            self.subscriber.handle_timer(self.clock.now)
            self.pump()
        self.clock.now = t


def test_only_platforms_and_gateways_are_subscribed_to() -> None:
    assert CatalogSubscriber.wants(LOWER) and CatalogSubscriber.wants("12010000002090000001")
    assert not CatalogSubscriber.wants("12010100111180000100") and not CatalogSubscriber.wants("x")


def test_subscribe_carries_a_catalog_query_and_refreshes_before_expiry() -> None:
    pair = Pair()
    pair.subscriber.subscribe(LOWER, LOWER_PEER, 0.0)
    pair.pump()
    [request] = pair.subscribes
    assert request.method == "SUBSCRIBE" and request.uri == f"sip:{LOWER}@10.0.0.9:5070"
    assert request.headers.get("Event", "").startswith("Catalog;id=") and request.headers.get("Expires") == "3600"
    query, _ = decode_message(request.body)
    assert isinstance(query, CatalogQuery) and query.device_id == LOWER
    assert pair.subscriber.is_active(LOWER)
    assert pair.subscriber.get_timer() == 600 * 0.8  # the granted Expires, refreshed at 80 %
    pair.run_until(481.0)
    assert len(pair.subscribes) == 2 and pair.subscribes[1].call_id != request.call_id  # a new SUBSCRIBE


def test_a_refused_subscription_is_tried_again_later() -> None:
    pair = Pair(answer=489)
    pair.subscriber.subscribe(LOWER, LOWER_PEER, 0.0)
    pair.pump()
    assert not pair.subscriber.is_active(LOWER) and pair.subscriber.get_timer() == RETRY_AFTER
    pair.answer = 200
    pair.run_until(RETRY_AFTER + 1)
    assert pair.subscriber.is_active(LOWER)


def test_an_unanswered_subscription_is_retried_and_forget_stops_it() -> None:
    pair = Pair(answer=None)
    pair.subscriber.subscribe(LOWER, LOWER_PEER, 0.0)
    pair.run_until(40.0)  # the transaction times out after 32 s
    assert pair.subscriber.get_timer() == 32.0 + RETRY_AFTER
    pair.subscriber.forget(LOWER)
    assert pair.subscriber.get_timer() is None


def _notify(h: object, body: bytes, from_id: str) -> None:
    ep = h.host.endpoint  # type: ignore[attr-defined]
    headers = Headers(
        [
            ("From", f"<{sip_uri(from_id, REALM)}>;tag=n1"),
            ("To", f"<{sip_uri(GATEWAY_ID, REALM)}>;tag=s1"),
            ("Call-ID", ep.new_call_id()),
            ("CSeq", "2 NOTIFY"),
            ("Max-Forwards", "70"),
            ("Event", "Catalog;id=1"),
            ("Subscription-State", "active;expires=3000"),
            ("Content-Type", MANSCDP_CONTENT_TYPE),
        ]
    )
    ep.send_request(
        SipRequest(headers=headers, body=body, method="NOTIFY", uri=sip_uri(GATEWAY_ID, REALM)), GW_PEER, h.clock.now
    )  # type: ignore[attr-defined]


def test_a_catalog_notify_from_a_registered_lower_becomes_an_event() -> None:
    h, _agent = registered()
    items = (
        CatalogItem("12010100111310000301", event="OFF"),
        CatalogItem("12010100111310000302", name="大门口", event="ADD"),
    )
    _notify(h, serialize(CatalogResponse(9, IPC_ID, 2, items, Root.NOTIFY)), IPC_ID)
    h.pump()
    [event] = h.of_type(CatalogNotified)
    assert event.device_id == IPC_ID and [i.event for i in event.items] == ["OFF", "ADD"]
    assert responses_from_gateway(h, "NOTIFY")[-1].status == 200


def test_a_notify_from_a_stranger_is_481() -> None:
    h, _agent = registered()
    _notify(h, serialize(CatalogResponse(9, "12010000001110000099", 0, (), Root.NOTIFY)), "12010000001110000099")
    h.pump()
    assert h.of_type(CatalogNotified) == []
    assert responses_from_gateway(h, "NOTIFY")[-1].status == 481
