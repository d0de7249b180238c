"""Who may talk to the node's HTTP API: the authentication middleware and the login routes.

Every request but ``/healthz``, ``POST /api/login`` and the routes marked
public (the console's page and assets, :func:`mark_public`) carries a session
cookie (``kgw_session``, from ``POST /api/login``) or an API token
(``Authorization: Bearer kgw_…``); the middleware puts the resulting
:class:`~gateway.security.principal.Principal` in the request
(:data:`~gateway.httpapi.identity.PRINCIPAL_KEY`). Without one, ``/api/*`` and
``/metrics`` answer 401.

Browsers are kept from acting for a logged-in user from another site:

* Host: only the node's own names (:class:`WebGuard`), else 421 — a DNS
  rebinding page reaches the node under a foreign name.
* State-changing requests authenticated by the cookie need an ``Origin`` (or
  ``Referer``) of the page's own origin, else 403; tokens are exempt (a browser
  never adds them by itself).
* A request body must be ``application/json`` (415 otherwise): a cross-site
  ``<form>`` or a "simple" ``fetch`` can only send form or text types.
* A WebSocket handshake from a foreign ``Origin`` is refused (403).
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from gateway.audit.actions import AuditAction
from gateway.httpapi.common import json_error, json_response
from gateway.httpapi.guard import authenticated, public
from gateway.httpapi.identity import AUDIT, PRINCIPAL_KEY, principal_of
from gateway.security.principal import Principal, Role
from gateway.security.service import AccountService, LoginRefused, LoginThrottled

__all__ = [
    "ACCOUNTS",
    "SESSION_COOKIE",
    "WebGuard",
    "add_auth_routes",
    "auth_middleware",
    "mark_public",
]

log = logging.getLogger("kgw.auth")

SESSION_COOKIE = "kgw_session"
ACCOUNTS = web.AppKey("kgw_accounts", AccountService)
_PUBLIC = web.AppKey("kgw_public_routes", set[str])
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _split_host(text: str) -> tuple[str, int | None] | None:
    """``name``, ``name:port``, ``[v6]``, ``[v6]:port`` → (lower-case name, port or None)."""
    text = text.strip().lower()
    if not text or any(c in text for c in "/@ \t"):
        return None
    if text.startswith("["):
        name, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":") if rest.startswith(":") else ("" if not rest else None)
    elif text.count(":") > 1:  # a bare IPv6 address (configuration, not a Host header)
        return text, None
    else:
        name, _, port_text = text.partition(":")
    if port_text is None or (port_text and not port_text.isdigit()) or not name:
        return None
    return name, int(port_text) if port_text else None


@dataclass
class WebGuard:
    """The node's own names and its trusted reverse proxies.

    ``allowed_hosts`` come from ``--allowed-host`` (``name`` matches any port,
    ``name:port`` only that one) in addition to the loopback names and the bind
    address with the node's port, and the ``public_url``'s host.
    """

    bind_host: str
    port: Callable[[], int]
    allowed_hosts: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    tls: bool = False
    public_url: str = ""
    _proxies: tuple[Network, ...] = field(default=(), init=False)
    _configured: tuple[tuple[str, int | None], ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        self._proxies = tuple(ipaddress.ip_network(p, strict=False) for p in self.trusted_proxies)
        configured = []
        for entry in self.allowed_hosts:
            parsed = _split_host(entry)
            if parsed is None:
                raise ValueError(f"allowed host must be NAME or NAME:PORT, not {entry!r}")
            configured.append(parsed)
        if self.public_url:
            parts = urlsplit(self.public_url)
            if parts.hostname:
                default = 443 if parts.scheme == "https" else 80
                configured.append((parts.hostname.lower(), parts.port or default))
        self._configured = tuple(configured)

    @property
    def secure_cookies(self) -> bool:
        """Cookies only over HTTPS: TLS here, or a public URL behind a TLS proxy."""
        return self.tls or self.public_url.startswith("https://")

    def host_allowed(self, host: str | None) -> bool:
        """Whether a ``Host`` header names this node."""
        parsed = _split_host(host or "")
        if parsed is None:
            return False
        name, port = parsed
        own_port = self.port()
        default_port = 443 if self.tls else 80
        if name in (*_LOOPBACK_NAMES, self.bind_host.lower()) and (port or default_port) == own_port:
            return True
        return any(name == n and (p is None or (port or default_port) == p) for n, p in self._configured)

    def origin_allowed(self, origin: str, request: web.Request) -> bool:
        """Whether an ``Origin`` (or a ``Referer``'s origin) is this node's own page."""
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        netloc = parts.netloc.lower()
        if netloc == (request.host or "").lower() and self.host_allowed(netloc):
            return True
        if self.public_url:
            own = urlsplit(self.public_url)
            return (parts.scheme, netloc) == (own.scheme, own.netloc.lower())
        return False

    def client_address(self, request: web.Request) -> str:
        """The peer, or (only from a trusted proxy) the nearest untrusted X-Forwarded-For address."""
        peer = request.remote or ""
        if not self._proxies or not self._trusted(peer):
            return peer
        hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer
        return hops[0] if hops else peer

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._proxies)


_GUARD = web.AppKey("kgw_web_guard", WebGuard)


def mark_public(app: web.Application, paths: Iterable[str]) -> None:
    """Routes (canonical paths such as ``/live/{channel_id}``) that need no login: static pages only."""
    app[_PUBLIC].update(paths)


def _refuse(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    return json_error(cls, message)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Host check, then authentication, CSRF and content-type checks (module docstring)."""
    app = request.app
    guard: WebGuard = app[_GUARD]
    path = request.path
    if path == "/healthz":
        return await handler(request)
    if not guard.host_allowed(request.host):
        raise _refuse(web.HTTPMisdirectedRequest, "unknown Host: add it with --allowed-host")
    origin = request.headers.get(hdrs.ORIGIN)
    websocket = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
    if websocket and origin is not None and not guard.origin_allowed(origin, request):
        raise _refuse(web.HTTPForbidden, "WebSocket from a foreign origin")
    source = guard.client_address(request)
    route = request.match_info.route.resource
    canonical = route.canonical if route is not None else None
    if request.method in _UNSAFE and request.body_exists and request.content_type != "application/json":
        raise _refuse(web.HTTPUnsupportedMediaType, "request bodies must be application/json")
    if canonical == "/api/login" or (canonical is not None and canonical in app[_PUBLIC]):
        if request.method in _UNSAFE and not _same_origin_or_absent(request, guard):
            raise _refuse(web.HTTPForbidden, "cross-site request refused")
        return await handler(request)
    principal, metrics_only = await _authenticate(request, source)
    if principal is None:
        if path.startswith("/api/") or path == "/metrics" or canonical is not None:
            response = _refuse(web.HTTPUnauthorized, "login required")
            if SESSION_COOKIE in request.cookies:
                response.del_cookie(SESSION_COOKIE, path="/")
            raise response
        return await handler(request)  # an unknown path: its 404
    if path == "/metrics":
        if principal.via == "session" and principal.role is not Role.CITY_ADMIN:
            raise _refuse(web.HTTPForbidden, "metrics need an API token or an administrator")
    elif metrics_only:
        raise _refuse(web.HTTPForbidden, "this token may only read /metrics")
    if principal.via == "session" and request.method in _UNSAFE and not _same_origin(request, guard):
        raise _refuse(web.HTTPForbidden, "cross-site request refused (Origin)")
    request[PRINCIPAL_KEY] = principal
    return await handler(request)


def _same_origin(request: web.Request, guard: WebGuard) -> bool:
    """An Origin (or, without one, a Referer) naming this node; absent both → False."""
    origin = request.headers.get(hdrs.ORIGIN) or request.headers.get(hdrs.REFERER)
    return origin is not None and guard.origin_allowed(origin, request)


def _same_origin_or_absent(request: web.Request, guard: WebGuard) -> bool:
    """For the login itself: a browser's foreign origin is refused; a script without one may log in."""
    if hdrs.ORIGIN not in request.headers and hdrs.REFERER not in request.headers:
        return True
    return _same_origin(request, guard)


async def _authenticate(request: web.Request, source: str) -> tuple[Principal | None, bool]:
    accounts = request.app[ACCOUNTS]
    authorization = request.headers.get(hdrs.AUTHORIZATION)
    if authorization is not None:
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return None, False
        found = await accounts.token_principal(secret.strip(), source)
        return (None, False) if found is None else found
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        return await accounts.session_principal(session_id, source), False
    return None, False


# --- routes ---------------------------------------------------------------------------------------


def me_json(principal: Principal) -> dict[str, object]:
    """What ``/api/me`` and the login answer say about the caller."""
    return {
        "username": principal.username,
        "role": principal.role.value,
        "role_label": principal.role.label_zh,
        "district_code": principal.district_code,
        "kindergarten_id": principal.kindergarten_id,
        "via": principal.via,
    }


@public
async def login(request: web.Request) -> web.Response:
    """POST /api/login {"username", "password"}: a session cookie, or 401 / 429."""
    guard = request.app[_GUARD]
    try:
        body = await request.json()
        username, password = body["username"], body["password"]
        if not isinstance(username, str) or not isinstance(password, str):
            raise TypeError("strings expected")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise json_error(web.HTTPBadRequest, 'expected JSON {"username": "…", "password": "…"}') from exc
    source = guard.client_address(request)
    audit = request.app.get(AUDIT)
    try:
        session_id, principal = await request.app[ACCOUNTS].login(username, password, source)
    except LoginThrottled as exc:
        retry = max(1, int(exc.retry_after + 0.999))
        log.warning("login throttled for %r from %s", username[:64], source)
        raise web.HTTPTooManyRequests(
            text=json.dumps({"error": "too many failed logins", "retry_after": retry}),
            content_type="application/json",
            headers={hdrs.RETRY_AFTER: str(retry)},
        ) from exc
    except LoginRefused as exc:
        if audit is not None:
            audit.record(AuditAction.LOGIN_FAILED, actor=None, target=username[:64], source=source, outcome="denied")
        raise json_error(web.HTTPUnauthorized, "wrong user name or password") from exc
    if audit is not None:
        audit.record(AuditAction.LOGIN, actor=principal, target=principal.username, source=source)
    response = json_response(me_json(principal))
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        httponly=True,
        samesite="Strict",
        path="/",
        secure=guard.secure_cookies,
        max_age=int(request.app[ACCOUNTS].policy.lifetime),
    )
    return response


@authenticated
async def logout(request: web.Request) -> web.Response:
    """POST /api/logout: the session ends, the cookie goes."""
    principal = principal_of(request)
    session_id = request.cookies.get(SESSION_COOKIE)
    if principal.via == "session" and session_id:
        await request.app[ACCOUNTS].logout(session_id)
        audit = request.app.get(AUDIT)
        if audit is not None:
            audit.record(AuditAction.LOGOUT, actor=principal, target=principal.username, source=principal.source)
    response = json_response({"ok": True})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


@authenticated
async def me(request: web.Request) -> web.Response:
    """GET /api/me: who the caller is logged in as."""
    return json_response(me_json(principal_of(request)))


def add_auth_routes(app: web.Application, accounts: AccountService, guard: WebGuard) -> None:
    """Install the middleware's state and the login routes (before any other route module)."""
    app[ACCOUNTS] = accounts
    app[_GUARD] = guard
    app[_PUBLIC] = set()
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", logout)
    app.router.add_get("/api/me", me)
