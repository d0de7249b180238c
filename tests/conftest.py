"""Shared test helpers: start gateways and simulated fleets on ephemeral loopback ports."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import secrets
import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from hypothesis import HealthCheck, settings

from gateway.app import GatewayService
from gateway.config import GatewayConfig, load_config
from gateway.gb28181.sip.transport import Transport
from gateway.security.accounts import ApiToken, User, secret_digest
from gateway.security.passwords import hash_password
from gateway.security.principal import Role
from gateway.security.sqlite_accounts import SqliteAccountStore
from gbplatform.app import build_gateway, build_platform
from simulators.fleet import Fleet, FleetOptions

pytest_plugins = [
    "tests.mqtt_broker",
    "tests.postgres_server",
    "tests.rtsp_server",
    "tests.onvif_camera",
]  # mosquitto, postgres_url, db_url, rtsp_server, onvif_camera fixtures

# Property tests check properties, not speed. Hypothesis's defaults fail an example that takes
# longer than 200 ms (deadline) and a test whose data generation is slow (too_slow): both are
# what a busy machine produces. Loaded here, before the test modules, so that their own
# @settings(...) inherit it.
settings.register_profile("kgw", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("kgw")


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """Every async test runs on uvloop, the loop ``kgw`` runs (gateway/cli.py ``_run``).

    Loop differences are real bugs (uvloop reports a busy UDP port with ``errno=None``,
    which once broke media port ranges); tests on the default loop would not see them.
    """
    return {"uvloop": uvloop.new_event_loop}


# Every node the tests start knows this API token (an administrator's, given to the node by its
# SHA-256 like an operator's [[api_tokens]] entry); http_json/http_text and the processes of
# tests/processes.py send it. Nodes run with authentication on, always: there is no switch.
# Kept in the environment: pytest imports this file twice (as ``conftest`` and ``tests.conftest``),
# and both copies must agree; simulated fleets provision with it too (simulators/fleet.py provision).
TEST_TOKEN = os.environ.setdefault("KGW_API_TOKEN", "kgw_test_" + secrets.token_urlsafe(32))
TEST_TOKEN_GRANT = ApiToken("tests", secret_digest(TEST_TOKEN), Role.CITY_ADMIN)
AUTH_HEADERS = {"Authorization": f"Bearer {TEST_TOKEN}"}


class _TestTokenHandler(urllib.request.BaseHandler):
    """Every plain ``urllib.request.urlopen`` of the tests sends the tests' token, unless it carries
    credentials of its own (``http_json`` uses its own opener and says exactly what it sends)."""

    def http_request(self, request: urllib.request.Request) -> urllib.request.Request:
        if not request.has_header("Authorization") and not request.has_header("Cookie"):
            request.add_unredirected_header("Authorization", f"Bearer {TEST_TOKEN}")
        return request

    https_request = http_request


urllib.request.install_opener(urllib.request.build_opener(_TestTokenHandler()))
_PLAIN_OPENER = urllib.request.build_opener()
# The console user of browser tests (tests/integration/test_console_chromium.py logs in with it).
TEST_ADMIN = ("admin", "kgw-test-admin-password")


@functools.cache
def _password_hash(password: str) -> str:
    return hash_password(password)  # argon2id: ~0.1 s, so once per password and test session


async def add_user(
    service: GatewayService,
    username: str,
    password: str,
    role: Role = Role.CITY_ADMIN,
    *,
    district_code: str | None = None,
    kindergarten_id: str | None = None,
) -> None:
    """Create a console user on a running node (its account store), as ``kgw user add`` would."""
    now = time.time()
    user = User(username, _password_hash(password), role, district_code, kindergarten_id, False, now, now)
    await service.accounts.call(SqliteAccountStore.put_user, user)


GatewayFactory = Callable[..., Awaitable[GatewayService]]
FleetFactory = Callable[..., Awaitable[Fleet]]


def free_ports(count: int = 1) -> int:
    """The first of ``count`` consecutive loopback ports free for UDP and TCP, below the ephemeral range.

    For processes that need their ports on the command line (sipp's ``-p``, ``kgw gateway
    --sip-port``, the demo's 20 fixed ports). A port picked by binding port 0 lies in the
    kernel's ephemeral range, where every outgoing connection on the machine takes its
    port too: on a busy machine it could be gone by the time the process bound it
    (``[Errno 98]``). Below the range only explicit binds compete. The plain bind, without
    SO_REUSEADDR, also skips ports a TIME_WAIT socket still holds.
    """
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(max(1024, low - 16_000), low - count)
        if all(_port_free(port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no run of {count} free loopback ports below {low}")


def free_sip_port() -> int:
    """A loopback port free for both UDP and TCP right now (SIP uses both on one port)."""
    return free_ports(1)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


async def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout``; returns the last value.

    The timeout is a deadline for a failing test, not a wait: make it generous (a busy
    machine is many times slower), and never follow a fixed sleep with an assertion.
    An absence ("nothing else was sent") is asserted only after waiting for a positive
    sign that the work is over (a counter at its final value, an empty outbox, a later
    marker that arrived).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return predicate()


async def http_json(
    url: str, data: Any = None, method: str | None = None, *, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """GET (or POST ``data``) a JSON URL from a worker thread, so the loop keeps serving.

    Sent with the tests' administrator token unless ``headers`` say otherwise (``headers={}``:
    no credentials at all; ``{"Cookie": …}``: a console session instead)."""

    def call() -> tuple[int, Any]:
        body = None if data is None else json.dumps(data).encode()
        sent = {"Content-Type": "application/json", **(AUTH_HEADERS if headers is None else headers)}
        request = urllib.request.Request(url, data=body, method=method, headers=sent)
        try:
            with _PLAIN_OPENER.open(request, timeout=20) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    return await asyncio.to_thread(call)


async def http_text(url: str) -> str:
    """GET a URL as text from a worker thread (with the tests' administrator token)."""
    request = urllib.request.Request(url, headers=AUTH_HEADERS)
    return await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=20).read().decode())


