"""``GET /api/kindergartens/{id}/uplink``: a kindergarten's uplink budget and what uses it now (issue 11).

Each session is listed with its estimated or measured rate; a session of a channel the
caller may not see is listed without its channel (its rate still counts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.httpapi.common import json_error, json_response
from gateway.httpapi.guard import denied, requires
from gateway.httpapi.identity import principal_of
from gateway.registry.directory import Directory
from gateway.security.principal import Principal
from gateway.security.scope import Capability, may_see_channel, may_see_kindergarten
from gateway.uplink import UplinkBudget

__all__ = ["UPLINK", "redact_sessions", "uplink_fields", "uplink_part"]

UPLINK = web.AppKey("kgw_uplink", UplinkBudget)
UPLINK_DIRECTORY = web.AppKey("kgw_uplink_directory", Directory)
OTHER = "其他会话 (a session the caller may not see)"


def redact_sessions(sessions: list[dict[str, Any]], visible: Callable[[str], bool]) -> list[dict[str, Any]]:
    """Sessions with the channel and name blanked where ``visible(channel_id)`` is False."""
    return [
        s if s.get("channel_id") is None or visible(s["channel_id"]) else {**s, "channel_id": None, "what": OTHER}
        for s in sessions
    ]


def channel_visibility(app: web.Application, principal: Principal) -> Callable[[str], bool]:
    """Whether the principal may see a channel (for redacting uplink sessions)."""
    directory = app[UPLINK_DIRECTORY]

    def visible(channel_id: str) -> bool:
        channel = directory.channels.get(channel_id)
        return channel is not None and may_see_channel(principal, channel)

    return visible


@requires(Capability.KINDERGARTEN_READ)
async def kindergarten_uplink(request: web.Request) -> web.Response:
    """GET /api/kindergartens/{id}/uplink → {"kindergarten_id", "budget_kbps", "used_kbps", "free_kbps", "sessions"}."""
    kindergarten_id = request.match_info["id"]
    principal = principal_of(request)
    kindergarten = request.app[UPLINK_DIRECTORY].kindergartens.get(kindergarten_id)
    message = f"unknown kindergarten {kindergarten_id}"
    if kindergarten is None:
        raise json_error(web.HTTPNotFound, message)
    if not may_see_kindergarten(principal, kindergarten):
        raise denied(request, principal, Capability.KINDERGARTEN_READ, kindergarten_id, message)
    usage = request.app[UPLINK].usage(kindergarten_id)
    usage["sessions"] = redact_sessions(usage["sessions"], channel_visibility(request.app, principal))
    return json_response(usage)


def uplink_fields(app: web.Application, kindergarten_id: str) -> dict[str, Any]:
    """``{"uplink": {"budget_kbps", "used_kbps", "sessions"}}`` for a kindergarten list row ({} without a budget)."""
    budget = app.get(UPLINK)
    if budget is None:
        return {}
    return {"uplink": budget.summary([kindergarten_id])[kindergarten_id]}


def uplink_part(budget: UplinkBudget, directory: Directory) -> Callable[[web.Application], None]:
    """The web part serving the uplink view."""

    def add(app: web.Application) -> None:
        app[UPLINK], app[UPLINK_DIRECTORY] = budget, directory
        app.router.add_get("/api/kindergartens/{id}/uplink", kindergarten_uplink)

    return add
