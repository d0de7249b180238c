"""Test principals for scope tests: a web part that sets ``request[PRINCIPAL_KEY]`` from a test header.

The real authentication middleware (logins, sessions, tokens) decides who a
request is; scope tests only need *some* principal on a real node's real
routes. :func:`principal_injector` returns a ``WebPart`` that puts an outermost
middleware on the node's application: a request carrying ``X-Test-Principal:
<name>`` is that principal, one without the header is anonymous. It also
installs an in-memory audit recorder so a test can see ``ACCESS_DENIED`` records.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.audit.actions import AuditAction
from gateway.httpapi.identity import AUDIT, PRINCIPAL_KEY
from gateway.security.principal import Principal

HEADER = "X-Test-Principal"


@dataclass
class MemoryAudit:
    """An AuditRecorder that keeps records in a list."""

    records: list[dict[str, Any]] = field(default_factory=list)

    def record(
        self,
        action: AuditAction,
        *,
        actor: Principal | None,
        target: str = "",
        source: str = "",
        outcome: str = "ok",
        detail: Mapping[str, object] | None = None,
        duration: float | None = None,
    ) -> None:
        self.records.append(
            {"action": action, "actor": actor, "target": target, "outcome": outcome, "detail": dict(detail or {})}
        )

    def denied(self, username: str) -> list[dict[str, Any]]:
        """ACCESS_DENIED records of one user."""
        return [
            r
            for r in self.records
            if r["action"] is AuditAction.ACCESS_DENIED and r["actor"] is not None and r["actor"].username == username
        ]


def principal_injector(principals: Mapping[str, Principal], audit: MemoryAudit) -> Callable[[web.Application], None]:
    """A web part: ``X-Test-Principal: name`` makes the request ``principals[name]``."""

    @web.middleware
    async def inject(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        name = request.headers.get(HEADER)
        if name is not None:
            request[PRINCIPAL_KEY] = principals[name]
        return await handler(request)

    def part(app: web.Application) -> None:
        app.middlewares.insert(0, inject)
        app[AUDIT] = audit

    return part


async def call(url: str, who: str | None, data: Any = None, method: str | None = None) -> tuple[int, Any]:
    """One HTTP request as ``who`` (None: anonymous); JSON answers parsed, anything else as bytes."""

    def run() -> tuple[int, Any]:
        body = None if data is None else json.dumps(data).encode()
        headers = {"Content-Type": "application/json"}
        if who is not None:
            headers[HEADER] = who
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, _decode(response.headers.get_content_type(), response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.headers.get_content_type(), exc.read())

    return await asyncio.to_thread(run)


def _decode(content_type: str, raw: bytes) -> Any:
    return json.loads(raw or b"null") if content_type == "application/json" else raw
