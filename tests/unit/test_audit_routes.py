"""The audit middleware's route table matches the routes the app really has; the fallback covers changes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.audit.actions import AuditAction
from gateway.httpapi.acceptance_routes import add_acceptance_routes
from gateway.httpapi.alarm_routes import add_alarm_routes
from gateway.httpapi.audit_routes import AUDITED_ROUTES, _fallback
from gateway.httpapi.broadcast_routes import add_broadcast_routes
from gateway.httpapi.control_routes import add_control_routes
from gateway.httpapi.download_routes import download_part
from gateway.httpapi.live_routes import add_live_routes
from gateway.httpapi.onvif_routes import add_onvif_routes
from gateway.httpapi.record_routes import add_record_routes
from gateway.httpapi.routes import add_registry_routes
from gateway.httpapi.rtsp_routes import rtsp_part


def routes() -> set[tuple[str, str]]:
    app = web.Application()
    fake: Any = object()
    add_registry_routes(app, fake, fake, fake, fake)
    add_live_routes(app, fake, fake)
    add_alarm_routes(app, fake, fake)
    add_record_routes(app, fake, fake)
    download_part(fake)(app)
    add_control_routes(app, fake, fake)
    add_broadcast_routes(app, fake)
    rtsp_part(fake, fake)(app)
    add_onvif_routes(app)
    add_acceptance_routes(app, fake)
    return {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}


def test_every_audited_route_exists() -> None:
    missing = set(AUDITED_ROUTES) - routes()
    assert not missing, f"audited routes the app does not have (renamed?): {missing}"


def test_every_view_and_change_route_is_audited() -> None:
    for method, path in routes():
        method = "GET" if method == "HEAD" else method  # as the middleware looks it up
        if method != "GET" or path.endswith("snapshot.jpg"):
            assert (method, path) in AUDITED_ROUTES or _fallback(method, path), (method, path)


def test_fallback() -> None:
    assert _fallback("GET", "/api/devices") is None
    assert _fallback("POST", "/api/login") is None and _fallback("POST", "/api/session/logout") is None
    assert _fallback("POST", "/api/users")  # type: ignore[union-attr]
    assert _fallback("POST", "/api/users").action is AuditAction.USER_CHANGE  # type: ignore[union-attr]
    assert _fallback("DELETE", "/api/tokens/{id}").action is AuditAction.TOKEN_CHANGE  # type: ignore[union-attr]
    assert _fallback("PUT", "/api/channels/{id}/area").action is AuditAction.AREA_CONFIRM  # type: ignore[union-attr]
    assert _fallback("POST", "/api/devices/import").action is AuditAction.PROVISIONING  # type: ignore[union-attr]
    assert _fallback("PATCH", "/api/settings").action is AuditAction.CONFIG_CHANGE  # type: ignore[union-attr]
