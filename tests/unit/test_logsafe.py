"""Log lines escape network text (issue 10, L3): the helper and the filter every kgw process installs."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

from gateway.logsafe import EscapingFilter, printable
from tests.processes import ROOT

EVIL = "1201\r\n12:00:00 INFO kgw: forged\x1b[2J\x07\u202e"


def test_printable_escapes_controls_and_keeps_chinese() -> None:
    assert printable("和平区第三幼儿园·大门口") == "和平区第三幼儿园·大门口"
    assert printable(EVIL) == "1201\\r\\n12:00:00 INFO kgw: forged\\x1b[2J\\x07\\u202e"
    assert printable("x" * 300).endswith("…") and len(printable("x" * 300)) == 201


def _emit(*args: object, **kwargs: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(EscapingFilter())
    logger = logging.getLogger("kgw.test.logsafe")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(*args, **kwargs)  # type: ignore[arg-type]
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_filter_escapes_every_string_argument() -> None:
    line = _emit("REGISTER of %s from %s refused (%d)", EVIL, "127.0.0.1:5060", 403)
    assert line.count("\n") == 1 and "\x1b" not in line and "\u202e" not in line
    assert "1201\\r\\n12:00:00 INFO kgw: forged" in line and "(403)" in line
    assert _emit("%(user)s", {"user": EVIL}).count("\n") == 1


def test_kgw_processes_install_the_filter() -> None:
    code = (
        "import logging; from gateway.cli import _setup_logging; _setup_logging('info'); "
        f"logging.getLogger('kgw.x').info('from %s', {EVIL!r})"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("\n") == 1 and "forged\\x1b[2J" in result.stderr, result.stderr
