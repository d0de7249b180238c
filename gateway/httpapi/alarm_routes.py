"""HTTP endpoints of alarms: list/filter, details with deliveries and audit, ack/resolve, live events.

``GET /api/alarms/ws`` is a WebSocket of alarm events for consoles: a new
alarm, a state change, an escalation, a delivery outcome, a snapshot ready.
Operator actions are recorded under the logged-in user (never a name in the
body; ``{"note": "…"}`` is optional) and are stored before the answer.

Scope (:mod:`gateway.security.scope`): lists and the WebSocket carry only
alarms in the caller's scope; an alarm outside it answers like an unknown one
(404), for reading and for acting on it. The outbox, the sinks and delivery
retries are city-wide operations (no district-narrowed account).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Container
from dataclasses import replace
from typing import Any

from aiohttp import WSMsgType, web

from gateway.alarms.drills import DrillProof
from gateway.alarms.model import Alarm, AlarmFilter, AlarmState, Delivery, DeliveryEvent, Transition
from gateway.alarms.payload import rfc3339_ms
from gateway.alarms.service import AlarmService
from gateway.audit.actions import AuditAction
from gateway.errors import ForeignAlarm, InvalidTransition, StoreError, UnknownAlarm
from gateway.gb28181.ids import district_name
from gateway.httpapi.city import CITY
from gateway.httpapi.common import json_error, json_response, paging, query_time
from gateway.httpapi.guard import denied, requires
from gateway.httpapi.identity import AUDIT, principal_of
from gateway.registry.directory import Directory
from gateway.registry.model import MAX_PAGE_LIMIT, InvalidFilter, Page
from gateway.security.principal import Principal
from gateway.security.scope import Capability, Narrowing, Reach, may_see_alarm, may_see_channel, narrowing, reach

log = logging.getLogger("kgw.http.alarms")
ALARMS = web.AppKey("kgw_alarms", AlarmService)
DIRECTORY = web.AppKey("kgw_alarm_directory", Directory)
SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("kgw_alarm_sockets")


def _alarms(request: web.Request) -> AlarmService:
    return request.app[ALARMS]


def _visible(request: web.Request, principal: Principal, alarm: Alarm, capability: Capability) -> bool:
    """Whether the caller may use ``capability`` on the alarm (its source channel decides for police)."""
    source = request.app[DIRECTORY].channels.get(alarm.source_id)
    return may_see_alarm(principal, alarm, source, capability)


async def _scoped_alarm(request: web.Request, capability: Capability) -> Alarm:
    """The path's alarm when the caller may use ``capability`` on it; the unknown alarm's 404 otherwise."""
    principal, alarm_id = principal_of(request), request.match_info["id"]
    try:
        alarm = await _alarms(request).get_alarm(alarm_id)
    except UnknownAlarm as exc:
        raise json_error(web.HTTPNotFound, f"no alarm {alarm_id}") from exc
    if not _visible(request, principal, alarm, capability):
        raise denied(request, principal, capability, alarm_id, f"no alarm {alarm_id}")
    return alarm


def _elsewhere(request: web.Request, exc: ForeignAlarm) -> web.HTTPConflict:
    """409 naming the gateway process that holds the alarm, and its console when it is known."""
    city = request.app.get(CITY)
    holder = next((n for n in city.known_nodes() if n.name == exc.node), None) if city is not None else None
    body = {"error": str(exc), "node": exc.node, "console": holder.console if holder is not None else None}
    return web.HTTPConflict(text=json.dumps(body, ensure_ascii=False), content_type="application/json")


def _city_wide(request: web.Request, capability: Capability) -> None:
    """403 unless the caller reaches the whole city for ``capability`` (outbox, sinks: not per district)."""
    if narrowing(principal_of(request), capability) != Narrowing():
        raise json_error(web.HTTPForbidden, f"{capability.value} is city-wide; your account is narrowed (无权限)")


def _view(request: web.Request, alarm: Alarm) -> dict[str, Any]:
    """The alarm as this caller is shown it: no live link or snapshot they could not open."""
    directory, principal = request.app[DIRECTORY], principal_of(request)
    data = alarm_json(alarm, directory, request.app[ALARMS].snapshots)
    camera = directory.channels.get(data["live_channel_id"] or "")
    if camera is None or not may_see_channel(principal, camera, Capability.LIVE_VIEW):
        data["live_channel_id"] = None
    if not (_visible(request, principal, alarm, Capability.ALARM_SNAPSHOT) and _snapshot_camera_ok(request, alarm)):
        data["has_snapshot"] = False
    return data


def _snapshot_camera_ok(request: web.Request, alarm: Alarm) -> bool:
    """A police-shareable reach sees an alarm's snapshot only when it may watch the camera it shows."""
    principal, directory = principal_of(request), request.app[DIRECTORY]
    if reach(principal, Capability.ALARM_SNAPSHOT) is not Reach.SHAREABLE:
        return True
    camera = directory.channels.get(directory.entrance_camera(alarm.kindergarten_id) or "")
    return camera is not None and may_see_channel(principal, camera, Capability.ALARM_SNAPSHOT)


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
        "drill": alarm.drill,
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


