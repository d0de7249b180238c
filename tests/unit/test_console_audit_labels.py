"""The console's audit page names every audit action in zh-CN (platform/gbplatform/console/audit.js)."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.audit.actions import AuditAction

AUDIT_JS = Path(__file__).resolve().parents[2] / "platform" / "gbplatform" / "console" / "audit.js"


def test_every_audit_action_has_a_zh_cn_label() -> None:
    text = AUDIT_JS.read_text(encoding="utf-8")
    block = re.search(r"const ACTIONS = \{(.*?)\};", text, re.S)
    assert block is not None, "audit.js has no ACTIONS table"
    labelled = set(re.findall(r"(\w+):\s*\"", block.group(1)))
    missing = {action.value for action in AuditAction} - labelled
    assert not missing, f"audit actions without a console label: {sorted(missing)}"
