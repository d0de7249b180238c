"""The node's aiohttp application: every route module with the services it serves, on one port."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.alarms.service import AlarmService
from gateway.httpapi.alarm_routes import add_alarm_routes
from gateway.httpapi.live_routes import add_live_routes
from gateway.httpapi.metrics import NodeInfo, UpperStatus, add_node_routes
from gateway.httpapi.routes import add_registry_routes
from gateway.io.http_guard import GuardedSite, body_deadline, runner_options
from gateway.live import LiveService
from gateway.query_broker import QueryBroker
from gateway.registry.directory import Directory
from gateway.registry.provisioning import Provisioning
from gateway.registry.store_thread import StoreThread

__all__ = ["WebPart", "build_app", "serve"]

WebPart = Callable[[web.Application], None]
"""Adds routes of another package (the staff console of ``gbplatform``) to the node's application."""

MAX_REQUEST_BODY = 4 * 1024 * 1024  # a provisioning list of the whole city fits


def build_app(
    *,
    node: NodeInfo,
    directory: Directory,
    store: StoreThread,
    queries: QueryBroker,
    provisioning: Provisioning,
    live: LiveService,
    alarms: AlarmService,
    uppers: UpperStatus | None,
    metrics: CollectorRegistry,
    parts: Sequence[WebPart] = (),
) -> web.Application:
    """The API, ``/healthz``, ``/metrics``, and whatever ``parts`` add."""
    app = web.Application(client_max_size=MAX_REQUEST_BODY)
    add_node_routes(app, node, directory, metrics, uppers)
    add_registry_routes(app, directory, store, queries, provisioning)
    add_live_routes(app, live)
    add_alarm_routes(app, alarms, directory)
    for part in parts:
        part(app)
    return app


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Listen (port 0: any free port); returns the runner to clean up and the bound port."""
    app.middlewares.append(body_deadline)  # slow bodies; GuardedSite: per-address cap, fd reserve (H4)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, **runner_options())
    await runner.setup()
    await GuardedSite(runner, host, port).start()
    return runner, int(runner.addresses[0][1])
