"""Onboarding acceptance (验收) on HTTP: start a run, follow it, confirm areas, finish, read the report.

Who: the roles that may confirm a camera's area (:attr:`Capability.AREA_CONFIRM`:
市级管理员 everywhere, 区级值班员 in their own district) — a run shows every
camera's picture, indoor ones too, and its area step decides what police see.
A kindergarten out of the caller's scope answers like an unknown one (404). The
reminder list (whose drill is overdue) is for whoever may read devices, by district.

Every change (start, areas, finish, abort) and every report or snapshot read is
an audit record (``acceptance``, :data:`gateway.httpapi.audit_routes.AUDITED_ROUTES`);
each confirmed area is also its own ``area_confirm`` record, as on
``PUT /api/channels/{id}/area``.

| route | what |
|---|---|
| ``POST /api/acceptance`` ``{"kindergarten_id"}`` | start a run (409 while one runs) |
| ``GET /api/acceptance?kindergarten=`` | the kindergarten's runs and standing (需重新验收 and why) |
| ``GET /api/acceptance/{id}`` | a run's progress: checks, cameras with snapshot links and areas |
| ``POST /api/acceptance/{id}/areas`` ``{"areas": {channel: area}}`` | the operator's areas; opens the drill |
| ``POST /api/acceptance/{id}/finish`` / ``abort`` | end now (unchecked: skipped) / abandon |
| ``GET /api/acceptance/{id}/report`` | the printable HTML report (finished runs) |
| ``GET /api/acceptance/{id}/snapshots/{channel}.jpg`` | a snapshot the run took |
| ``GET /api/acceptance-overdue`` | kindergartens whose last passed drill is too old |
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.acceptance.model import Acceptance, CheckName, devices_to_json
from gateway.acceptance.rules import AREA_LABELS
from gateway.acceptance.service import (
    AcceptanceBusy,
    AcceptanceService,
    NotRunning,
    UnknownKindergarten,
    UnknownRun,
)
from gateway.audit.actions import AuditAction
from gateway.errors import StoreError
from gateway.gb28181.ids import TIANJIN_DISTRICTS
from gateway.httpapi.common import json_error, json_object, json_response
from gateway.httpapi.guard import denied, requires
from gateway.httpapi.identity import AUDIT, principal_of
from gateway.registry.model import AreaTag, Kindergarten
from gateway.security.scope import Capability, may_see_district, may_see_kindergarten

__all__ = ["ACCEPTANCE", "acceptance_part", "add_acceptance_routes"]

ACCEPTANCE = web.AppKey("kgw_acceptance", AcceptanceService)


def _service(request: web.Request) -> AcceptanceService:
    return request.app[ACCEPTANCE]


def _kindergarten(request: web.Request, kindergarten_id: str, target: str | None = None) -> Kindergarten:
    """The kindergarten when the caller may run its acceptance; 404 (audited when out of scope) otherwise."""
    service = _service(request)
    kindergarten = service.directory.kindergartens.get(kindergarten_id)
    principal = principal_of(request)
    message = f"unknown kindergarten {kindergarten_id}"
    if kindergarten is None:
        raise json_error(web.HTTPNotFound, message)
    if not may_see_kindergarten(principal, kindergarten, Capability.AREA_CONFIRM):
        raise denied(request, principal, Capability.AREA_CONFIRM, target or kindergarten_id, message)
    return kindergarten


async def _run(request: web.Request) -> Acceptance:
    """The path's run when the caller may see its kindergarten (the same 404 otherwise)."""
    run_id = request.match_info["id"]
    try:
        run = await _service(request).get(run_id)
    except UnknownRun:
        raise json_error(web.HTTPNotFound, f"unknown acceptance {run_id}") from None
    except StoreError as exc:
        raise json_error(web.HTTPServiceUnavailable, str(exc)) from exc
    kindergarten = _service(request).directory.kindergartens.get(run.kindergarten_id)
    principal = principal_of(request)
    if kindergarten is None or not may_see_kindergarten(principal, kindergarten, Capability.AREA_CONFIRM):
        raise denied(request, principal, Capability.AREA_CONFIRM, run_id, f"unknown acceptance {run_id}")
    return run


