"""QueryBook: concurrency cap, backlog order, deadlines, exactly-once finishing."""

from __future__ import annotations

import pytest

from gateway.gb28181.queries import QueryBook

A, B, C = ("dev-a", "DeviceInfo", 1), ("dev-b", "Catalog", 2), ("dev-c", "DeviceStatus", 3)


def test_at_most_max_inflight_are_admitted_in_submission_order() -> None:
    book = QueryBook(max_inflight=2, timeout=10.0)
    for key in (A, B, C):
        book.submit(key, key[1])
    assert [k for k, _ in book.admit(0.0)] == [A, B]
    assert book.admit(0.0) == []
    assert (book.inflight, book.queued) == (2, 1)
    assert book.finish(A) is True
    assert [k for k, _ in book.admit(1.0)] == [C]


def test_finish_reports_outstanding_once() -> None:
    book = QueryBook(max_inflight=1)
    book.submit(A, None)
    book.submit(B, None)
    book.admit(0.0)
    assert book.finish(A) is True and book.finish(A) is False
    assert book.finish(B) is True, "a queued query can be cancelled"
    assert book.admit(0.0) == [], "and is not sent afterwards"


def test_deadlines_free_slots_and_report_only_owned_timeouts() -> None:
    book = QueryBook(max_inflight=2, timeout=10.0)
    book.submit(A, None)
    book.submit(B, None, report_timeout=False)  # the catalog assembler owns its deadline
    book.admit(0.0)
    assert book.get_timer() == 10.0
    assert book.expire(9.9) == []
    assert book.expire(10.0) == [A]
    assert book.inflight == 0
    assert book.finish(A) is False, "an expired query cannot be finished again"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        QueryBook(max_inflight=0)
