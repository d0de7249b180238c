"""The coverage dashboard's API on a running node, on SQLite and PostgreSQL (``db_url``).

The registry state is put in the node's directory as catalogs would leave it; the
drills are real ``alarm`` rows with their deliveries (written by another node's
alarm store on the same database), the flaps and the history real ``status_event``
rows, the kept days real ``coverage_day`` rows. Exports are parsed back (csv,
openpyxl); the scope of each role is checked, forged filters included.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import openpyxl
import pytest

from gateway.alarms.model import Alarm, Delivery, DeliveryEvent, DeliveryState
from gateway.alarms.store import open_alarm_store
from gateway.app import GatewayService
from gateway.config import load_config
from gateway.coverage import store as coverage_sql
from gateway.coverage.export import COLUMNS
from gateway.coverage.history import CoverageDay, day_spans
from gateway.coverage.uplink import StreamCounters
from gateway.registry.model import (
    AreaConfirmation,
    AreaTag,
    Channel,
    Device,
    EntityKind,
    Kindergarten,
    StatusEvent,
    guess_area,
)
from gateway.security.principal import Principal, Role
from gbplatform.app import build_gateway
from tests.conftest import TEST_TOKEN_GRANT, http_text
from tests.scope_principals import MemoryAudit, audit_part, call, grants

HEPING, HEDONG = "120101", "120102"
KG_A = "12010100112160000100"  # 达标
KG_B = "12010100112160000200"  # 部分接入
KG_C = "12010200112160000300"  # 未接入 (no device)
NVR_A, BOX_A = "12010100111180000100", "12010100111340000101"
NVR_B, BOX_B = "12010100111180000200", "12010100111340000201"

PRINCIPALS = {
    "admin": Principal("admin", Role.CITY_ADMIN),
    "duty": Principal("和平值班员", Role.DISTRICT_DUTY, district_code=HEPING),
    "other_duty": Principal("河东值班员", Role.DISTRICT_DUTY, district_code=HEDONG),
    "kg": Principal("园长", Role.KINDERGARTEN, kindergarten_id=KG_B),
    "orphan_kg": Principal("无园园长", Role.KINDERGARTEN),
}


def _cam(nvr: str, kg: str, n: int, name: str, online: bool = True) -> Channel:
    cid = f"{nvr[:10]}131{nvr[13:18]}{n:02d}"
    return Channel(cid, nvr, kg, HEPING, name=name, area=guess_area(name), type_code=131, online=online)


def _populate(service: GatewayService, now: float) -> None:
    d = service.directory
    d.add_kindergartens(
        [
            Kindergarten(KG_A, "和平区第一幼儿园", HEPING),
            Kindergarten(KG_B, "和平区第二幼儿园", HEPING),
            Kindergarten(KG_C, "河东区第三幼儿园", HEDONG),
        ]
    )
    for device_id, kg, kind, online in (
        (NVR_A, KG_A, 118, True),
        (BOX_A, KG_A, 134, True),
        (NVR_B, KG_B, 118, True),
        (BOX_B, KG_B, 134, False),
    ):
        d.put_device(Device(device_id, kg, HEPING, device_type=kind, online=online))
    d.replace_channels(NVR_A, [_cam(NVR_A, KG_A, 1, "大门口"), _cam(NVR_A, KG_A, 2, "周界东侧")])
    d.replace_channels(NVR_B, [_cam(NVR_B, KG_B, 1, "小一班教室"), _cam(NVR_B, KG_B, 2, "周界西侧")])
    for box, kg in ((BOX_A, KG_A), (BOX_B, KG_B)):
        d.replace_channels(box, [Channel(box, box, kg, HEPING, name="一键报警", type_code=134, online=True)])
    gate = _cam(NVR_A, KG_A, 1, "大门口").id
    d.confirm_area(AreaConfirmation(gate, AreaTag.ENTRANCE, "installer", now), 0.0)


def _drill(alarm_id: str, seq: int, kg: str, at: float, state: DeliveryState, *, drill: bool = True) -> Any:
    alarm = Alarm(
        alarm_id, seq, f"k{seq}", BOX_A, BOX_A, kg, HEPING, 1, 1, None, None, None, "演练", None, None, seq, at,
        drill=drill,
    )  # fmt: skip
    delivered = at + 1 if state is DeliveryState.DELIVERED else None
    delivery = Delivery(alarm_id, "mqtt", DeliveryEvent.ALARM, kg, seq, at, state, delivered_at=delivered)
    return alarm, delivery


@dataclass
class Node:
    service: GatewayService
    base: str
    audit: MemoryAudit


@pytest.fixture
async def node(db_url: str, started_nodes: list[GatewayService]) -> Node:
    audit = MemoryAudit()
    config = load_config(
        None, sip_port=0, http_port=0, db=db_url, flush_interval=0.2,
        api_tokens=(TEST_TOKEN_GRANT, *grants(PRINCIPALS)), coverage_refresh=3600.0,
    )  # fmt: skip
    service = build_gateway(config, web_parts=(audit_part(audit),))
    await service.start()
    started_nodes.append(service)
    now = time.time()
    _populate(service, now)
    # Drills: kgA's went everywhere 10 days ago (an older one too); kgB's never reached its sink, and kgB's
    # real alarm (delivered) is no drill.
    rows = [
        _drill("d1", 1, KG_A, now - 10 * 86400, DeliveryState.DELIVERED),
        _drill("d0", 2, KG_A, now - 40 * 86400, DeliveryState.DELIVERED),
        _drill("d2", 3, KG_B, now - 86400, DeliveryState.DEAD),
        _drill("r1", 4, KG_B, now - 3600, DeliveryState.DELIVERED, drill=False),
    ]
    other = open_alarm_store(db_url, node="acceptance-node")
    try:
        other.save_intake([a for a, _ in rows], [d for _, d in rows], [])
    finally:
        other.close()
    # kgB's NVR dropped three times in the last hour (it is back now); an orderly unregistration
    # (a reboot saying goodbye) is not a flap.
    lapsed = ["keepalive_timeout", "", "registration_expired", "", "keepalive_timeout", "", "unregistered", ""]
    events = [StatusEvent(NVR_B, EntityKind.DEVICE, i % 2 == 1, now - 3000 + i * 60, reason or "registered")
              for i, reason in enumerate(lapsed)]  # fmt: skip
    await service.store.call(lambda store: store.append_status_events(events))
    await service.coverage.refresh_inputs()
    return Node(service, f"http://127.0.0.1:{service.http_port}", audit)


async def test_list_summary_one_and_metrics(node: Node) -> None:
    status, summary = await call(f"{node.base}/api/coverage/summary", "admin")
    assert status == 200, summary
    assert {k: summary["city"][k] for k in ("total", "complete", "partial", "missing")} == {
        "total": 3, "complete": 1, "partial": 1, "missing": 1,
    }  # fmt: skip
    assert [(d["district_name"], d["total"], d["complete"]) for d in summary["districts"]] == [
        ("和平区", 2, 1),
        ("河东区", 1, 0),
    ]
    assert {"code": "no_entrance", "label": "无大门口摄像机"} in summary["reasons"]

    status, page = await call(f"{node.base}/api/coverage/kindergartens?all=true", "admin")
    assert status == 200 and page["total"] == 3
    by_id = {row["id"]: row for row in page["items"]}
    assert [row["id"] for row in page["items"]] == [KG_C, KG_B, KG_A]  # worst first
    a, b, c = by_id[KG_A], by_id[KG_B], by_id[KG_C]
    assert (a["status"], a["status_label"], a["reasons"]) == ("complete", "达标", [])
    assert a["entrance_confirmed"] and a["last_drill"] == pytest.approx(time.time() - 10 * 86400, abs=60)
    assert (c["status_label"], [r["text"] for r in c["reasons"]]) == ("未接入", ["无设备登记"])
    assert b["status_label"] == "部分接入" and b["last_drill"] is None and b["flaps_24h"] == 3
    assert [r["text"] for r in b["reasons"]] == [
        "无大门口摄像机",
        "一键报警离线",
        "从未演练",
        "24小时内掉线3次",
        "1台设备离线",
        "1路通道离线",
    ]

    for query, expected in (
        ("status=partial", [KG_B]),
        ("reason=never_drilled", [KG_B]),
        ("reason=no_devices", [KG_C]),
        (f"district={HEDONG}", [KG_C]),
        ("sort=name&order=desc", [KG_C, KG_B, KG_A]),
        ("sort=id", [KG_A, KG_B, KG_C]),
        (f"q={quote('第二')}", [KG_B]),
        ("sort=id&offset=1&limit=1", [KG_B]),
    ):
        status, page = await call(f"{node.base}/api/coverage/kindergartens?{query}", "admin")
        assert status == 200 and [row["id"] for row in page["items"]] == expected, (query, page)
    for bad in ("sort=password", "status=bogus", "reason=bogus", "order=up", "limit=0", "offset=-1"):
        status, body = await call(f"{node.base}/api/coverage/kindergartens?{bad}", "admin")
        assert status == 400, (bad, body)

    status, one = await call(f"{node.base}/api/coverage/kindergartens/{KG_B}", "admin")
    assert status == 200 and one["id"] == KG_B
    metrics = await http_text(f"{node.base}/metrics")
    assert f'kgw_kindergartens{{district="{HEPING}",status="complete"}} 1.0' in metrics
    assert f'kgw_kindergartens{{district="{HEPING}",status="partial"}} 1.0' in metrics
    assert f'kgw_kindergartens{{district="{HEDONG}",status="missing"}} 1.0' in metrics
    assert f'kgw_kindergartens{{district="{HEDONG}",status="complete"}} 0.0' in metrics


async def test_exports_parse_back(node: Node) -> None:
    status, raw = await call(f"{node.base}/api/coverage/export.csv?sort=id", "admin")
    assert status == 200 and raw.startswith(b"\xef\xbb\xbf")  # BOM: Excel reads UTF-8
    table = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert tuple(table[0]) == COLUMNS
    assert [(r[0], r[3], r[4]) for r in table[1:]] == [
        ("和平区", KG_A, "达标"),
        ("和平区", KG_B, "部分接入"),
        ("河东区", KG_C, "未接入"),
    ]
    row_b = dict(zip(COLUMNS, table[2]))
    assert row_b["原因"].startswith("无大门口摄像机；一键报警离线；从未演练") and row_b["24小时掉线次数"] == "3"
    assert dict(zip(COLUMNS, table[1]))["最近成功演练"] == (datetime.now() - timedelta(days=10)).strftime("%Y-%m-%d")

    status, raw = await call(f"{node.base}/api/coverage/export.xlsx?status=partial", "admin")
    assert status == 200 and raw[:2] == b"PK"
    book = openpyxl.load_workbook(io.BytesIO(raw), read_only=True)
    rows = list(book["幼儿园"].iter_rows(values_only=True))
    assert rows[0] == COLUMNS and len(rows) == 2 and rows[1][3] == KG_B and rows[1][4] == "部分接入"
    totals = list(book["汇总"].iter_rows(values_only=True))
    assert totals[-1][:6] == ("全市", "", 3, 1, 1, 1) or totals[-1][:6] == ("全市", None, 3, 1, 1, 1)


async def test_scope_of_each_role_and_forged_filters(node: Node) -> None:
    base = f"{node.base}/api/coverage"
    status, page = await call(f"{base}/kindergartens?all=true", "duty")
    assert status == 200 and sorted(r["id"] for r in page["items"]) == [KG_A, KG_B]
    # A forged filter for another district gives nothing, not that district's rows.
    status, page = await call(f"{base}/kindergartens?district={HEDONG}", "duty")
    assert status == 200 and page["items"] == [] and page["total"] == 0
    status, summary = await call(f"{base}/summary", "duty")
    assert summary["city"]["total"] == 2 and [d["district_code"] for d in summary["districts"]] == [HEPING]
    status, raw = await call(f"{base}/export.csv?district={HEDONG}", "duty")
    assert status == 200 and len(list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))) == 1  # header only

    # Another district's kindergarten answers like an unknown one, and the refusal is audited.
    status, body = await call(f"{base}/kindergartens/{KG_A}", "other_duty")
    assert (status, body) == (404, {"error": f"unknown kindergarten {KG_A}"})
    status, body = await call(f"{base}/kindergartens/12010200112169999900", "other_duty")
    assert (status, body) == (404, {"error": "unknown kindergarten 12010200112169999900"})
    assert [r["target"] for r in node.audit.denied("河东值班员")] == [KG_A]

    # 园方: their own kindergarten only, whatever they ask for; no district history.
    status, page = await call(f"{base}/kindergartens?all=true&district={HEPING}&status=complete", "kg")
    assert status == 200 and page["items"] == []
    status, page = await call(f"{base}/kindergartens?all=true", "kg")
    assert [r["id"] for r in page["items"]] == [KG_B]
    status, body = await call(f"{base}/kindergartens/{KG_A}", "kg")
    assert status == 404
    status, history = await call(f"{base}/history", "kg")
    assert status == 200 and history["districts"] == [] and history["city"] == []
    # A 园方 account without a kindergarten sees nothing at all (fails closed).
    status, page = await call(f"{base}/kindergartens?all=true", "orphan_kg")
    assert status == 200 and page["items"] == []
    # Nobody anonymous.
    for path in ("summary", "kindergartens", "export.csv", "export.xlsx", "history"):
        status, _ = await call(f"{base}/{path}", None)
        assert status == 401, path


async def test_history_from_status_events_is_computed_once_and_kept(node: Node) -> None:
    service = node.service
    today = datetime.now().date()
    (two_days_ago,) = day_spans(today - timedelta(days=2), today - timedelta(days=2))
    # kgA's NVR was offline from 01:00 two days ago until the next morning: that day kgA is partial.
    outage = [
        StatusEvent(NVR_A, EntityKind.DEVICE, False, two_days_ago.start + 3600, "keepalive"),
        StatusEvent(NVR_A, EntityKind.DEVICE, True, two_days_ago.end + 600, "registered"),
    ]
    await service.store.call(lambda store: store.append_status_events(outage))
    status, history = await call(f"{node.base}/api/coverage/history?days=5", "admin")
    assert status == 200, history
    days = [(today - timedelta(days=n)).isoformat() for n in range(5, 0, -1)]
    assert history["days"] == days
    heping = next(d for d in history["districts"] if d["district_code"] == HEPING)
    got = {p["day"]: (p["complete"], p["partial"], p["missing"]) for p in heping["points"]}
    # kgB's alarm box is offline now and has no event: it was offline all along, so kgB is partial every day
    # (its NVR's flaps are today's). The day after the outage kgA lost 10 minutes: still held.
    assert got == {day: ((0, 2, 0) if day == two_days_ago.day else (1, 1, 0)) for day in days}
    hedong = next(d for d in history["districts"] if d["district_code"] == HEDONG)
    assert all(p["missing"] == 1 and p["rate"] == 0 for p in hedong["points"])
    city = {p["day"]: p for p in history["city"]}
    assert city[days[-1]]["total"] == 3 and city[days[-1]]["rate"] == pytest.approx(1 / 3, abs=1e-4)

    # The days are kept in coverage_day: changing a kept row shows that it is not computed again.
    kept = await service.store.call(coverage_sql.load_days, days[0])
    assert {(r.day, r.district_code) for r in kept} == {(d, c) for d in days for c in (HEPING, HEDONG)}
    await service.store.call(coverage_sql.save_days, [CoverageDay(days[0], HEDONG, 1, 0, 0)])
    status, history = await call(f"{node.base}/api/coverage/history?days=5", "admin")
    hedong = next(d for d in history["districts"] if d["district_code"] == HEDONG)
    assert hedong["points"][0] == {"day": days[0], "complete": 1, "partial": 0, "missing": 0, "total": 1, "rate": 1.0}
    # A district officer gets their district's history only.
    status, history = await call(f"{node.base}/api/coverage/history", "duty")
    assert status == 200 and [d["district_code"] for d in history["districts"]] == [HEPING]
    assert len(history["days"]) == 90
    status, _ = await call(f"{node.base}/api/coverage/history?days=91", "admin")
    assert status == 400


async def test_recordings_and_uplink_loss_reach_the_status(node: Node) -> None:
    service = node.service
    gate = next(c.id for c in service.directory.channels_of_kindergarten(KG_A) if "大门口" in c.name)
    service.records.answers[gate] = False  # the last RecordInfo search of the gate camera went unanswered
    service.coverage.loss.sample([StreamCounters("s", KG_A, 0, 0)], time.time())
    service.coverage.loss.sample([StreamCounters("s", KG_A, 9000, 1000)], time.time())
    status, row = await call(f"{node.base}/api/coverage/kindergartens/{KG_A}", "admin")
    # The evaluation is cached for a second: wait for a fresh one.
    deadline = time.monotonic() + 10
    while row["status"] == "complete" and time.monotonic() < deadline:
        status, row = await call(f"{node.base}/api/coverage/kindergartens/{KG_A}", "admin")
    assert [r["text"] for r in row["reasons"]] == ["录像不可用", "上行丢包 10.0%"]
    assert row["recording"] is False and row["uplink_loss_percent"] == 10.0