def run_json(service: AcceptanceService, run: Acceptance) -> dict[str, Any]:
    """A run as the console follows it (no report body: a link)."""
    directory = service.directory
    kindergarten = directory.kindergartens.get(run.kindergarten_id)
    pictures = run.check(CheckName.PICTURES)
    shot = {i.subject for i in pictures.items if i.extra.get("snapshot")} if pictures is not None else set()
    cameras = []
    for channel_id, name in service.cameras(run.kindergarten_id):
        channel = directory.channels.get(channel_id)
        confirmed = channel.confirmed_area if channel is not None else None
        suggested = channel.area if channel is not None else AreaTag.OTHER
        cameras.append(
            {
                "id": channel_id,
                "name": name,
                "online": bool(channel is not None and directory.is_up(channel)),
                "confirmed_area": confirmed.value if confirmed is not None else None,
                "area_suggested": AreaTag(suggested).value,
                "snapshot_url": f"/api/acceptance/{run.id}/snapshots/{channel_id}.jpg" if channel_id in shot else None,
            }
        )
    active = service.active.get(run.id)
    return {
        "id": run.id,
        "kindergarten_id": run.kindergarten_id,
        "kindergarten_name": kindergarten.name if kindergarten is not None else "",
        "district_code": run.district_code,
        "district_name": TIANJIN_DISTRICTS.get(run.district_code, ""),
        "state": run.state.value,
        "state_label": run.state.label,
        "finished": run.state.finished,
        "started_by": run.started_by,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "drill_alarm_id": run.drill_alarm_id,
        "drill_waiting_since": active.waiting_since if active is not None else None,
        "checks": [c.to_json() for c in run.checks],
        "devices": devices_to_json(run.devices),
        "cameras": cameras,
        "report_url": f"/api/acceptance/{run.id}/report" if run.state.finished else None,
    }


@requires(Capability.AREA_CONFIRM)
async def start_run(request: web.Request) -> web.Response:
    """POST /api/acceptance {"kindergarten_id": ...}: start a run (201), 409 while one runs."""
    body = await json_object(request, '{"kindergarten_id": ...}')
    kindergarten_id = body.get("kindergarten_id")
    if not isinstance(kindergarten_id, str) or not kindergarten_id:
        raise json_error(web.HTTPBadRequest, "kindergarten_id must be a string")
    _kindergarten(request, kindergarten_id)
    service = _service(request)
    try:
        run = await service.begin(kindergarten_id, principal_of(request).username)
    except AcceptanceBusy as exc:
        raise json_error(web.HTTPConflict, f"本园的验收正在进行（{exc.run_id}）") from exc
    except UnknownKindergarten:
        raise json_error(web.HTTPNotFound, f"unknown kindergarten {kindergarten_id}") from None
    except StoreError as exc:
        raise json_error(web.HTTPServiceUnavailable, str(exc)) from exc
    return json_response(run_json(service, run), status=201)


@requires(Capability.AREA_CONFIRM)
async def list_runs(request: web.Request) -> web.Response:
    """GET /api/acceptance?kindergarten=ID&limit=: the kindergarten's runs (newest first) and its standing."""
    kindergarten_id = request.query.get("kindergarten", "")
    if not kindergarten_id:
        raise json_error(web.HTTPBadRequest, "kindergarten is required")
    kindergarten = _kindergarten(request, kindergarten_id)
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, "limit must be an integer") from exc
    service = _service(request)
    try:
        runs = await service.list_for(kindergarten_id, limit)
        standing = await service.summary(kindergarten_id)
    except StoreError as exc:
        raise json_error(web.HTTPServiceUnavailable, str(exc)) from exc
    items = []
    for run in runs:
        data = run_json(service, run)
        del data["cameras"], data["devices"]
        items.append(data)
    return json_response(
        {"kindergarten_id": kindergarten_id, "kindergarten_name": kindergarten.name, **standing, "items": items}
    )


@requires(Capability.AREA_CONFIRM)
async def get_run(request: web.Request) -> web.Response:
    """GET /api/acceptance/{id}: the run's progress."""
    return json_response(run_json(_service(request), await _run(request)))


def _areas_of(body: dict[str, Any]) -> dict[str, AreaTag]:
    areas = body.get("areas")
    if not isinstance(areas, dict):
        raise ValueError('expected {"areas": {"<channel id>": "<area>"}}')
    choices = {}
    for channel_id, area in areas.items():
        if not isinstance(area, str):
            raise ValueError(f"area of {channel_id} must be a string")
        choices[str(channel_id)] = AreaTag(area)
    return choices


@requires(Capability.AREA_CONFIRM)
async def confirm_areas(request: web.Request) -> web.Response:
    """POST /api/acceptance/{id}/areas {"areas": {channel: area}}: confirm; the first call opens the drill."""
    run = await _run(request)
    body = await json_object(request, '{"areas": {...}}')
    try:
        choices = _areas_of(body)
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, f"bad areas: {exc}") from exc
    service, principal = _service(request), principal_of(request)
    try:
        updated = await service.confirm(run.id, choices, principal.username)
    except NotRunning as exc:
        raise json_error(web.HTTPConflict, f"这次验收现在不能确认区域：{exc}") from exc
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, str(exc)) from exc
    except StoreError as exc:
        raise json_error(web.HTTPServiceUnavailable, str(exc)) from exc
    audit = request.app.get(AUDIT)
    if audit is not None:
        for channel_id, area in sorted(choices.items()):
            audit.record(
                AuditAction.AREA_CONFIRM,
                actor=principal,
                target=channel_id,
                source=principal.source or (request.remote or ""),
                detail={"area": area.value, "acceptance": run.id},
            )
    return json_response(run_json(service, updated))


