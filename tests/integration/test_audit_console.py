"""The console's 审计日志 page in headless Chromium: rows from /api/audit, police marked, text only, export link."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.audit.actions import AuditAction
from gateway.config import load_config
from gateway.security.principal import Principal, Role
from gbplatform.app import build_gateway
from tests.conftest import TEST_ADMIN, TEST_TOKEN_GRANT, add_user, http_text
from tests.integration.test_console_chromium import chromium_page

LI = Principal("li", Role.DISTRICT_DUTY, district_code="120101", source="10.0.0.7")
WANG = Principal("wang", Role.POLICE, source="10.9.0.1", via="token")
HOSTILE = Principal('<img src=x onerror="window.pwned=1">', Role.MAINTENANCE, source="10.0.0.9")

ROWS = """(() => [...document.querySelectorAll('#audit-rows tr')].map(tr => ({
  cells: [...tr.children].map(td => td.textContent), police: tr.classList.contains('police'),
  imgs: tr.querySelectorAll('img').length,
})))()"""


async def audit_rows(cdp: Any, session: str) -> list[dict[str, Any]]:
    """The page's rows but the browser's own login record (the test logs in as a 市级管理员)."""
    rows: list[dict[str, Any]] = await cdp.evaluate(session, ROWS)
    return [r for r in rows if r["cells"][4] != "登录"]


async def test_audit_page_lists_records_and_marks_police(started_nodes: list[Any]) -> None:
    config = load_config(
        None, sip_port=0, http_port=0, db=":memory:", flush_interval=0.2, api_tokens=(TEST_TOKEN_GRANT,)
    )
    service = build_gateway(config)
    await service.start()
    started_nodes.append(service)
    await add_user(service, *TEST_ADMIN)  # chromium_page logs in through the form as TEST_ADMIN
    trail = service.audit
    trail.record(AuditAction.LIVE_VIEW, actor=LI, target="12010100001310000001", detail={"op": "close"}, duration=75.0)
    trail.record(AuditAction.SNAPSHOT, actor=WANG, target="12010100001310000002")
    trail.record(AuditAction.ACCESS_DENIED, actor=HOSTILE, target="12010100001310000003", outcome="http_403")
    base = f"http://127.0.0.1:{service.http_port}"

    async with asyncio.timeout(100), chromium_page(f"{base}/") as (cdp, session, _log):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline and not await cdp.evaluate(session, "typeof window.kgwConsole === 'object'"):
            await asyncio.sleep(0.2)
        await cdp.evaluate(session, "document.getElementById('audit-open').click()")
        rows: list[dict[str, Any]] = []
        while loop.time() < deadline:
            rows = await audit_rows(cdp, session)
            if len(rows) == 3:
                break
            await asyncio.sleep(0.2)
        assert len(rows) == 3, rows
        denied, snapshot, live = rows
        assert live["cells"][1:] == [
            "li",
            "区级值班员",
            "10.0.0.7",
            "实时视频",
            "12010100001310000001",
            "成功",
            "1 分 15 秒",
        ]
        assert snapshot["police"] and snapshot["cells"][1] == "wang" and "公安" in snapshot["cells"][2]
        assert snapshot["cells"][4] == "抓图" and not live["police"]
        assert denied["cells"][1] == HOSTILE.username and denied["imgs"] == 0 and denied["cells"][6] == "拒绝 (403)"
        assert await cdp.evaluate(session, "window.pwned === undefined")
        headers = await cdp.evaluate(
            session, "[...document.querySelectorAll('.audit-table th')].map(t => t.textContent)"
        )
        assert headers == ["时间", "用户", "角色", "来源地址", "操作", "对象", "结果", "时长"]

        # Filter by user, then the export link carries the same filter.
        await cdp.evaluate(
            session,
            """(() => { const a = document.getElementById('audit-actor'); a.value = 'wang';
                 a.dispatchEvent(new Event('change', {bubbles: true}));
                 document.querySelector('.audit-filters').requestSubmit(); })()""",
        )
        while loop.time() < deadline:
            rows = await audit_rows(cdp, session)
            if len(rows) == 1:
                break
            await asyncio.sleep(0.2)
        assert [r["cells"][1] for r in rows] == ["wang"]
        href = await cdp.evaluate(session, "document.getElementById('audit-export').href")
        assert href.endswith("/api/audit/export.csv?actor=wang"), href
        csv_text = await http_text(href)
        lines = csv_text.lstrip("\ufeff").splitlines()
        assert lines[0].startswith("seq,time,actor,role") and len(lines) == 2 and ",wang,police," in lines[1]
