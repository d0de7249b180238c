"""Every route of a started node declares its capability (``@requires``) or that it is ``@public``.

A route added later without a declaration fails here, so no route can skip
scope. The nodes are the real ones (``kgw gateway`` and ``kgw platform``,
console included); their applications are captured by a web part.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from gateway.app import GatewayService
from gateway.config import load_config
from gateway.httpapi.guard import PUBLIC, declared
from gateway.security.scope import Capability
from gbplatform.app import build_gateway, build_platform

# Routes that are open on purpose; anything else public is a mistake.
OPEN_ROUTES = {"/healthz", "/api/login", "/", "/console", "/live/{channel_id}", "/console/assets/{name}"}


@pytest.mark.parametrize("build", [build_gateway, build_platform])
async def test_every_route_declares_its_scope(
    build: Callable[..., GatewayService], started_nodes: list[GatewayService]
) -> None:
    apps: list[web.Application] = []
    config = load_config(None, sip_port=0, http_port=0, db=":memory:")
    service = build(config, web_parts=(apps.append,))
    await service.start()
    started_nodes.append(service)
    (app,) = apps
    routes: list[tuple[str, str, Any]] = [
        (route.method, route.resource.canonical if route.resource else "?", route.handler)
        for route in app.router.routes()
    ]
    assert len(routes) > 20
    undeclared = [f"{method} {path}" for method, path, handler in routes if declared(handler) is None]
    assert not undeclared, f"routes without @requires(...) or @public: {undeclared}"
    public = {path for _, path, handler in routes if declared(handler) == PUBLIC}
    assert public <= OPEN_ROUTES, f"unexpectedly public: {public - OPEN_ROUTES}"
    capabilities = {declared(handler) for _, _, handler in routes}
    assert {Capability.LIVE_VIEW, Capability.ALARM_READ, Capability.PROVISION} <= capabilities
