"""Where a request's authenticated principal and the app's audit recorder are kept.

The authentication middleware stores the :class:`Principal` under
:data:`PRINCIPAL_KEY`; routes read it with :func:`principal_of` and never from
the request body. :data:`AUDIT` holds the app's :class:`AuditRecorder`.
"""

from __future__ import annotations

from aiohttp import web

from gateway.audit.actions import AuditRecorder
from gateway.security.principal import Principal

__all__ = ["AUDIT", "PRINCIPAL_KEY", "principal_of"]

PRINCIPAL_KEY = web.RequestKey("kgw_principal", Principal)
AUDIT = web.AppKey("kgw_audit", AuditRecorder)


def principal_of(request: web.Request) -> Principal:
    """The authenticated caller; 401 when the middleware let an anonymous request through."""
    principal = request.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        raise web.HTTPUnauthorized(text='{"error": "login required"}', content_type="application/json")
    return principal
