"""C2: the HTTP API had no authentication: every route answered anyone.

Over real sockets on 127.0.0.1: every ``/api/*`` route of a running node (taken from the
app's router, so a route added later cannot be forgotten) and ``/metrics`` answer 401
without credentials; a wrong password, an unknown user, a revoked token and a logged-out
session get nothing; ``/metrics`` takes a metrics-only token (which opens nothing else);
repeated wrong passwords are throttled (429, Retry-After).
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest

from gateway.security.principal import Role
from gateway.security.sqlite_accounts import SqliteAccountStore
from tests.conftest import add_user

PUBLIC = {"/api/login"}  # the only API route that needs no login


def _concrete(canonical: str) -> str:
    """A route's path with every {param} filled in (a GB ID fits every ID parameter)."""
    return re.sub(r"\{[^}]+\}", "12010100001310000001", canonical)


def browser() -> aiohttp.ClientSession:
    """A client that keeps cookies of an IP-address host (127.0.0.1), as a browser does."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _status(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> int:
    async with http.request(method, url, **kw) as response:
        return response.status


@pytest.fixture
async def node(gateway_factory):
    service = await gateway_factory()
    await add_user(service, "duty", "duty-password-1", Role.DISTRICT_DUTY, district_code="120101")
    return service


async def test_every_api_route_answers_401_without_credentials(node):
    base = f"http://127.0.0.1:{node.http_port}"
    routes = sorted(
        {
            (route.method, route.resource.canonical)
            for route in node.http_app.router.routes()
            if route.resource is not None and route.method != "HEAD"
        }
    )
    api = [(m, p) for m, p in routes if p.startswith("/api/") and p not in PUBLIC]
    assert len(api) >= 20, api  # the whole API, not a handful
    refused = {}
    async with browser() as http:
        for method, canonical in [*api, ("GET", "/metrics")]:
            kw = {"json": {}} if method == "POST" else {}
            refused[(method, canonical)] = await _status(http, method, base + _concrete(canonical), **kw)
    assert all(status == 401 for status in refused.values()), {k: v for k, v in refused.items() if v != 401}


async def test_wrong_password_unknown_user_revoked_token_and_logout(node):
    base = f"http://127.0.0.1:{node.http_port}"
    async with browser() as http:
        for body in ({"username": "duty", "password": "wrong-password"}, {"username": "nobody", "password": "x" * 12}):
            async with http.post(f"{base}/api/login", json=body) as response:
                assert response.status == 401 and "kgw_session" not in response.cookies
                assert (await response.json())["error"] == "wrong user name or password"  # one answer for both
        async with http.post(f"{base}/api/login", json={"username": "duty", "password": "duty-password-1"}) as r:
            assert r.status == 200 and (await r.json())["role_label"] == "区级值班员"
            cookie = r.cookies["kgw_session"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
        async with http.get(f"{base}/api/me") as r:
            me = await r.json()
            assert r.status == 200 and me["username"] == "duty" and me["district_code"] == "120101"
        async with http.post(f"{base}/api/logout", json={}, headers={"Origin": base}) as r:
            assert r.status == 200
        http.cookie_jar.update_cookies({"kgw_session": cookie.value})  # the old cookie, replayed
        assert await _status(http, "GET", f"{base}/api/me") == 401

    token = await node.accounts.create_token("ci", Role.CITY_ADMIN)
    revoked = await node.accounts.create_token("old", Role.CITY_ADMIN)
    await node.accounts.call(SqliteAccountStore.revoke_token, "old", 0.0)
    async with browser() as http:
        assert await _status(http, "GET", f"{base}/api/devices", headers={"Authorization": f"Bearer {token}"}) == 200
        for bad in (revoked, token + "x", "kgw_guess"):
            assert await _status(http, "GET", f"{base}/api/devices", headers={"Authorization": f"Bearer {bad}"}) == 401
        assert await _status(http, "GET", f"{base}/api/devices", headers={"Authorization": f"Basic {token}"}) == 401


async def test_metrics_need_a_token_which_may_be_metrics_only(node):
    base = f"http://127.0.0.1:{node.http_port}"
    scrape = await node.accounts.create_token("prometheus", Role.CITY_ADMIN, metrics_only=True)
    auth = {"Authorization": f"Bearer {scrape}"}
    async with browser() as http:
        assert await _status(http, "GET", f"{base}/metrics") == 401
        async with http.get(f"{base}/metrics", headers=auth) as r:
            assert r.status == 200 and "kgw_devices_online" in await r.text()
        assert await _status(http, "GET", f"{base}/api/devices", headers=auth) == 403
        # A district duty officer's session does not read the node's metrics; health stays open.
        async with http.post(f"{base}/api/login", json={"username": "duty", "password": "duty-password-1"}) as r:
            assert r.status == 200
        assert await _status(http, "GET", f"{base}/metrics") == 403
        assert await _status(http, "GET", f"{base}/healthz") == 200


async def test_repeated_wrong_passwords_are_throttled(node):
    base = f"http://127.0.0.1:{node.http_port}"
    async with browser() as http:
        for _ in range(5):
            async with http.post(f"{base}/api/login", json={"username": "duty", "password": "guess-guess"}) as r:
                assert r.status == 401
        async with http.post(f"{base}/api/login", json={"username": "duty", "password": "duty-password-1"}) as r:
            assert r.status == 429 and int(r.headers["Retry-After"]) > 0  # even the right one: no oracle
