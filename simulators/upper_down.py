"""The ``upper-down`` fault: an upper platform that refuses its lower platforms' alarms, switchable at run time.

A district, municipal or police platform whose alarm intake is down still answers
REGISTER and keepalives (its SIP front end is up) but answers every ``Notify/Alarm``
MESSAGE ``503 Service Unavailable``: the gateway's GB delivery to it fails, stays
pending with the error, and is retried until the platform takes alarms again. (A
platform that answers nothing at all is a stopped process: ``kill -STOP`` its
``kgw platform``.)

:class:`UpperDown` is a handler put first on a running node's SIP router, so the
platform itself is unchanged. It is switched through a small HTTP control endpoint
on 127.0.0.1 (``kgw platform --fault upper-down --fault-control-port PORT``, or the
demo's simulator control endpoint)::

    curl http://127.0.0.1:PORT/uppers
    curl -X PUT http://127.0.0.1:PORT/uppers/municipal -d '{"down": false}'
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from aiohttp import web

from gateway.app import GatewayService
from gateway.errors import ManscdpError
from gateway.gb28181.manscdp import AlarmNotify, decode_message
from gateway.gb28181.sip.endpoint import RequestReceived, SipEndpoint, SipEvent
from gateway.gb28181.sip.message import make_response

__all__ = ["DOWN_STATUS", "FaultyPlatform", "UpperDown", "add_upper_routes", "install"]

log = logging.getLogger("kgw.simulate.faults")

DOWN_STATUS = 503  # Service Unavailable: transient, so the gateway keeps the delivery and retries
PLATFORM_NAME = "platform"  # the one upper of a `kgw platform --fault` process, in its control endpoint


class UpperDown:
    """A SIP handler (first on the platform's router): while :attr:`down`, alarm MESSAGEs get 503."""

    def __init__(self, endpoint: SipEndpoint, *, down: bool = False) -> None:
        self.endpoint = endpoint
        self.down = down
        self.refused = 0  # alarm MESSAGEs answered 503 so far

    def route(self, event: SipEvent, now: float) -> bool:
        """Take (and refuse) an alarm MESSAGE while down; leave everything else to the platform."""
        if not self.down or not isinstance(event, RequestReceived) or event.transaction is None:
            return False
        if event.request.method != "MESSAGE" or b"Alarm" not in event.request.body:
            return False
        try:
            message, _ = decode_message(event.request.body)
        except ManscdpError:
            return False  # the platform answers a broken body as it always does
        if not isinstance(message, AlarmNotify):
            return False
        response = make_response(event.request, DOWN_STATUS, to_tag=self.endpoint.new_tag())
        self.endpoint.send_response(event.transaction, response, now)
        self.refused += 1
        return True

    def get_timer(self) -> float | None:
        """No timers of its own."""
        return None

    def handle_timer(self, now: float) -> None:
        """No timers of its own."""

    def as_json(self) -> dict[str, object]:
        """What the control endpoint shows."""
        return {"down": self.down, "refused": self.refused}


def install(service: GatewayService, *, down: bool = False) -> UpperDown:
    """Put an :class:`UpperDown` first on a started node's SIP router."""
    router = service.sip.router
    if router is None:
        raise RuntimeError("the node is not started: its SIP router does not exist yet")
    switch = UpperDown(service.sip.endpoint, down=down)
    router.handlers = (switch, *router.handlers)
    return switch


UPPERS_KEY: web.AppKey[Mapping[str, UpperDown]] = web.AppKey("uppers")


def add_upper_routes(app: web.Application, uppers: Mapping[str, UpperDown]) -> None:
    """``GET /uppers`` and ``PUT /uppers/{name}`` ``{"down": true|false}`` on a loopback control app."""
    app[UPPERS_KEY] = uppers
    app.router.add_get("/uppers", _list)
    app.router.add_put("/uppers/{name}", _switch)


async def _list(request: web.Request) -> web.Response:
    uppers = request.app[UPPERS_KEY]
    return web.json_response({name: switch.as_json() for name, switch in sorted(uppers.items())})


async def _switch(request: web.Request) -> web.Response:
    switch = request.app[UPPERS_KEY].get(request.match_info["name"])
    if switch is None:
        return web.json_response({"error": "no such upper platform"}, status=404)
    try:
        payload = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return web.json_response({"error": "body is not JSON"}, status=400)
    down = payload.get("down") if isinstance(payload, dict) else None
    if not isinstance(down, bool):
        return web.json_response({"error": 'body must be {"down": true} or {"down": false}'}, status=400)
    switch.down = down
    log.warning("upper platform %s is %s", request.match_info["name"], "DOWN (alarms refused)" if down else "up")
    return web.json_response(switch.as_json())


class FaultyPlatform:
    """``kgw platform --fault upper-down``: the platform, its switch, and the switch's control endpoint."""

    def __init__(self, service: GatewayService, *, down: bool, control_port: int | None) -> None:
        self.service = service
        self.initially_down = down
        self.control_port = control_port
        self.switch: UpperDown | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Start the platform, install the switch, open the control endpoint (if a port is given)."""
        await self.service.start()
        self.switch = install(self.service, down=self.initially_down)
        if self.control_port is None:
            log.warning("upper-down: alarms are refused for good (no --fault-control-port to switch)")
            return
        app = web.Application()
        add_upper_routes(app, {PLATFORM_NAME: self.switch})
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.control_port).start()
        port = next(a[1] for a in self._runner.addresses if isinstance(a, tuple))
        log.warning(
            'upper-down fault switch: PUT http://127.0.0.1:%d/uppers/%s {"down": false|true} (now %s)',
            port,
            PLATFORM_NAME,
            "down" if self.switch.down else "up",
        )

    async def stop(self) -> None:
        """Close the control endpoint, then stop the platform."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.service.stop()
