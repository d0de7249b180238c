"""The node's aiohttp application: every route module with the services it serves, on one port."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.alarms.service import AlarmService
from gateway.audit.trail import AuditTrail
from gateway.httpapi.alarm_routes import add_alarm_routes
from gateway.httpapi.audit_routes import add_audit_routes
from gateway.httpapi.auth import WebGuard, add_auth_routes, auth_middleware
from gateway.httpapi.live_routes import add_live_routes
from gateway.httpapi.metrics import NodeInfo, UpperStatus, add_node_routes
from gateway.httpapi.routes import add_registry_routes
from gateway.io.http_guard import GuardedSite, body_deadline, runner_options
from gateway.live import LiveService
from gateway.query_broker import QueryBroker
from gateway.registry.directory import Directory
from gateway.registry.provisioning import Provisioning
from gateway.registry.store_thread import StoreThread
from gateway.security.service import AccountService

__all__ = ["WebPart", "build_app", "serve", "tls_context"]

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
    audit: AuditTrail,
    accounts: AccountService,
    guard: WebGuard,
    parts: Sequence[WebPart] = (),
) -> web.Application:
    """The API, ``/healthz``, ``/metrics``, and whatever ``parts`` add; every route behind the login
    middleware (``gateway.httpapi.auth``): there is no way to build the app without it."""
    app = web.Application(client_max_size=MAX_REQUEST_BODY, middlewares=[auth_middleware])
    add_auth_routes(app, accounts, guard)
    add_node_routes(app, node, directory, metrics, uppers)
    add_registry_routes(app, directory, store, queries, provisioning)
    add_live_routes(app, live, directory)
    add_alarm_routes(app, alarms, directory)
    add_audit_routes(app, audit)
    for part in parts:
        part(app)
    return app


def tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 or newer) from PEM files; OSError/ssl.SSLError for bad files."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None = None,
    trusted_proxies: tuple[str, ...] = (),
) -> tuple[web.AppRunner, int]:
    """Listen (port 0: any free port; HTTPS with ``tls``); returns the runner to clean up and the bound port.

    Connections from ``trusted_proxies`` (networks) skip the per-address connection cap:
    a reverse proxy funnels every user through its one address."""
    app.middlewares.append(body_deadline)  # slow bodies; GuardedSite: per-address cap, fd reserve (H4)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, **runner_options())
    await runner.setup()
    await GuardedSite(runner, host, port, ssl_context=tls, uncapped=trusted_proxies).start()
    return runner, int(runner.addresses[0][1])
