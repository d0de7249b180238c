"""Alarm guarantees on PostgreSQL, and several gateway nodes sharing one database.

* the device gets its 200 only after the alarm is committed (a lock on the alarm
  table holds the commit: no answer until it is released);
* two nodes on one database: each delivers and reloads only its own alarms, seqs
  never collide, and either node lists both; intake reserves seqs in blocks, not
  one database round trip per alarm;
* an operator added with ``kgw user add --db postgresql://…`` logs in on every
  gateway node using that database.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from typing import Any

import aiohttp
import psycopg
import pytest

from gateway.alarms.model import AlarmFilter
from gateway.alarms.service import AlarmService
from gateway.alarms.store import open_alarm_store
from gateway.errors import ForeignAlarm
from tests.conftest import wait_for
from tests.processes import KGW, ROOT
from tests.unit.test_alarm_service import KG, T0, FakeClock, FakeSink, make, notice


async def _registered(fleet: Any) -> None:
    assert await wait_for(lambda: fleet.summary()["registered"] == len(fleet.agents), 60)


def _waiting_on_a_lock(url: str) -> bool:
    """Whether a kgw alarm connection is blocked on a lock right now."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name LIKE 'kgw-alarms-%'"
            " AND wait_event_type = 'Lock'"
        ).fetchone()
    return bool(row and row[0])


async def test_the_device_is_answered_only_after_the_commit(
    postgres_url: str, gateway_factory: Any, fleet_factory: Any
) -> None:
    service = await gateway_factory(db=postgres_url)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2))
    await _registered(fleet)
    blocker = await psycopg.AsyncConnection.connect(postgres_url)
    try:
        await blocker.execute("LOCK TABLE alarm IN ACCESS EXCLUSIVE MODE")  # held until rollback
        record = fleet.press(0, "button")
        # The gateway has the alarm and is committing it: its INSERT waits on our lock.
        assert await wait_for(lambda: _waiting_on_a_lock(postgres_url), 30)
        await asyncio.sleep(0.5)  # the device keeps waiting (retransmissions included) ...
        assert not record.answered  # ... without a 200: nothing is committed
    finally:
        await blocker.rollback()
        await blocker.close()
    assert await wait_for(lambda: record.answered, 30)
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute("SELECT COUNT(*), MIN(node) FROM alarm").fetchone()
    assert row == (1, "gateway")


def _press(n: int, node: str) -> Any:
    """Alarm ``n`` of a node: its own sender (no rate-limit collapse), its own SN."""
    device = f"1201010011134{1 if node == 'north' else 2}{n:06d}"
    return notice(sn=n, device=device, kg=KG, at=T0)


async def test_two_nodes_on_one_database_deliver_their_own_and_list_both(postgres_url: str) -> None:
    clock = FakeClock()
    sinks = {name: FakeSink() for name in ("north", "south")}
    nodes: dict[str, AlarmService] = {}
    for name in sinks:
        nodes[name] = await make(clock, [sinks[name]], store=open_alarm_store(postgres_url, name), escalate_after=0)
    try:
        per_node = 300
        results = await asyncio.gather(
            *(nodes[name].receive(_press(n, name)) for n in range(per_node) for name in nodes)
        )
        assert not any(r.duplicate or r.collapsed for r in results)
        ids = {name: {r.alarm_id for r in results[i :: len(nodes)]} for i, name in enumerate(nodes)}
        for name, sink in sinks.items():
            assert await wait_for(lambda s=sink: len(s.got) >= per_node, 60), (name, len(sink.got))  # type: ignore[misc]
            assert {m.alarm.id for m in sink.got} == ids[name]  # its own, every one, nothing of the other's
        for service in nodes.values():
            # Seqs came from a few reserved blocks, not a database round trip per alarm.
            assert service.seqs.reserved <= 1 + per_node // service.seqs.block + 1
            page = await service.list_alarms(AlarmFilter(limit=1000))
            assert page.total == 2 * per_node  # the whole city on either node
            seqs = [a.seq for a in page.items]
            assert len(set(seqs)) == len(seqs)  # never the same seq on two nodes
            assert {a.node for a in page.items} == {"north", "south"}
        for name in nodes:
            assert {
                a.node for a in (await nodes[name].list_alarms(AlarmFilter(limit=1000))).items if a.id in ids[name]
            } == {name}
        # Undelivered alarms on both nodes (sinks down), then both nodes die.
        for sink in sinks.values():
            sink.mode = "fail"
        late = {name: (await nodes[name].receive(_press(per_node + 1, name))).alarm_id for name in nodes}
        for name in list(nodes):
            await nodes.pop(name).stop()
        # Only north comes back: it delivers north's alarm, never south's.
        sink = FakeSink()
        nodes["north"] = await make(clock, [sink], store=open_alarm_store(postgres_url, "north"), escalate_after=0)
        clock.now += 3600.0
        nodes["north"].poke()
        assert await wait_for(lambda: len(sink.got) == 1, 60)
        assert sink.got[0].alarm.id == late["north"] and len(nodes["north"].outbox) == 0
        sink2 = FakeSink()
        nodes["south"] = await make(clock, [sink2], store=open_alarm_store(postgres_url, "south"), escalate_after=0)
        nodes["south"].poke()
        assert await wait_for(lambda: [m.alarm.id for m in sink2.got] == [late["south"]], 60)
    finally:
        for service in nodes.values():
            await service.stop()


async def test_a_user_added_by_the_cli_logs_in_on_every_node(postgres_url: str, gateway_factory: Any) -> None:
    added = await asyncio.to_thread(
        subprocess.run,
        [*KGW, "user", "add", "chen", "--role", "city_admin", "--db", postgres_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KGW_PASSWORD": "chen-password-2026"},
    )
    assert added.returncode == 0, added.stderr
    first = await gateway_factory(db=postgres_url)
    second = await gateway_factory(db=postgres_url)
    for node in (first, second):
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{node.http_port}"
            async with http.post(f"{base}/api/login", json={"username": "chen", "password": "wrong-password"}) as r:
                assert r.status == 401
            async with http.post(f"{base}/api/login", json={"username": "chen", "password": "chen-password-2026"}) as r:
                assert r.status == 200, await r.text()


async def test_an_operator_step_on_another_node_s_alarm_is_refused_there_and_changes_nothing(
    postgres_url: str,
) -> None:
    """Only the receiving node holds an alarm's live state: ack/resolve/verify elsewhere is ForeignAlarm (HTTP 409)."""
    clock = FakeClock()
    north = await make(clock, [FakeSink()], store=open_alarm_store(postgres_url, "north"), escalate_after=0)
    south = await make(clock, [FakeSink()], store=open_alarm_store(postgres_url, "south"), escalate_after=0)
    try:
        alarm_id = (await north.receive(_press(1, "north"))).alarm_id
        for step in (
            south.acknowledge(alarm_id, "chen"),
            south.resolve(alarm_id, "chen"),
            south.verify(alarm_id, "chen"),
        ):
            with pytest.raises(ForeignAlarm) as refused:
                await step
            assert refused.value.node == "north"
        stored = await south.get_alarm(alarm_id)  # still visible on the other node
        assert stored.node == "north" and stored.acknowledged_by is None and stored.resolved_by is None
        acked = await north.acknowledge(alarm_id, "chen")  # the holder may
        assert acked.acknowledged_by == "chen"
    finally:
        await north.stop()
        await south.stop()
