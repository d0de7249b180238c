"""HTTP endpoints of alarms: list/filter, details with deliveries and audit, ack/resolve, live events.

``GET /api/alarms/ws`` is a WebSocket of alarm events for consoles: a new
alarm, a state change, an escalation, a delivery outcome, a snapshot ready.
Operator actions are recorded under the logged-in user (never a name in the
body; ``{"note": "…"}`` is optional) and are stored before the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Container
from datetime import datetime
from typing import Any

from aiohttp import WSMsgType, web

from gateway.alarms.model import Alarm, AlarmFilter, AlarmState, Delivery, DeliveryEvent, Transition
from gateway.alarms.payload import rfc3339_ms
from gateway.alarms.service import AlarmService
from gateway.audit.actions import AuditAction
from gateway.errors import InvalidTransition, StoreError, UnknownAlarm
from gateway.gb28181.ids import district_name
from gateway.httpapi.common import json_error, json_response, paging
from gateway.httpapi.identity import AUDIT, principal_of
from gateway.registry.directory import Directory
from gateway.registry.model import InvalidFilter
from gateway.security.principal import Principal, Role

log = logging.getLogger("kgw.http.alarms")
ALARMS = web.AppKey("kgw_alarms", AlarmService)
DIRECTORY = web.AppKey("kgw_alarm_directory", Directory)
SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("kgw_alarm_sockets")


def _alarms(request: web.Request) -> AlarmService:
    return request.app[ALARMS]


def _view(request: web.Request, alarm: Alarm) -> dict[str, Any]:
    return alarm_json(alarm, request.app[DIRECTORY], request.app[ALARMS].snapshots)


def alarm_json(alarm: Alarm, directory: Directory | None = None, snapshots: Container[str] = ()) -> dict[str, Any]:
    """The API's view of an alarm (times as RFC 3339 and as epoch seconds)."""
    kind = alarm.kind
    kg = directory.kindergartens.get(alarm.kindergarten_id or "") if directory is not None else None
    return {
        "id": alarm.id,
        "seq": alarm.seq,
        "state": alarm.state.value,
        "received_at": rfc3339_ms(alarm.received_at),
        "received_ts": alarm.received_at,
        "device_time": alarm.alarm_time,
        "priority": alarm.priority,
        "method": alarm.method,
        "type": alarm.alarm_type,
        "event_type": alarm.event_type,
        "category": kind.category,
        "kind": kind.name,
        "kind_name": kind.name_zh,
        "description": alarm.description,
        "device_id": alarm.device_id,
        "source_id": alarm.source_id,
        "kindergarten_id": alarm.kindergarten_id,
        "kindergarten_name": kg.name if kg else "",
        "district_code": alarm.district_code,
        "district_name": district_name(alarm.district_code) or "",
        "longitude": alarm.longitude,
        "latitude": alarm.latitude,
        "escalated_at": _time(alarm.escalated_at),
        "acknowledged_by": alarm.acknowledged_by,
        "acknowledged_at": _time(alarm.acknowledged_at),
        "resolved_by": alarm.resolved_by,
        "resolved_at": _time(alarm.resolved_at),
        "sender_registered": alarm.sender_registered,
        "verified": alarm.verified,
        "unverified_reason": alarm.unverified_reason,
        "verified_by": alarm.verified_by,
        "verified_at": _time(alarm.verified_at),
        "source_address": alarm.peer,
        "repeats": alarm.repeats,
        "last_repeat_at": _time(alarm.last_repeat_at),
        "problems": list(alarm.problems),
        "live_channel_id": directory.entrance_camera(alarm.kindergarten_id) if directory is not None else None,
        "has_snapshot": bool(alarm.id in snapshots),
    }


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    """The API's view of a delivery."""
    return {
        "alarm_id": delivery.alarm_id,
        "sink": delivery.sink,
        "event": delivery.event.value,
        "state": delivery.state.value,
        "attempts": delivery.attempts,
        "next_attempt_at": _time(delivery.next_attempt_at) if delivery.state.value != "delivered" else None,
        "last_error": delivery.last_error,
        "delivered_at": _time(delivery.delivered_at),
        "created_at": _time(delivery.created_at),
    }


def _transition_json(transition: Transition) -> dict[str, Any]:
    return {
        "at": _time(transition.at),
        "action": transition.action.value,
        "actor": transition.actor,
        "detail": transition.detail,
    }


def _time(t: float | None) -> str | None:
    return rfc3339_ms(t) if t is not None else None


def _query_time(request: web.Request, name: str) -> float | None:
    """Epoch seconds or an ISO/RFC 3339 time (local time when it has no zone)."""
    value = request.query.get(name)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, f"{name} must be epoch seconds or an ISO 8601 time") from exc


