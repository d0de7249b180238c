"""``POST /api/devices/import``: per-device passwords from a CSV body (city administrators only).

The body is ``text/csv`` (see :mod:`gateway.device_csv` for the columns); the
import is all-or-nothing: 400 with every bad line, or 200 with the count. The
caller must be a 市级管理员 (``Role.CITY_ADMIN``); each import, refused or not,
is an audit record (``AuditAction.PROVISIONING``) when the app has a recorder.
The response never contains a password.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from gateway.audit.actions import AuditAction
from gateway.device_csv import CsvImportError, DeviceCredential, parse_device_csv
from gateway.httpapi.guard import requires
from gateway.httpapi.identity import AUDIT, principal_of
from gateway.security.principal import Principal, Role
from gateway.security.scope import Capability

__all__ = ["ImportDevices", "device_import_part"]

log = logging.getLogger("kgw.provisioning")

ImportDevices = Callable[[Sequence[DeviceCredential]], Awaitable[int]]
"""Stores the credentials and applies them to the running registrar; the number stored."""

MAX_CSV_BYTES = 4 * 1024 * 1024


def device_import_part(apply: ImportDevices) -> Callable[[web.Application], None]:
    """A WebPart adding the import route, storing through ``apply``."""

    @requires(Capability.PROVISION)
    async def import_devices(request: web.Request) -> web.Response:
        principal = principal_of(request)
        if principal.role is not Role.CITY_ADMIN:
            _audit(request, principal, "forbidden", 0)
            return web.json_response({"error": "only a city administrator may provision devices"}, status=403)
        # JSON like every request body of the API (a cross-site form cannot send it): {"csv": "..."}.
        if request.content_type != "application/json":
            return web.json_response({"error": 'send application/json {"csv": "<the CSV text>"}'}, status=415)
        if (request.content_length or 0) > MAX_CSV_BYTES:
            return web.json_response({"error": f"body larger than {MAX_CSV_BYTES} bytes"}, status=413)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": 'expected JSON {"csv": "<the CSV text>"}'}, status=400)
        text = body.get("csv") if isinstance(body, dict) else None
        if not isinstance(text, str):
            return web.json_response({"error": 'expected JSON {"csv": "<the CSV text>"}'}, status=400)
        try:
            rows = parse_device_csv(text)
        except CsvImportError as exc:
            _audit(request, principal, "refused", 0)
            return web.json_response({"error": "nothing imported", "errors": exc.errors}, status=400)
        count = await apply(rows)
        log.info("%s imported %d device credential(s)", principal.username, count)
        _audit(request, principal, "ok", count)
        return web.json_response({"imported": count})

    def add(app: web.Application) -> None:
        app.router.add_post("/api/devices/import", import_devices)

    return add


def _audit(request: web.Request, principal: Principal, outcome: str, count: int) -> None:
    recorder = request.app.get(AUDIT)
    if recorder is not None:
        recorder.record(
            AuditAction.PROVISIONING,
            actor=principal,
            target="devices",
            source=request.remote or "",
            outcome=outcome,
            detail={"kind": "device_credentials_csv", "count": count},
        )
