"""Helpers for tests that run ``kgw`` as real processes (signals, SIGKILL, restarts)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import TEST_TOKEN, TEST_TOKEN_GRANT, free_ports, http_json

ROOT = Path(__file__).resolve().parents[1]
KGW = [sys.executable, "-m", "gateway.cli"]


def free_tcp_port() -> int:
    """A loopback port for a process's command line (see ``tests.conftest.free_ports``)."""
    return free_ports(1)


def with_test_token(args: list[str]) -> list[str]:
    """A node's command line that also accepts the tests' administrator token (by its SHA-256)."""
    if args and args[0] in ("gateway", "platform"):
        return [*args, "--api-token-hash", f"tests:{TEST_TOKEN_GRANT.role.value}:{TEST_TOKEN_GRANT.token_hash}"]
    return args


class Proc:
    """A ``kgw`` subprocess whose output goes to files (no pipe can fill up and block it).

    Nodes get the tests' API token (``with_test_token``); ``kgw simulate`` sends it
    (``KGW_API_TOKEN``) when it provisions through ``--api``."""

    def __init__(self, name: str, args: list[str], tmp: Path) -> None:
        self.out = tmp / f"{name}.out"
        self.err = tmp / f"{name}.err"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "KGW_API_TOKEN": TEST_TOKEN}  # (conftest sets it too)
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.popen = subprocess.Popen([*KGW, *with_test_token(args)], cwd=ROOT, stdout=out, stderr=err, env=env)

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    async def stop(self, sig: int, timeout: float = 60.0) -> int:
        self.popen.send_signal(sig)
        return await asyncio.to_thread(self.popen.wait, timeout)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)


LOGIN_LINE = re.compile(r"^\s*login\s+(\S+) / (\S+)\s", re.MULTILINE)


def banner_login(output: str) -> tuple[str, str]:
    """The demo administrator's user name and password, as the demo's banner prints them."""
    match = LOGIN_LINE.search(output)
    assert match is not None, f"no login line in the banner:\n{output[-3000:]}"
    return match.group(1), match.group(2)


async def login_headers(base: str, username: str, password: str) -> dict[str, str]:
    """Log in like the console does; the session as request headers (Cookie, and the Origin a POST needs)."""

    def call() -> dict[str, str]:
        body = json.dumps({"username": username, "password": password}).encode()
        request = urllib.request.Request(
            f"{base}/api/login", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        opener = urllib.request.build_opener()  # not the tests' token opener: a login of its own
        with opener.open(request, timeout=20) as response:
            cookie = response.headers["Set-Cookie"].split(";", 1)[0]
        return {"Cookie": cookie, "Origin": base}

    return await asyncio.to_thread(call)


async def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any] | None:
    """None while nothing listens yet."""
    try:
        return await http_json(url, headers=headers)
    except (urllib.error.URLError, ConnectionError, OSError):
        return None


async def until_json(
    url: str, predicate: Any, proc: Proc, timeout: float = 60.0, headers: dict[str, str] | None = None
) -> Any:
    """Poll ``url`` until ``predicate(body)``; fail early (with its output) if ``proc`` died."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while loop.time() < deadline:
        assert proc.popen.poll() is None, f"process exited {proc.popen.returncode}:\n{proc.output()[-3000:]}"
        result = await get_json(url, headers)
        if result is not None and result[0] == 200:
            last = result[1]
            if predicate(last):
                return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never satisfied the condition; last {last!r}\n{proc.output()[-3000:]}")
