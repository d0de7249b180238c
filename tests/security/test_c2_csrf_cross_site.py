"""C2: a page on another site could act for a logged-in operator, and any Host was served.

``request.json()`` took ``text/plain``, so a cross-site ``fetch``/form could POST; the alarm
WebSocket took any Origin; any Host header was served (DNS rebinding). Over real sockets:
a text/plain body → 415; a cookie POST from a foreign Origin, or with neither Origin nor
Referer → 403; a foreign Host → 421; a WebSocket handshake from a foreign Origin → 403
(and without a login → 401); the node's own page (same Origin) and a Bearer token client
pass. With ``--tls-cert/--tls-key`` the node speaks HTTPS and the cookie is ``Secure``.
"""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.security.principal import Role
from tests.conftest import AUTH_HEADERS, add_user

PASSWORD = "duty-password-1"


def browser(**kw: object) -> aiohttp.ClientSession:
    """A client that keeps the session cookie of 127.0.0.1, as a browser does."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), **kw)  # type: ignore[arg-type]


async def _logged_in(http: aiohttp.ClientSession, base: str) -> None:
    async with http.post(f"{base}/api/login", json={"username": "duty", "password": PASSWORD}) as r:
        assert r.status == 200, await r.text()


@pytest.fixture
async def node(gateway_factory):
    service = await gateway_factory()
    await add_user(service, "duty", PASSWORD, Role.CITY_ADMIN)
    return service


async def test_cross_site_posts_are_refused(node):
    base = f"http://127.0.0.1:{node.http_port}"
    ack = f"{base}/api/alarms/no-such-alarm/ack"  # 404 once through the checks
    async with browser() as http:
        await _logged_in(http, base)
        # A "simple" cross-site request: text/plain is what a foreign page can send without CORS.
        async with http.post(ack, data="{}", headers={"Content-Type": "text/plain", "Origin": base}) as r:
            assert r.status == 415
        async with http.post(ack, data="user=x", headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
            assert r.status == 415
        for headers in (
            {"Origin": "http://127.0.0.1:1"},  # another port of the same host: another origin
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Referer": "http://evil.example/page"},
            {},  # neither Origin nor Referer
        ):
            async with http.post(ack, json={}, headers=headers) as r:
                assert r.status == 403, headers
        async with http.post(ack, json={}, headers={"Origin": base}) as r:
            assert r.status == 404  # our own page passes
        async with http.post(ack, json={}, headers={"Referer": f"{base}/console"}) as r:
            assert r.status == 404
    async with aiohttp.ClientSession(headers=AUTH_HEADERS) as http, http.post(ack, json={}) as r:
        assert r.status == 404  # a machine client with a token needs no Origin


async def test_foreign_host_is_misdirected(node):
    port = node.http_port
    async with aiohttp.ClientSession(headers=AUTH_HEADERS) as http:
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1:1", "localhost.evil.example"):
            async with http.get(f"http://127.0.0.1:{port}/api/devices", headers={"Host": host}) as r:
                assert r.status == 421, host
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            async with http.get(f"http://127.0.0.1:{port}/api/devices", headers={"Host": host}) as r:
                assert r.status == 200, host
        async with http.get(f"http://127.0.0.1:{port}/healthz", headers={"Host": "lb.internal"}) as r:
            assert r.status == 200  # load balancers' health checks


async def test_allowed_host_flag(gateway_factory):
    service = await gateway_factory(allowed_hosts=("kgw.tianjin.example",))
    async with aiohttp.ClientSession(headers=AUTH_HEADERS) as http:
        url = f"http://127.0.0.1:{service.http_port}/api/devices"
        async with http.get(url, headers={"Host": "kgw.tianjin.example"}) as r:
            assert r.status == 200
        async with http.get(url, headers={"Host": "kgw.tianjin.example.evil"}) as r:
            assert r.status == 421


async def test_alarm_websocket_checks_origin_and_login(node):
    base = f"http://127.0.0.1:{node.http_port}"
    ws_url = f"ws://127.0.0.1:{node.http_port}/api/alarms/ws"
    async with browser() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as anonymous:
            await http.ws_connect(ws_url, origin=base)
        assert anonymous.value.status == 401
        await _logged_in(http, base)
        with pytest.raises(aiohttp.WSServerHandshakeError) as foreign:
            await http.ws_connect(ws_url, origin="http://127.0.0.1:1")
        assert foreign.value.status == 403
        async with http.ws_connect(ws_url, origin=base) as ws:
            hello = await ws.receive_json(timeout=30)
            assert hello["type"] == "hello"


async def test_trusted_proxy_names_the_client(gateway_factory):
    proxied = await gateway_factory(trusted_proxies=("127.0.0.0/8",))
    direct = await gateway_factory()
    for service, expected in ((proxied, "203.0.113.7"), (direct, "127.0.0.1")):
        got = await _source_seen(service, {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"})
        assert got == expected


async def _source_seen(service, headers: dict[str, str]) -> str:
    """The address a failed login is counted for (the principal's ``source`` comes from the same place)."""
    async with aiohttp.ClientSession() as http:
        body = {"username": "nobody", "password": "wrong-password"}
        async with http.post(f"http://127.0.0.1:{service.http_port}/api/login", json=body, headers=headers) as r:
            assert r.status == 401
    keys = list(service.accounts.by_source._failures)
    return keys[-1]


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_tls_serves_https_with_secure_cookies(gateway_factory, tmp_path):
    cert, key = _self_signed(tmp_path)
    service = await gateway_factory(tls_cert=str(cert), tls_key=str(key))
    await add_user(service, "duty", PASSWORD, Role.CITY_ADMIN)
    base = f"https://127.0.0.1:{service.http_port}"
    context = ssl.create_default_context(cafile=str(cert))
    async with browser(connector=aiohttp.TCPConnector(ssl=context)) as http:
        async with http.post(f"{base}/api/login", json={"username": "duty", "password": PASSWORD}) as r:
            assert r.status == 200
            cookie = r.cookies["kgw_session"]
            assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"
        async with http.get(f"{base}/api/me") as r:
            assert r.status == 200 and (await r.json())["username"] == "duty"
    async with aiohttp.ClientSession() as http:  # plain HTTP on the TLS port gets no answer
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"http://127.0.0.1:{service.http_port}/api/me") as r:
                await r.read()
