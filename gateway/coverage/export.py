"""The coverage table as JSON rows, CSV (UTF-8 with a BOM, so Excel reads the Chinese) and XLSX (openpyxl)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from openpyxl import Workbook
from openpyxl.styles import Font

from gateway.coverage.model import DistrictSummary, KindergartenCoverage
from gateway.gb28181.ids import TIANJIN_DISTRICTS

__all__ = ["COLUMNS", "coverage_json", "district_name", "summary_json", "to_csv", "to_xlsx"]

COLUMNS: Final = (
    "区",
    "区代码",
    "幼儿园",
    "幼儿园编码",
    "状态",
    "原因",
    "设备在线",
    "设备登记",
    "通道在线",
    "通道登记",
    "大门口摄像机",
    "大门口在线",
    "大门口已确认",
    "周界摄像机",
    "周界在线",
    "一键报警",
    "一键报警在线",
    "最近成功演练",
    "录像",
    "上行丢包%",
    "24小时掉线次数",
)


def district_name(code: str) -> str:
    """The district's Chinese name (the code itself outside Tianjin)."""
    return TIANJIN_DISTRICTS.get(code[:6], code)


def _date(at: float | None) -> str:
    return datetime.fromtimestamp(at).strftime("%Y-%m-%d") if at is not None else ""


def _recording(value: bool | None) -> str:
    return "未知" if value is None else ("可用" if value else "不可用")


def coverage_json(row: KindergartenCoverage) -> dict[str, Any]:
    """One kindergarten as the API gives it."""
    f = row.facts
    return {
        "id": f.id,
        "name": f.name,
        "district_code": f.district_code,
        "district_name": district_name(f.district_code),
        "status": row.status.value,
        "status_label": row.status.label,
        "reasons": [{"code": x.reason.value, "text": x.text} for x in row.findings],
        "devices": f.devices,
        "devices_online": f.devices_online,
        "channels": f.channels,
        "channels_online": f.channels_online,
        "cameras": f.cameras,
        "cameras_online": f.cameras_online,
        "entrance": f.entrance,
        "entrance_online": f.entrance_online,
        "entrance_confirmed": f.entrance_confirmed,
        "perimeter": f.perimeter,
        "perimeter_online": f.perimeter_online,
        "alarms": f.alarms,
        "alarms_online": f.alarms_online,
        "last_drill": f.last_drill,
        "recording": f.recording,
        "uplink_loss_percent": round(f.uplink.loss_percent, 2) if f.uplink is not None else None,
        "uplink_packets": (f.uplink.received + f.uplink.lost) if f.uplink is not None else 0,
        "flaps_24h": f.flaps,
    }


def summary_json(summary: DistrictSummary) -> dict[str, Any]:
    """A district's (or the city's) counts."""
    return {
        "district_code": summary.district_code,
        "district_name": district_name(summary.district_code) if summary.district_code else "全市",
        "total": summary.total,
        "complete": summary.complete,
        "partial": summary.partial,
        "missing": summary.missing,
        "rate": round(summary.rate, 4),
    }


def _cells(row: KindergartenCoverage) -> list[Any]:
    f = row.facts
    loss = round(f.uplink.loss_percent, 2) if f.uplink is not None else ""
    return [
        district_name(f.district_code),
        f.district_code,
        f.name,
        f.id,
        row.status.label,
        row.reason_text,
        f.devices_online,
        f.devices,
        f.channels_online,
        f.channels,
        f.entrance,
        f.entrance_online,
        "是" if f.entrance_confirmed else "否",
        f.perimeter,
        f.perimeter_online,
        f.alarms,
        f.alarms_online,
        _date(f.last_drill),
        _recording(f.recording),
        loss,
        f.flaps,
    ]


def to_csv(rows: Sequence[KindergartenCoverage]) -> bytes:
    """The table as CSV, header first, UTF-8 with a byte-order mark."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(_cells(row))
    return out.getvalue().encode("utf-8-sig")


def to_xlsx(rows: Sequence[KindergartenCoverage], districts: Sequence[DistrictSummary], city: DistrictSummary) -> bytes:
    """A workbook: sheet 幼儿园 (the table) and sheet 汇总 (counts per district and the city)."""
    book = Workbook()
    sheet = book.active
    sheet.title = "幼儿园"
    sheet.append(list(COLUMNS))
    for row in rows:
        sheet.append(_cells(row))
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    sheet.freeze_panes = "A2"
    totals = book.create_sheet("汇总")
    totals.append(["区", "区代码", "幼儿园总数", "达标", "部分接入", "未接入", "达标率%"])
    for item in (*districts, city):
        data = summary_json(item)
        totals.append(
            [
                data["district_name"],
                item.district_code,
                item.total,
                item.complete,
                item.partial,
                item.missing,
                round(100 * item.rate, 1),
            ]
        )
    for cell in totals[1]:
        cell.font = Font(bold=True)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
