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
from gateway.httpapi.identity import AUDIT, principal_of
from gateway.security.principal import Principal, Role

__all__ = ["ImportDevices", "device_import_part"]

log = logging.getLogger("kgw.provisioning")

ImportDevices = Callable[[Sequence[DeviceCredential]], Awaitable[int]]
"""Stores the credentials and applies them to the running registrar; the number stored."""

MAX_CSV_BYTES = 4 * 1024 * 1024


def device_import_part(apply: ImportDevices) -> Callable[[web.Application], None]:
    """A WebPart adding the import route, storing through ``apply``."""

    async def import_devices(request: web.Request) -> web.Response:
        principal = principal_of(request)
        if principal.role is not Role.CITY_ADMIN:
            _audit(request, principal, "forbidden", 0)
            return web.json_response({"error": "only a city administrator may provision devices"}, status=403)
        if request.content_type not in ("text/csv", "text/plain"):
            return web.json_response({"error": "send the CSV as text/csv"}, status=415)
        raw = await request.content.read(MAX_CSV_BYTES + 1)
        if len(raw) > MAX_CSV_BYTES:
            return web.json_response({"error": f"CSV larger than {MAX_CSV_BYTES} bytes"}, status=413)
        try:
            rows = parse_device_csv(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return web.json_response({"error": "the CSV must be UTF-8"}, status=400)
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