@pytest.fixture
async def started_nodes() -> AsyncIterator[list[GatewayService]]:
    """Every node a test started (gateways and platforms), stopped last-started first, as a shutdown would:
    a gateway unregisters from platforms that are still there to answer."""
    started: list[GatewayService] = []
    yield started
    for service in reversed(started):
        await service.stop()


@pytest.fixture
def gateway_factory(started_nodes: list[GatewayService]) -> GatewayFactory:
    """Start access gateways (``kgw gateway``: console included) on 127.0.0.1 port 0, in-memory store by default."""
    return _node_factory(build_gateway, started_nodes)


@pytest.fixture
def platform_factory(started_nodes: list[GatewayService]) -> GatewayFactory:
    """Start monitoring platforms (``kgw platform``: lower platforms' trees and NOTIFYs applied) like gateways."""
    return _node_factory(build_platform, started_nodes)


def _node_factory(build: Callable[[GatewayConfig], GatewayService], started: list[GatewayService]) -> GatewayFactory:
    async def make(**overrides: Any) -> GatewayService:
        settings: dict[str, Any] = {
            "sip_port": 0,
            "http_port": 0,
            "db": ":memory:",
            "flush_interval": 0.2,
            "api_tokens": (TEST_TOKEN_GRANT,),
        }
        settings.update(overrides)
        service = build(load_config(None, **settings))
        await service.start()
        started.append(service)
        return service

    return make


@pytest.fixture
async def fleet_factory() -> AsyncIterator[FleetFactory]:
    """Start simulated fleets against a gateway service; stopped (without unregister) at the end."""
    started: list[Fleet] = []

    async def make(service: GatewayService, *, provision: bool = True, **options: Any) -> Fleet:
        settings: dict[str, Any] = {
            "gateway_port": service.sip_port,
            "gateway_id": service.config.id,
            "password": service.config.password,
            "kindergartens": 2,
            "transport": Transport.UDP,
        }
        if provision:
            settings["api"] = f"http://127.0.0.1:{service.http_port}"
        settings.update(options)
        fleet = Fleet(FleetOptions(**settings))
        await fleet.start()
        started.append(fleet)
        return fleet

    yield make
    for fleet in started:
        await fleet.stop(unregister=False)


@pytest.fixture
def procs() -> Iterator[list[Any]]:
    """``tests.processes.Proc`` objects started by a test; killed at the end if still running."""
    started: list[Any] = []
    yield started
    for proc in started:
        proc.kill()
