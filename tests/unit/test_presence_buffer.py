"""The presence write-behind buffer: latest wins, events in order, nothing lost on retry."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.registry import (
    Device,
    EntityKind,
    PresenceBatch,
    PresenceBuffer,
    StatusEvent,
    write_presence_batch,
)
from gateway.registry.backends import open_store


def _event(entity: str, online: bool, at: float) -> StatusEvent:
    return StatusEvent(entity, EntityKind.DEVICE, online, at, "keepalive")


def test_latest_mark_wins_and_events_keep_order() -> None:
    buf = PresenceBuffer()
    buf.mark_device("d1", True, 10.0)
    buf.mark_device("d1", True, 70.0)
    buf.mark_device("d2", False, 5.0)
    buf.mark_channel("c1", True)
    buf.mark_channel("c1", False)
    events = [_event("d1", True, 10.0), _event("d2", False, 5.0), _event("d1", False, 99.0)]
    for e in events:
        buf.add_event(e)
    assert buf.pending == 2 + 1 + 3
    batch = buf.drain()
    assert dict((i, (on, seen)) for i, on, seen in batch.devices) == {
        "d1": (True, 70.0),
        "d2": (False, 5.0),
    }
    assert batch.channels == (("c1", False),)
    assert batch.events == tuple(events)
    assert buf.pending == 0
    assert buf.drain().is_empty


def test_none_last_seen_keeps_the_buffered_one() -> None:
    buf = PresenceBuffer()
    buf.mark_device("d1", True, 42.0)
    buf.mark_device("d1", False, None)  # went offline: no new "seen" time
    assert buf.drain().devices == (("d1", False, 42.0),)


def test_restore_puts_back_a_failed_batch_without_overriding_newer_marks() -> None:
    buf = PresenceBuffer()
    buf.mark_device("d1", True, 10.0)
    buf.mark_device("d2", True, 10.0)
    buf.mark_channel("c1", True)
    buf.add_event(_event("d1", True, 10.0))
    failed = buf.drain()
    buf.mark_device("d1", False, None)  # newer than the failed batch
    buf.mark_channel("c1", False)
    buf.add_event(_event("d1", False, 20.0))
    buf.restore(failed)
    batch = buf.drain()
    assert dict((i, (on, s)) for i, on, s in batch.devices) == {
        "d1": (False, 10.0),
        "d2": (True, 10.0),
    }
    assert batch.channels == (("c1", False),)
    assert [e.at for e in batch.events] == [10.0, 20.0]


def test_event_log_is_capped_and_counts_drops() -> None:
    buf = PresenceBuffer(max_events=3)
    for i in range(5):
        buf.add_event(_event("d", i % 2 == 0, float(i)))
    assert buf.dropped_events == 2
    assert [e.at for e in buf.drain().events] == [2.0, 3.0, 4.0]


def test_max_events_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        PresenceBuffer(max_events=0)


def test_many_keepalives_become_one_small_batch() -> None:
    buf = PresenceBuffer()
    for tick in range(10):  # ten keepalive rounds of 1,000 devices
        for n in range(1000):
            buf.mark_device(f"d{n}", True, float(tick * 60))
    assert buf.pending == 1000
    batch = buf.drain()
    assert len(batch.devices) == 1000
    assert all(seen == 540.0 for _, _, seen in batch.devices)


def test_write_presence_batch_against_a_store(db_url: str) -> None:
    store = open_store(db_url)
    try:
        store.upsert_devices(Device(f"d{n}", None, "120101") for n in range(3))
        buf = PresenceBuffer()
        buf.mark_device("d0", True, 100.0)
        buf.mark_device("d1", True, 100.0)
        buf.mark_device("ghost", True, 100.0)  # unknown ids are ignored, not an error
        buf.add_event(_event("d0", True, 100.0))
        counts = write_presence_batch(store, buf.drain())
        assert (counts.devices, counts.channels) == (2, 0)
        d0 = store.get_device("d0")
        assert d0 is not None and d0.online and d0.last_seen == 100.0
        assert [e.entity_id for e in store.list_status_events()] == ["d0"]
        assert write_presence_batch(store, PresenceBatch()).devices == 0
    finally:
        store.close()