async def list_alarms(request: web.Request) -> web.Response:
    """GET /api/alarms?district=&kindergarten=&state=&since=&until=&escalated=&offset=&limit=."""
    state_text = request.query.get("state")
    try:
        state = AlarmState(state_text) if state_text else None
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, f"state must be one of {[s.value for s in AlarmState]}") from exc
    escalated_text = request.query.get("escalated", "").lower()
    escalated = {"true": True, "1": True, "false": False, "0": False}.get(escalated_text)
    if escalated_text and escalated is None:
        raise json_error(web.HTTPBadRequest, "escalated must be true or false")
    offset, limit = paging(request)
    flt = AlarmFilter(
        district_code=request.query.get("district") or None,
        kindergarten_id=request.query.get("kindergarten") or None,
        state=state,
        since=_query_time(request, "since"),
        until=_query_time(request, "until"),
        escalated=escalated,
        offset=offset,
        limit=limit,
    )
    try:
        page = await _alarms(request).list_alarms(flt)
    except InvalidFilter as exc:
        raise json_error(web.HTTPBadRequest, str(exc)) from exc
    return json_response(
        {
            "items": [_view(request, a) for a in page.items],
            "total": page.total,
            "offset": page.offset,
            "limit": page.limit,
        }
    )


async def get_alarm(request: web.Request) -> web.Response:
    """GET /api/alarms/{id}: the alarm, its deliveries and its audit trail."""
    try:
        alarm, deliveries, transitions = await _alarms(request).details(request.match_info["id"])
    except UnknownAlarm as exc:
        raise json_error(web.HTTPNotFound, f"no alarm {request.match_info['id']}") from exc
    data = _view(request, alarm)
    data["deliveries"] = [delivery_json(d) for d in deliveries]
    data["transitions"] = [_transition_json(t) for t in transitions]
    return json_response(data)


async def _operator_step(request: web.Request, action: str) -> web.Response:
    user = principal_of(request).username  # the authenticated caller, never a typed name
    try:
        body = await request.json() if request.body_exists else {}
        note = str(body.get("note", ""))
    except (ValueError, TypeError, AttributeError) as exc:
        raise json_error(web.HTTPBadRequest, 'expected JSON {"note": "<optional>"}') from exc
    service = _alarms(request)
    alarm_id = request.match_info["id"]
    try:
        if action == "ack":
            alarm = await service.acknowledge(alarm_id, user, note)
        else:
            alarm = await service.resolve(alarm_id, user, note)
    except UnknownAlarm as exc:
        raise json_error(web.HTTPNotFound, f"no alarm {alarm_id}") from exc
    except InvalidTransition as exc:
        raise json_error(web.HTTPConflict, str(exc)) from exc
    except StoreError as exc:
        raise json_error(web.HTTPServiceUnavailable, f"could not store: {exc}") from exc
    return json_response(_view(request, alarm))


async def acknowledge(request: web.Request) -> web.Response:
    """POST /api/alarms/{id}/ack {"note": "…"} (optional body)."""
    return await _operator_step(request, "ack")


async def resolve(request: web.Request) -> web.Response:
    """POST /api/alarms/{id}/resolve {"note": "…"} (optional body)."""
    return await _operator_step(request, "resolve")


async def verify_alarm(request: web.Request) -> web.Response:
    """POST /api/alarms/{id}/verify {"note": "…"}: an operator confirms an unverified alarm is real.

    Its held deliveries then go out (police included). Only a 市级管理员, or a 区级值班员
    of the alarm's district, may; the actor is the authenticated user, never a typed name.
    """
    principal = principal_of(request)
    service = _alarms(request)
    alarm_id = request.match_info["id"]
    note = ""
    if request.can_read_body:
        try:
            body = await request.json()
            note = str(body.get("note", "")) if isinstance(body, dict) else ""
        except ValueError as exc:
            raise json_error(web.HTTPBadRequest, 'expected JSON {"note": "<optional>"}') from exc
    audit = request.app.get(AUDIT)

    def record(outcome: str, detail: str = "") -> None:
        if audit is not None:
            audit.record(
                AuditAction.ALARM_VERIFY,
                actor=principal,
                target=alarm_id,
                source=principal.source or (request.remote or ""),
                outcome=outcome,
                detail={"note": note[:500], "reason": detail} if detail or note else None,
            )

    try:
        alarm = await service.get_alarm(alarm_id)
    except UnknownAlarm as exc:
        raise json_error(web.HTTPNotFound, f"no alarm {alarm_id}") from exc
    if not may_verify(principal, alarm):
        record("denied")
        raise json_error(web.HTTPForbidden, "only a city administrator or the district's duty officer may verify")
    try:
        alarm = await service.verify(alarm_id, principal.username, note)
    except UnknownAlarm as exc:
        raise json_error(web.HTTPNotFound, f"no alarm {alarm_id}") from exc
    except InvalidTransition as exc:
        record("refused", str(exc))
        raise json_error(web.HTTPConflict, str(exc)) from exc
    except StoreError as exc:
        raise json_error(web.HTTPServiceUnavailable, f"could not store: {exc}") from exc
    record("ok", alarm.unverified_reason)
    return json_response(_view(request, alarm))


