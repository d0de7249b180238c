"""Audit records of sessions longer than their request (a WebRTC peer connection): start, then end with its duration.

The offer route calls :func:`audit_session` once the connection exists (a record
``started``) and the returned function when the connection ends (``ended`` or
``failed``, with how long it ran). A session still open when the node stops is
ended then (``gateway_stopping``), so every start has its end in the trail.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.audit.actions import AuditAction
from gateway.httpapi.identity import AUDIT, PRINCIPAL_KEY
from gateway.security.principal import Principal

__all__ = ["audit_session", "caller", "caller_source", "track_sessions"]

_SESSIONS: web.AppKey[dict[int, _Session]] = web.AppKey("kgw_audit_sessions")


def caller(request: web.Request) -> Principal | None:
    """The request's principal, or None (anonymous: before or without authentication)."""
    principal = request.get(PRINCIPAL_KEY)
    return principal if isinstance(principal, Principal) else None


def caller_source(request: web.Request, principal: Principal | None) -> str:
    """The address to record: the principal's trusted source, else the socket peer."""
    return (principal.source if principal is not None else "") or (request.remote or "")


@dataclass(eq=False, slots=True)
class _Session:
    app: web.Application
    action: AuditAction
    actor: Principal | None
    target: str
    source: str
    started: float
    ended: bool = False

    def end(self, outcome: str = "ended") -> None:
        if self.ended:
            return
        self.ended = True
        self.app[_SESSIONS].pop(id(self), None)
        self.app[AUDIT].record(
            self.action,
            actor=self.actor,
            target=self.target,
            source=self.source,
            outcome=outcome,
            detail={"op": "end"},
            duration=time.monotonic() - self.started,
        )


def audit_session(request: web.Request, action: AuditAction, target: str) -> Callable[[str], None]:
    """Record that a session started; call the result once when it ends (later calls do nothing)."""
    app = request.app
    if AUDIT not in app or _SESSIONS not in app:
        return _nothing
    principal = caller(request)
    source = caller_source(request, principal)
    session = _Session(app, action, principal, target, source, time.monotonic())
    app[_SESSIONS][id(session)] = session
    app[AUDIT].record(action, actor=principal, target=target, source=source, outcome="started", detail={"op": "start"})
    return session.end


def _nothing(outcome: str = "ended") -> None:
    """No audit trail on this app (a test app): nothing to record."""


def track_sessions(app: web.Application) -> None:
    """Keep the app's open sessions, and end those still open when the app cleans up."""
    app[_SESSIONS] = {}
    app.on_cleanup.append(_end_sessions)


async def _end_sessions(app: web.Application) -> None:
    for session in list(app[_SESSIONS].values()):
        session.end("gateway_stopping")