async def _end(request: web.Request, abort: bool) -> web.Response:
    run = await _run(request)
    service, actor = _service(request), principal_of(request).username
    try:
        ended = await (service.abort(run.id, actor) if abort else service.finish(run.id, actor))
    except NotRunning as exc:
        raise json_error(web.HTTPConflict, f"这次验收已结束：{exc}") from exc
    except StoreError as exc:
        raise json_error(web.HTTPServiceUnavailable, str(exc)) from exc
    return json_response(run_json(service, ended))


@requires(Capability.AREA_CONFIRM)
async def finish_run(request: web.Request) -> web.Response:
    """POST /api/acceptance/{id}/finish: end now; what was not checked is skipped."""
    return await _end(request, abort=False)


@requires(Capability.AREA_CONFIRM)
async def abort_run(request: web.Request) -> web.Response:
    """POST /api/acceptance/{id}/abort: abandon the run."""
    return await _end(request, abort=True)


@requires(Capability.AREA_CONFIRM)
async def report(request: web.Request) -> web.Response:
    """GET /api/acceptance/{id}/report: the stored HTML report (409 while the run goes on)."""
    run = await _run(request)
    if not run.state.finished or not run.report:
        raise json_error(web.HTTPConflict, "验收尚未结束，报告还没有生成")
    return web.Response(
        text=run.report,
        content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'",
        },
    )


@requires(Capability.AREA_CONFIRM)
async def snapshot(request: web.Request) -> web.Response:
    """GET /api/acceptance/{id}/snapshots/{channel}.jpg: a picture the run took."""
    run = await _run(request)
    try:
        jpeg = await _service(request).snapshot(run.id, request.match_info["channel"])
    except StoreError as exc:
        raise json_error(web.HTTPServiceUnavailable, str(exc)) from exc
    if jpeg is None:
        raise json_error(web.HTTPNotFound, "no such snapshot")
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


@requires(Capability.DEVICE_READ)
async def overdue(request: web.Request) -> web.Response:
    """GET /api/acceptance-overdue: kindergartens whose last passed drill is older than the period."""
    service, principal = _service(request), principal_of(request)
    items = [
        {
            "kindergarten_id": o.kindergarten_id,
            "name": o.name,
            "district_code": o.district_code,
            "district_name": TIANJIN_DISTRICTS.get(o.district_code, ""),
            "last_drill": o.last_drill,
            "reason": o.reason,
        }
        for o in service.overdue
        if may_see_district(principal, o.district_code, Capability.DEVICE_READ)
    ]
    return json_response(
        {
            "period_days": service.settings.overdue_after / 86400,
            "checked_at": service.overdue_checked_at,
            "total": len(items),
            "items": items,
        }
    )


@requires(Capability.AREA_CONFIRM)
async def area_choices(request: web.Request) -> web.Response:
    """GET /api/acceptance-areas: the areas an operator may choose, zh-CN labels, which are shared with police."""
    return json_response(
        {"items": [{"value": a.value, "label": label, "police": a.is_public} for a, label in AREA_LABELS.items()]}
    )


def add_acceptance_routes(app: web.Application, service: AcceptanceService) -> None:
    """Register the acceptance endpoints."""
    app[ACCEPTANCE] = service
    app.router.add_post("/api/acceptance", start_run)
    app.router.add_get("/api/acceptance", list_runs)
    app.router.add_get("/api/acceptance-overdue", overdue)
    app.router.add_get("/api/acceptance-areas", area_choices)
    app.router.add_get("/api/acceptance/{id}", get_run)
    app.router.add_post("/api/acceptance/{id}/areas", confirm_areas)
    app.router.add_post("/api/acceptance/{id}/finish", finish_run)
    app.router.add_post("/api/acceptance/{id}/abort", abort_run)
    app.router.add_get("/api/acceptance/{id}/report", report)
    app.router.add_get("/api/acceptance/{id}/snapshots/{channel}.jpg", snapshot)


def acceptance_part(service: AcceptanceService) -> Any:
    """The routes as a web part of the node's application."""
    return lambda app: add_acceptance_routes(app, service)
