"""Test principals for scope tests: each one a real API token of the node.

The real authentication middleware decides who a request is: :func:`grants`
makes one API token per test principal (same name, role, district and
kindergarten) for the node's ``api_tokens``, and :func:`auth_headers` /
:func:`call` send it. :func:`audit_part` installs an in-memory audit recorder
so a test can see ``ACCESS_DENIED`` records.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.audit.actions import AuditAction
from gateway.httpapi.identity import AUDIT
from gateway.security.accounts import ApiToken, secret_digest
from gateway.security.principal import Principal


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


_SECRETS: dict[str, str] = {}


def grants(principals: Mapping[str, Principal]) -> tuple[ApiToken, ...]:
    """One API token per principal, for the node's ``api_tokens`` (the token's name is the user name)."""
    tokens = []
    for name, p in principals.items():
        secret = _SECRETS.setdefault(name, f"kgw_scope_test_{name}_" + secrets.token_urlsafe(16))
        tokens.append(ApiToken(p.username, secret_digest(secret), p.role, p.district_code, p.kindergarten_id))
    return tuple(tokens)


def auth_headers(who: str) -> dict[str, str]:
    """The credentials of a principal made by :func:`grants`."""
    return {"Authorization": f"Bearer {_SECRETS[who]}"}


def audit_part(audit: MemoryAudit) -> Callable[[web.Application], None]:
    """A web part: the node's audit recorder is ``audit`` (the test reads its records)."""

    def part(app: web.Application) -> None:
        app[AUDIT] = audit

    return part


async def call(url: str, who: str | None, data: Any = None, method: str | None = None) -> tuple[int, Any]:
    """One HTTP request as ``who`` (None: anonymous); JSON answers parsed, anything else as bytes."""

    def run() -> tuple[int, Any]:
        body = None if data is None else json.dumps(data).encode()
        headers = {"Content-Type": "application/json"}
        if who is not None:
            headers.update(auth_headers(who))
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:  # a plain opener: exactly these credentials (not the tests' default token)
            with urllib.request.build_opener().open(request, timeout=30) as response:
                return response.status, _decode(response.headers.get_content_type(), response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.headers.get_content_type(), exc.read())

    return await asyncio.to_thread(run)


def _decode(content_type: str, raw: bytes) -> Any:
    return json.loads(raw or b"null") if content_type == "application/json" else raw
