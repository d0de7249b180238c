"""HTTP control endpoint of the device simulator: press alarm buttons from outside.

Tests and operators drive a running ``kgw simulate`` through it, e.g.::

    curl -X POST http://127.0.0.1:8090/press -d '{"kindergarten": 3, "kind": "button"}'
    curl -X POST http://127.0.0.1:8090/press -d '{"registered": true}'   # a random registered alarm box
    curl -X POST http://127.0.0.1:8090/press-all -d '{"kind": "button"}'
    curl http://127.0.0.1:8090/alarms
    curl http://127.0.0.1:8090/summary
    curl http://127.0.0.1:8090/devices/<device or channel id>/heard   # what a voice broadcast sounded like
    curl http://127.0.0.1:8090/faults        # the kindergartens that fail on purpose (simulators/faults.py)
    curl -X PUT http://127.0.0.1:8090/uppers/municipal -d '{"down": true}'   # the demo's upper-down switch

Bound to 127.0.0.1 only: it makes devices raise alarms, which nobody off the
host should be able to do.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from aiohttp import web

from gateway.gb28181.device_agent import AlarmRecord
from simulators.upper_down import UpperDown, add_upper_routes


class Pressable(Protocol):
    """What the control endpoint drives (the fleet)."""

    def press(self, kindergarten: str | int | None = None, kind: str = "button") -> AlarmRecord: ...
    def press_all(self, kind: str = "button") -> list[AlarmRecord]: ...
    def alarm_records(self) -> list[AlarmRecord]: ...
    def summary(self) -> dict[str, Any]: ...


__all__ = ["Pressable", "bound_port", "make_control_app", "record_json", "start_control"]

FLEET_KEY: web.AppKey[Pressable] = web.AppKey("fleet")


def make_control_app(fleet: Pressable) -> web.Application:
    """The aiohttp application: ``POST /press``, ``POST /press-all``, ``GET /alarms``, ``GET /summary``."""
    app = web.Application()
    app[FLEET_KEY] = fleet
    app.router.add_post("/press", _press)
    app.router.add_post("/press-all", _press_all)
    app.router.add_get("/alarms", _alarms)
    app.router.add_get("/summary", _summary)
    app.router.add_get("/devices/{id}/heard", _heard)
    app.router.add_post("/devices/{id}/hang-up", _hang_up)
    app.router.add_get("/faults", _faults)
    uppers: dict[str, UpperDown] = getattr(fleet, "uppers", {})
    add_upper_routes(app, uppers)
    return app


async def start_control(fleet: Pressable, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
    """Serve the control app on ``host:port`` (0: any free port, see :func:`bound_port`)."""
    runner = web.AppRunner(make_control_app(fleet), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The TCP port the control endpoint actually listens on."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError("the control endpoint is not listening")


def record_json(record: AlarmRecord) -> dict[str, Any]:
    """One alarm as the device saw it; times are the simulator's loop clock except ``pressed_at_wall``."""
    return {
        "device_id": record.device_id,
        "source_id": record.source_id,
        "sn": record.sn,
        "kind": record.kind,
        "pressed_at": record.pressed_at,
        "pressed_at_wall": record.wall.timestamp(),
        "alarm_time": record.alarm_time,
        "attempts": record.attempts,
        "messages": record.messages,
        "timeouts": record.timeouts,
        "status": record.status,
        "answered": record.answered,
        "answered_at": record.answered_at,
        "answer_delay": None if record.answered_at is None else record.answered_at - record.pressed_at,
        "response": record.response_at is not None,
        "response_at": record.response_at,
        "gave_up": record.gave_up,
    }


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _press(request: web.Request) -> web.Response:
    fleet = request.app[FLEET_KEY]
    raw = await request.read()
    try:
        payload = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError):
        return _error(400, "body is not JSON")
    if not isinstance(payload, dict):
        return _error(400, "body must be a JSON object")
    kindergarten = payload.get("kindergarten")
    if isinstance(kindergarten, bool) or not isinstance(kindergarten, str | int | None):
        return _error(400, "kindergarten must be an ID (string) or an index (integer)")
    kind = payload.get("kind", "button")
    if not isinstance(kind, str):
        return _error(400, "kind must be a string")
    registered = payload.get("registered", False)
    if not isinstance(registered, bool):
        return _error(400, "registered must be true or false")
    press_registered = getattr(fleet, "press_registered", None)
    if registered and press_registered is None:
        return _error(400, "this fleet cannot pick registered devices")
    try:
        record = (
            press_registered(kind) if press_registered is not None and registered else fleet.press(kindergarten, kind)
        )
    except LookupError as exc:
        return _error(404, str(exc.args[0]) if exc.args else "not found")
    except ValueError as exc:
        return _error(400, str(exc))
    return web.json_response(
        {
            "device_id": record.device_id,
            "source_id": record.source_id,
            "sn": record.sn,
            "kind": record.kind,
            "pressed_at_wall": record.wall.timestamp(),
            "alarm_time": record.alarm_time,
        }
    )


async def _press_all(request: web.Request) -> web.Response:
    """Every kindergarten presses at once (the alarm-storm benchmark): ``{"kind": "button"}``."""
    raw = await request.read()
    try:
        payload = json.loads(raw) if raw.strip() else {}
        kind = payload.get("kind", "button") if isinstance(payload, dict) else None
    except (ValueError, UnicodeDecodeError):
        return _error(400, "body is not JSON")
    if not isinstance(kind, str):
        return _error(400, "kind must be a string")
    try:
        records = request.app[FLEET_KEY].press_all(kind)
    except ValueError as exc:
        return _error(400, str(exc))
    items = [{"device_id": r.device_id, "sn": r.sn, "pressed_at_wall": r.wall.timestamp()} for r in records]
    return web.json_response({"pressed": len(records), "items": items})


async def _alarms(request: web.Request) -> web.Response:
    records = request.app[FLEET_KEY].alarm_records()
    return web.json_response({"total": len(records), "items": [record_json(r) for r in records]})


async def _heard(request: web.Request) -> web.Response:
    """What a device heard of its latest voice broadcast: duration, RMS level, dominant frequency."""
    heard = getattr(request.app[FLEET_KEY], "heard", None)
    report = heard(request.match_info["id"]) if heard is not None else None
    if report is None:
        return _error(404, "no such device")
    return web.json_response(report)


async def _hang_up(request: web.Request) -> web.Response:
    """The device ends its broadcast calls (BYE to the platform)."""
    end = getattr(request.app[FLEET_KEY], "end_broadcast", None)
    if end is None:
        return _error(404, "no broadcasts here")
    return web.json_response({"ended": end(request.match_info["id"])})


async def _faults(request: web.Request) -> web.Response:
    """The faulty kindergartens: ``{"items": [{"kindergarten_id", "index", "faults", ...}]}``."""
    faults = getattr(request.app[FLEET_KEY], "faults_json", None)
    return web.json_response({"items": faults() if faults is not None else []})


async def _summary(request: web.Request) -> web.Response:
    return web.json_response(request.app[FLEET_KEY].summary())