@requires(Capability.ALARM_READ)
async def list_alarms(request: web.Request) -> web.Response:
    """GET /api/alarms?district=&kindergarten=&state=&since=&until=&escalated=&drill=&offset=&limit= (in scope)."""
    state_text = request.query.get("state")
    try:
        state = AlarmState(state_text) if state_text else None
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, f"state must be one of {[s.value for s in AlarmState]}") from exc
    escalated_text = request.query.get("escalated", "").lower()
    escalated = {"true": True, "1": True, "false": False, "0": False}.get(escalated_text)
    if escalated_text and escalated is None:
        raise json_error(web.HTTPBadRequest, "escalated must be true or false")
    drill_text = request.query.get("drill", "").lower()
    drill = {"true": True, "1": True, "false": False, "0": False}.get(drill_text)
    if drill_text and drill is None:
        raise json_error(web.HTTPBadRequest, "drill must be true or false")
    offset, limit = paging(request)
    principal = principal_of(request)
    scope = narrowing(principal, Capability.ALARM_READ)
    filters = scope and scope.applied(request.query.get("district") or None, request.query.get("kindergarten") or None)
    district, kindergarten = filters or (None, None)
    flt = AlarmFilter(
        district_code=district,
        kindergarten_id=kindergarten,
        state=state,
        since=query_time(request, "since"),
        until=query_time(request, "until"),
        escalated=escalated,
        drill=drill,
        offset=offset,
        limit=limit,
    )
    if scope is None or filters is None:
        return json_response({"items": [], "total": 0, "offset": offset, "limit": limit})
    try:
        if scope.post_filter:
            page = await _post_filtered_alarms(request, principal, flt)
        else:
            page = await _alarms(request).list_alarms(flt)
    except InvalidFilter as exc:
        raise json_error(web.HTTPBadRequest, str(exc)) from exc
    return json_response(
        {
            "items": [_view(request, a) for a in page.items if _visible(request, principal, a, Capability.ALARM_READ)],
            "total": page.total,
            "offset": page.offset,
            "limit": page.limit,
        }
    )


async def _post_filtered_alarms(request: web.Request, principal: Principal, flt: AlarmFilter) -> Page[Alarm]:
    """A page of the alarms a per-alarm rule keeps (police: the sharing policy, not a store filter).

    The store is read 1,000 at a time, newest first, and the page cut from what is kept.
    """
    kept: list[Alarm] = []
    at = 0
    while True:
        chunk = await _alarms(request).list_alarms(replace(flt, offset=at, limit=MAX_PAGE_LIMIT))
        kept += (a for a in chunk.items if _visible(request, principal, a, Capability.ALARM_READ))
        at += len(chunk.items)
        if not chunk.items or at >= chunk.total:
            break
    return Page(tuple(kept[flt.offset : flt.offset + flt.limit]), len(kept), flt.offset, flt.limit)


@requires(Capability.ALARM_READ)
async def get_alarm(request: web.Request) -> web.Response:
    """GET /api/alarms/{id}: the alarm, its deliveries and its audit trail."""
    await _scoped_alarm(request, Capability.ALARM_READ)
    try:
        alarm, deliveries, transitions = await _alarms(request).details(request.match_info["id"])
    except UnknownAlarm as exc:
        raise json_error(web.HTTPNotFound, f"no alarm {request.match_info['id']}") from exc
    data = _view(request, alarm)
    data["deliveries"] = [delivery_json(d) for d in deliveries]
    data["transitions"] = [_transition_json(t) for t in transitions]
    return json_response(data)