def may_verify(principal: Principal, alarm: Alarm) -> bool:
    """Who may release a held alarm to the police: the city, or the alarm's own district."""
    if principal.role is Role.CITY_ADMIN:
        return True
    return (
        principal.role is Role.DISTRICT_DUTY
        and bool(principal.district_code)
        and (principal.district_code == alarm.district_code)
    )


async def retry_delivery(request: web.Request) -> web.Response:
    """POST /api/alarms/{id}/deliveries/{sink}/{event}/retry: try a dead letter again now."""
    info = request.match_info
    try:
        event = DeliveryEvent(info["event"])
        delivery = await _alarms(request).retry_delivery((info["id"], info["sink"], event.value))
    except (ValueError, KeyError) as exc:
        raise json_error(web.HTTPNotFound, "no such undelivered delivery") from exc
    return json_response(delivery_json(delivery))


async def list_deliveries(request: web.Request) -> web.Response:
    """GET /api/alarm-deliveries?state=dead&sink=mqtt: dead letters and the rest of the outbox."""
    offset, limit = paging(request)
    try:
        page = await _alarms(request).list_deliveries(
            request.query.get("state") or None, request.query.get("sink") or None, offset, limit
        )
    except InvalidFilter as exc:
        raise json_error(web.HTTPBadRequest, str(exc)) from exc
    return json_response(
        {
            "items": [delivery_json(d) for d in page.items],
            "total": page.total,
            "offset": page.offset,
            "limit": page.limit,
        }
    )


async def sinks(request: web.Request) -> web.Response:
    """GET /api/alarm-sinks: each sink's health, outbox depth and dead letters."""
    return json_response({"items": _alarms(request).sink_status()})


async def snapshot(request: web.Request) -> web.Response:
    """GET /api/alarms/{id}/snapshot.jpg: the entrance camera when the alarm came in."""
    jpeg = _alarms(request).snapshots.get(request.match_info["id"])
    if jpeg is None:
        raise json_error(web.HTTPNotFound, "no snapshot for this alarm (yet)")
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})


async def events(request: web.Request) -> web.StreamResponse:
    """GET /api/alarms/ws: WebSocket of alarm events (JSON text frames)."""
    service = _alarms(request)
    ws = web.WebSocketResponse(heartbeat=20.0)
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    queue = service.feed.subscribe()

    async def reader() -> None:
        async for message in ws:  # consoles only listen; this notices the close
            if message.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break

    reading = asyncio.ensure_future(reader())
    try:
        await ws.send_str(json.dumps({"type": "hello", "open": len(service.lifecycle)}))
        while not ws.closed:
            getting = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getting, reading}, return_when=asyncio.FIRST_COMPLETED)
            if getting not in done:
                getting.cancel()
                break
            event = getting.result()
            if event.get("type") == "closed":
                break
            await ws.send_str(json.dumps(_event_json(event, request), ensure_ascii=False))
    except (ConnectionError, RuntimeError):
        pass  # the console went away mid-send
    finally:
        reading.cancel()
        service.feed.unsubscribe(queue)
        request.app[SOCKETS].discard(ws)
        with contextlib.suppress(Exception):
            await ws.close()
    return ws


def _event_json(event: dict[str, Any], request: web.Request) -> dict[str, Any]:
    out: dict[str, Any] = {"type": event["type"]}
    if "alarm" in event:
        out["alarm"] = _view(request, event["alarm"])
    if "delivery" in event:
        out["delivery"] = delivery_json(event["delivery"])
    if "alarm_id" in event:
        out["alarm_id"] = event["alarm_id"]
    return out


async def _close_sockets(app: web.Application) -> None:
    sockets = app[SOCKETS]
    for ws in list(sockets):
        with contextlib.suppress(Exception):
            await ws.close(code=1001, message=b"gateway stopping")


def add_alarm_routes(app: web.Application, alarms: AlarmService, directory: Directory) -> None:
    """Register the alarm endpoints (the directory names kindergartens and entrance cameras)."""
    app[ALARMS], app[DIRECTORY] = alarms, directory
    app[SOCKETS] = set()
    app.router.add_get("/api/alarms", list_alarms)
    app.router.add_get("/api/alarms/ws", events)
    app.router.add_get("/api/alarms/{id}", get_alarm)
    app.router.add_get("/api/alarms/{id}/snapshot.jpg", snapshot)
    app.router.add_post("/api/alarms/{id}/ack", acknowledge)
    app.router.add_post("/api/alarms/{id}/resolve", resolve)
    app.router.add_post("/api/alarms/{id}/verify", verify_alarm)
    app.router.add_post("/api/alarms/{id}/deliveries/{sink}/{event}/retry", retry_delivery)
    app.router.add_get("/api/alarm-deliveries", list_deliveries)
    app.router.add_get("/api/alarm-sinks", sinks)
    app.on_shutdown.append(_close_sockets)


__all__ = ["add_alarm_routes", "alarm_json", "delivery_json", "may_verify"]
