"""The HTTP side of a split city (gateway/city_view.py): whole-city lists, the nodes, and 409 for actions elsewhere.

Lists read :func:`city_directory` — the merged city when this process serves
only some districts. An action on a device or channel of a district another
process holds (live view, PTZ, records, broadcast, area…) cannot be done here
(the device registered there): it is answered ``409`` naming that node and its
console, instead of a puzzling 404. Callers who may not see the district get
the handler's usual 404, so the answer reveals nothing beyond the scope.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from gateway.city_view import CityView
from gateway.gb28181.ids import is_gb_id
from gateway.httpapi.common import json_response
from gateway.httpapi.guard import requires
from gateway.httpapi.identity import principal_of
from gateway.registry.directory import Directory
from gateway.security.scope import Capability, may_see_district

__all__ = ["CITY", "add_city_routes", "city_directory", "foreign_actions"]

CITY = web.AppKey("kgw_city", CityView)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_READS = frozenset({"channels"})  # /api/devices/{id}/channels lists from the city directory


async def city_directory(request: web.Request, local: Directory) -> Directory:
    """What lists read: the merged city, or ``local`` on a process serving every district."""
    city = request.app.get(CITY)
    return await city.directory() if city is not None else local


@web.middleware
async def foreign_actions(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """409 for an action on a device/channel whose district another process serves (after authentication)."""
    city = request.app.get(CITY)
    parts = request.path.split("/")
    # "", "api", "channels"|"devices", ID, ACTION...
    if city is None or len(parts) < 5 or parts[1] != "api" or parts[2] not in ("channels", "devices"):
        return await handler(request)
    entity_id, action = parts[3], parts[4]
    if not is_gb_id(entity_id) or (parts[2] == "devices" and action in _READS):
        return await handler(request)
    district = entity_id[:6]
    if city.cluster.serves(district) or entity_id in city.local.channels or entity_id in city.local.devices:
        return await handler(request)
    try:
        principal = principal_of(request)
    except web.HTTPException:
        return await handler(request)
    if not may_see_district(principal, district):
        return await handler(request)
    holder = city.holder(district) or next(
        (n for n in await city.refresh_holders() if n.serves(district) and n.name != city.cluster.node), None
    )
    peer = city.cluster.peer_for(district)
    body: dict[str, Any] = {
        "error": f"{entity_id} belongs to district {district}, served by another gateway process (由其他网关进程接入)",
        "district": district,
        "node": holder.name if holder is not None else None,
        "console": holder.console if holder is not None and holder.console else None,
        "sip": holder.sip if holder is not None else (f"{peer.host}:{peer.port}" if peer is not None else None),
    }
    return json_response(body, status=409)


@requires(Capability.DISTRICT_READ)
async def nodes(request: web.Request) -> web.Response:
    """GET /api/nodes: the gateway processes of this deployment, their districts, consoles and liveness."""
    city = request.app.get(CITY)
    if city is None:
        return json_response({"items": []})
    now = time.time()
    items = [
        dict(asdict(n), alive=n.alive(now, city.stale_after), here=n.name == city.cluster.node)
        for n in await city.refresh_holders()
    ]
    return json_response({"items": items})


def add_city_routes(app: web.Application, city: CityView) -> None:
    """Install the city view: the app key the lists read, ``/api/nodes`` and the 409 for actions elsewhere."""
    app[CITY] = city
    app.router.add_get("/api/nodes", nodes)
    app.middlewares.append(foreign_actions)