@requires(Capability.ALARM_READ)
async def deliveries(request: web.Request) -> web.Response:
    """GET /api/alarms/{id}/deliveries: where the alarm got to, per level and target (a drill's proof).

    ``targets``: level (district, municipal, police_platform, police_mqtt, webhook), name,
    state (delivered, pending, failed), delivered_at and error; ``elapsed_s`` end to end once complete.
    """
    await _scoped_alarm(request, Capability.ALARM_READ)
    try:
        proof = await _alarms(request).delivery_proof(request.match_info["id"])
    except UnknownAlarm as exc:
        raise json_error(web.HTTPNotFound, f"no alarm {request.match_info['id']}") from exc
    return json_response(proof_json(proof))


def proof_json(proof: DrillProof) -> dict[str, Any]:
    """The API's view of a delivery proof."""
    return {
        "alarm_id": proof.alarm_id,
        "drill": proof.drill,
        "received_at": rfc3339_ms(proof.received_at),
        "complete": proof.complete,
        "elapsed_s": round(proof.elapsed, 3) if proof.elapsed is not None else None,
        "targets": [
            {
                "level": t.level,
                "name": t.name,
                "state": t.state,
                "delivered_at": _time(t.delivered_at),
                "error": t.error,
            }
            for t in proof.targets
        ],
    }


async def _operator_step(request: web.Request, action: str) -> web.Response:
    user = principal_of(request).username  # the authenticated caller, never a typed name
    try:
        body = await request.json() if request.body_exists else {}
        note = str(body.get("note", ""))
    except (ValueError, TypeError, AttributeError) as exc:
        raise json_error(web.HTTPBadRequest, 'expected JSON {"note": "<optional>"}') from exc
    service = _alarms(request)
    alarm_id = request.match_info["id"]
    await _scoped_alarm(request, Capability.ALARM_ACK if action == "ack" else Capability.ALARM_RESOLVE)
    try:
        if action == "ack":
            alarm = await service.acknowledge(alarm_id, user, note)
        else:
            alarm = await service.resolve(alarm_id, user, note)
    except UnknownAlarm as exc:
        raise json_error(web.HTTPNotFound, f"no alarm {alarm_id}") from exc
    except ForeignAlarm as exc:
        raise _elsewhere(request, exc) from exc
    except InvalidTransition as exc:
        raise json_error(web.HTTPConflict, str(exc)) from exc
    except StoreError as exc:
        raise json_error(web.HTTPServiceUnavailable, f"could not store: {exc}") from exc
    return json_response(_view(request, alarm))


@requires(Capability.ALARM_ACK)
async def acknowledge(request: web.Request) -> web.Response:
    """POST /api/alarms/{id}/ack {"note": "…"} (optional body)."""
    return await _operator_step(request, "ack")


@requires(Capability.ALARM_RESOLVE)
async def resolve(request: web.Request) -> web.Response:
    """POST /api/alarms/{id}/resolve {"note": "…"} (optional body)."""
    return await _operator_step(request, "resolve")


@requires(Capability.ALARM_VERIFY)
async def verify_alarm(request: web.Request) -> web.Response:
    """POST /api/alarms/{id}/verify {"note": "…"}: an operator confirms an unverified alarm is real.

    Its held deliveries then go out (police included). Who may is the permission table's
    ``alarm_verify`` (the city, or the alarm's own district); an alarm outside the caller's
    scope answers like an unknown one. The actor is the authenticated user, never a typed name.
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

    await _scoped_alarm(request, Capability.ALARM_VERIFY)
    try:
        alarm = await service.verify(alarm_id, principal.username, note)
    except UnknownAlarm as exc:
        raise json_error(web.HTTPNotFound, f"no alarm {alarm_id}") from exc
    except ForeignAlarm as exc:
        record("refused", str(exc))
        raise _elsewhere(request, exc) from exc
    except InvalidTransition as exc:
        record("refused", str(exc))
        raise json_error(web.HTTPConflict, str(exc)) from exc
    except StoreError as exc:
        raise json_error(web.HTTPServiceUnavailable, f"could not store: {exc}") from exc
    record("ok", alarm.unverified_reason)
    return json_response(_view(request, alarm))


@requires(Capability.DELIVERY_RETRY)
async def retry_delivery(request: web.Request) -> web.Response:
    """POST /api/alarms/{id}/deliveries/{sink}/{event}/retry: try a dead letter again now."""
    info = request.match_info
    _city_wide(request, Capability.DELIVERY_RETRY)
    try:
        event = DeliveryEvent(info["event"])
        delivery = await _alarms(request).retry_delivery((info["id"], info["sink"], event.value))
    except (ValueError, KeyError) as exc:
        raise json_error(web.HTTPNotFound, "no such undelivered delivery") from exc
    return json_response(delivery_json(delivery))


@requires(Capability.DELIVERY_READ)
async def list_deliveries(request: web.Request) -> web.Response:
    """GET /api/alarm-deliveries?state=dead&sink=mqtt: dead letters and the rest of the outbox."""
    _city_wide(request, Capability.DELIVERY_READ)
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


@requires(Capability.DELIVERY_READ)
async def sinks(request: web.Request) -> web.Response:
    """GET /api/alarm-sinks: each sink's health, outbox depth and dead letters."""
    _city_wide(request, Capability.DELIVERY_READ)
    return json_response({"items": _alarms(request).sink_status()})


