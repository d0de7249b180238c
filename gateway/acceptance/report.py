"""The acceptance report: one self-contained, printable HTML page (zh-CN).

Everything is inline (CSS, the snapshots as ``data:`` JPEGs), so the stored
page (``acceptance.report``) prints or archives as is, with no link to the
gateway; print CSS keeps a check and a snapshot from splitting across pages.
Every value from a device (names, models) is HTML-escaped. Pure: times are
formatted from the wall-clock values stored with the run, in UTC+8 (the city's
time zone, fixed offset: the report must read the same on any server).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone

from gateway.acceptance.model import Acceptance, AcceptanceState, CheckName, CheckResult, CheckState
from gateway.acceptance.rules import AREA_LABELS
from gateway.registry.model import AreaTag

__all__ = ["CITY_TZ", "render_report", "when"]

CITY_TZ = timezone(timedelta(hours=8), "CST")

_CSS = """
body{font-family:"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:2em;color:#111;max-width:60em}
h1{font-size:1.5em;margin:0 0 .3em}h2{font-size:1.15em;margin:1.4em 0 .4em;border-bottom:1px solid #999}
table{border-collapse:collapse;width:100%;margin:.4em 0}th,td{border:1px solid #bbb;padding:.25em .5em;text-align:left;
vertical-align:top;font-size:.92em}th{background:#eee}
.passed{color:#0a6b2d}.failed{color:#b00020}.skipped,.pending,.running{color:#666}
.verdict{font-size:1.3em;font-weight:bold;padding:.4em .8em;border:2px solid;display:inline-block;margin:.5em 0}
.fix{background:#fff4f4;border-left:4px solid #b00020;padding:.4em .8em;white-space:pre-line;margin:.3em 0}
.check{page-break-inside:avoid;break-inside:avoid}
.shots{display:flex;flex-wrap:wrap;gap:.8em}figure{margin:0;width:15em;page-break-inside:avoid;break-inside:avoid}
figure img{width:100%;border:1px solid #888}figcaption{font-size:.85em}
.meta td:first-child{width:8em;font-weight:bold}
@media print{body{margin:0;max-width:none}a{color:inherit;text-decoration:none}.noprint{display:none}
@page{size:A4;margin:15mm}}
"""


def when(epoch: float | None) -> str:
    """A wall-clock time as the report shows it (Tianjin time), or a dash."""
    if epoch is None:
        return "—"
    return datetime.fromtimestamp(epoch, UTC).astimezone(CITY_TZ).strftime("%Y-%m-%d %H:%M:%S")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _check_html(check: CheckResult) -> str:
    state = check.state
    rows = "".join(
        f'<tr><td>{_e(i.label)}</td><td class="{"passed" if i.ok else "failed"}">'
        f"{'✔' if i.ok else '✘'} {_e(i.detail)}</td></tr>"
        for i in check.items
    )
    fix = f'<div class="fix"><b>需整改：</b>{_e(check.fix)}</div>' if check.fix and state is CheckState.FAILED else ""
    took = f"（用时 {check.elapsed:.1f} 秒）" if check.elapsed is not None else ""
    table = f"<table><tr><th>对象</th><th>结果</th></tr>{rows}</table>" if rows else ""
    return (
        f'<section class="check" id="check-{check.name.value}"><h2>{_e(check.name.label)} · '
        f'<span class="{state.value}">{_e(state.label)}</span></h2>'
        f"<p>{_e(check.summary)}{_e(took)}</p>{fix}{table}</section>"
    )


def render_report(
    run: Acceptance,
    *,
    kindergarten_name: str,
    district_name: str,
    snapshots: Mapping[str, bytes],
    channel_names: Mapping[str, str],
) -> str:
    """The report of a (finished) run: verdict, who and when, checks with fixes, snapshots, devices."""
    verdict_class = {AcceptanceState.PASSED: "passed", AcceptanceState.FAILED: "failed"}.get(run.state, "pending")
    meta = [
        ("幼儿园", f"{kindergarten_name}（{run.kindergarten_id}）"),
        ("所属区", f"{district_name}（{run.district_code}）"),
        ("验收人", run.started_by),
        ("开始时间", when(run.started_at)),
        ("结束时间", when(run.finished_at)),
        ("验收编号", run.id),
    ]
    if run.drill_alarm_id:
        meta.append(("演练报警编号", run.drill_alarm_id))
    meta_rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in meta)
    checks = "".join(_check_html(c) for c in run.checks)
    areas = run.check(CheckName.AREAS)
    area_of: dict[str, str] = {}
    if areas is not None:
        for item in areas.items:
            area = item.extra.get("area")
            area_of[item.subject] = AREA_LABELS[AreaTag(area)] if isinstance(area, str) else "未确认"
    pictures = run.check(CheckName.PICTURES)
    verdicts = {i.subject: i for i in pictures.items} if pictures is not None else {}
    figures = []
    for channel_id, jpeg in sorted(snapshots.items()):
        name = channel_names.get(channel_id, "")
        verdict = verdicts.get(channel_id)
        status = f"{'✔' if verdict.ok else '✘'} {verdict.detail}" if verdict is not None else ""
        data = base64.b64encode(jpeg).decode("ascii")
        figures.append(
            f'<figure><img alt="{_e(name or channel_id)}" src="data:image/jpeg;base64,{data}">'
            f"<figcaption><b>{_e(name)}</b><br>{_e(channel_id)}<br>区域：{_e(area_of.get(channel_id, '未确认'))}"
            f"<br>{_e(status)}</figcaption></figure>"
        )
    shots = f'<h2>摄像机快照</h2><div class="shots">{"".join(figures)}</div>' if figures else ""
    device_rows = "".join(
        f"<tr><td>{_e(d.id)}</td><td>{_e(d.name)}</td><td>{_e(d.manufacturer)}</td><td>{_e(d.model)}</td>"
        f"<td>{_e(d.firmware)}</td><td>{d.channels}</td><td>{'在线' if d.online else '离线'}</td></tr>"
        for d in run.devices
    )
    devices = (
        "<h2>设备清单（验收时）</h2><table><tr><th>设备编码</th><th>名称</th><th>厂商</th><th>型号</th>"
        f"<th>固件</th><th>通道数</th><th>状态</th></tr>{device_rows}</table>"
    )
    failed = [c for c in run.checks if c.state is CheckState.FAILED]
    summary = (
        "<p>全部检查通过。</p>"
        if run.state is AcceptanceState.PASSED
        else f"<p>未通过的检查：{_e('、'.join(c.name.label for c in failed))}。整改后请重新验收。</p>"
        if failed
        else ""
    )
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        f"<title>验收报告 · {_e(kindergarten_name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>幼儿园安防接入验收报告</h1>"
        f'<div class="verdict {verdict_class}" id="verdict">{_e(run.state.label)}</div>{summary}'
        f'<table class="meta">{meta_rows}</table>{checks}{shots}{devices}'
        "</body></html>"
    )
