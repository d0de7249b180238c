"""Every route declares what it needs: ``@requires(capability)`` or ``@public``; refusals are audited.

``requires`` answers 401 without a principal (:func:`principal_of`) and 403
when the caller's role never has the capability (the permission table,
:mod:`gateway.security.scope`). Whether the role may touch *this* object
(district, kindergarten, police-shareable) is the handler's second check, with
one rule everywhere: **an object outside the caller's scope answers exactly
like an unknown one (404)**, so a probe cannot confirm that a 河西区 camera or
alarm exists; lists are filtered, never refused. Refusals of writes and views
are recorded as :attr:`AuditAction.ACCESS_DENIED` when the app has a recorder.

A test enumerates ``app.router`` and fails for any handler that declared
nothing (:func:`declared`), so a new route cannot skip scope.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, TypeVar, cast

from aiohttp import web

from gateway.audit.actions import AuditAction
from gateway.httpapi.common import json_error
from gateway.httpapi.identity import AUDIT, principal_of
from gateway.registry.model import Channel
from gateway.security.principal import Principal
from gateway.security.scope import Capability, allows, may_see_channel

__all__ = ["AUTHENTICATED", "PUBLIC", "authenticated", "declared", "denied", "public", "requires"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)

PUBLIC: Final = "public"
"""What :func:`declared` says of a route open without login (liveness, the console's static page)."""

_DECLARED: dict[object, Capability | str] = {}


def requires(capability: Capability) -> Callable[[H], H]:
    """Decorate a handler: a principal is required and its role must have ``capability``."""

    def decorate(handler: H) -> H:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            principal = principal_of(request)
            if not allows(principal, capability):
                record_denied(request, principal, capability, request.path)
                raise json_error(web.HTTPForbidden, f"role {principal.role.value} may not {capability.value} (无权限)")
            return await handler(request)

        _DECLARED[guarded] = capability
        return cast(H, guarded)

    return decorate


def public(handler: H) -> H:
    """Mark a handler as open to anyone (no principal needed)."""
    _DECLARED[handler] = PUBLIC
    return handler


AUTHENTICATED: Final = "authenticated"
"""What :func:`declared` says of a route any logged-in caller may use about themselves (``/api/me``, logout)."""


def authenticated(handler: H) -> H:
    """Mark a handler that needs a principal of any role and touches only the caller's own session."""
    _DECLARED[handler] = AUTHENTICATED
    return handler


def declared(handler: object) -> Capability | str | None:
    """The capability a handler requires, :data:`PUBLIC`, :data:`AUTHENTICATED`, or None when it declared nothing."""
    return _DECLARED.get(handler)


def record_denied(request: web.Request, principal: Principal, capability: Capability, target: str) -> None:
    """Report a refusal to the app's audit recorder, if it has one."""
    recorder = request.app.get(AUDIT)
    if recorder is None:
        return
    recorder.record(
        AuditAction.ACCESS_DENIED,
        actor=principal,
        target=target,
        source=principal.source or (request.remote or ""),
        outcome="denied",
        detail={"capability": capability.value, "method": request.method, "path": request.path},
    )


def denied(
    request: web.Request, principal: Principal, capability: Capability, target: str, message: str
) -> web.HTTPException:
    """An out-of-scope object: audited, then answered as the same 404 an unknown one gets (to raise)."""
    record_denied(request, principal, capability, target)
    return json_error(web.HTTPNotFound, message)


def scoped_channel(
    request: web.Request,
    channels: Mapping[str, Channel],
    capability: Capability,
    channel_id: str | None = None,
    *,
    message: str = "unknown channel {id}",
) -> Channel:
    """The path's channel (or ``channel_id``) when the caller may use ``capability`` on it.

    Otherwise the 404 an unknown channel gets — the same for a channel that exists out of
    the caller's scope, whose refusal is audited (:func:`denied`). ``message`` names the
    channel through ``{id}``.
    """
    channel_id = request.match_info["id"] if channel_id is None else channel_id
    channel = channels.get(channel_id)
    principal = principal_of(request)
    if channel is None or not may_see_channel(principal, channel, capability):
        text = message.format(id=channel_id)
        if channel is None:
            raise json_error(web.HTTPNotFound, text)
        raise denied(request, principal, capability, channel_id, text)
    return channel