@requires(Capability.ALARM_SNAPSHOT)
async def snapshot(request: web.Request) -> web.Response:
    """GET /api/alarms/{id}/snapshot.jpg: the entrance camera when the alarm came in (if the caller may see it)."""
    alarm = await _scoped_alarm(request, Capability.ALARM_SNAPSHOT)
    if not _snapshot_camera_ok(request, alarm):
        message = "no snapshot for this alarm (yet)"
        raise denied(request, principal_of(request), Capability.ALARM_SNAPSHOT, alarm.id, message)
    jpeg = _alarms(request).snapshots.get(request.match_info["id"])
    if jpeg is None:
        raise json_error(web.HTTPNotFound, "no snapshot for this alarm (yet)")
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "max-age=86400"})


@requires(Capability.ALARM_READ)
async def events(request: web.Request) -> web.StreamResponse:
    """GET /api/alarms/ws: WebSocket of the alarm events in the caller's scope (JSON text frames)."""
    service = _alarms(request)
    principal = principal_of(request)
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
        in_scope = sum(
            _visible(request, principal, a, Capability.ALARM_READ)
            for a in service.lifecycle.open_alarms()
            if not a.drill
        )
        await ws.send_str(json.dumps({"type": "hello", "open": in_scope}))
        while not ws.closed:
            getting = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getting, reading}, return_when=asyncio.FIRST_COMPLETED)
            if getting not in done:
                getting.cancel()
                break
            event = getting.result()
            if event.get("type") == "closed":
                break
            if not _event_in_scope(event, request, principal):
                continue
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


def _event_in_scope(event: dict[str, Any], request: web.Request, principal: Principal) -> bool:
    """Whether one feed event may go to this console.

    An alarm event: when the alarm is in scope. A delivery or snapshot event
    names only an alarm ID: it goes to city-wide outbox readers, and otherwise
    only while that alarm is open and in scope (a closed one cannot be checked
    without the store, and the console reloads details when it needs them).
    """
    alarm = event.get("alarm")
    if isinstance(alarm, Alarm):
        return _visible(request, principal, alarm, Capability.ALARM_READ)
    delivery = event.get("delivery")
    alarm_id = delivery.alarm_id if isinstance(delivery, Delivery) else event.get("alarm_id")
    if delivery is not None and narrowing(principal, Capability.DELIVERY_READ) == Narrowing():
        return True
    needs = Capability.ALARM_SNAPSHOT if event.get("type") == "snapshot" else Capability.ALARM_READ
    if narrowing(principal, needs) == Narrowing():  # the whole city: whether or not the alarm is still open
        return True
    lifecycle = _alarms(request).lifecycle
    if not isinstance(alarm_id, str) or alarm_id not in lifecycle:
        return False
    if event.get("type") == "snapshot":  # only to those who may open it
        open_alarm = lifecycle.get(alarm_id)
        return _visible(request, principal, open_alarm, Capability.ALARM_SNAPSHOT) and _snapshot_camera_ok(
            request, open_alarm
        )
    return _visible(request, principal, lifecycle.get(alarm_id), Capability.ALARM_READ)


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
    app.router.add_get("/api/alarms/{id}/deliveries", deliveries)
    app.router.add_post("/api/alarms/{id}/ack", acknowledge)
    app.router.add_post("/api/alarms/{id}/resolve", resolve)
    app.router.add_post("/api/alarms/{id}/verify", verify_alarm)
    app.router.add_post("/api/alarms/{id}/deliveries/{sink}/{event}/retry", retry_delivery)
    app.router.add_get("/api/alarm-deliveries", list_deliveries)
    app.router.add_get("/api/alarm-sinks", sinks)
    app.on_shutdown.append(_close_sockets)


__all__ = ["add_alarm_routes", "alarm_json", "delivery_json", "proof_json"]
