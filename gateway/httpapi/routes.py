"""The gateway's HTTP API (aiohttp), ``/healthz`` and ``/metrics``.

Lists are paginated (``offset``, ``limit`` ≤ 1000) and filterable by
``district`` (6-digit civil code) and ``kindergarten``; every item carries at
least ``id`` (the 20-digit code) and ``online``. Reads go to the store on its
worker thread; online state there lags memory by at most one flush interval.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.errors import StoreError
from gateway.httpapi.alarm_routes import add_alarm_routes
from gateway.httpapi.console_routes import add_console_routes
from gateway.httpapi.live_routes import add_live_routes
from gateway.gb28181.ids import TIANJIN_DISTRICTS, is_gb_id
from gateway.registry import AreaTag, ChannelFilter, DeviceFilter, Kindergarten

if TYPE_CHECKING:
    from gateway.app import GatewayService

SERVICE_KEY = web.AppKey("service", object)


def _service(request: web.Request) -> GatewayService:
    return request.app[SERVICE_KEY]  # type: ignore[return-value]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, ensure_ascii=False, default=_default), status=status, content_type="application/json"
    )


def _default(value: Any) -> Any:
    if isinstance(value, AreaTag):
        return value.value
    raise TypeError(type(value).__name__)


def _error(status: int, message: str) -> web.HTTPException:
    cls = {400: web.HTTPBadRequest, 404: web.HTTPNotFound, 504: web.HTTPGatewayTimeout}[status]
    return cls(text=json.dumps({"error": message}, ensure_ascii=False), content_type="application/json")


def _paging(request: web.Request) -> tuple[int, int]:
    try:
        offset = int(request.query.get("offset", "0"))
        limit = int(request.query.get("limit", "100"))
    except ValueError as exc:
        raise _error(400, "offset and limit must be integers") from exc
    if offset < 0 or not 1 <= limit <= 1000:
        raise _error(400, "offset must be >= 0 and limit within 1..1000")
    return offset, limit


def _bool(request: web.Request, name: str) -> bool | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise _error(400, f"{name} must be true or false")


def _page(page: Any, convert: Any) -> dict[str, Any]:
    return {"items": [convert(x) for x in page.items], "total": page.total, "offset": page.offset, "limit": page.limit}


def _device_json(device: Any) -> dict[str, Any]:
    data = asdict(device)
    data["district_name"] = TIANJIN_DISTRICTS.get(device.district_code, "")
    return data


async def healthz(request: web.Request) -> web.Response:
    """Liveness and a one-line summary."""
    service = _service(request)
    known, online, channels_online = service.online_counts()
    return _json(
        {
            "status": "ok",
            "gateway_id": service.config.id,
            "role": service.config.role,
            "sip_port": service.sip_port,
            "devices_known": known,
            "devices_online": online,
            "channels_online": channels_online,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    body = generate_latest(_service(request).metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def list_devices(request: web.Request) -> web.Response:
    """GET /api/devices?district=&kindergarten=&online=&type=&offset=&limit="""
    offset, limit = _paging(request)
    type_text = request.query.get("type")
    flt = DeviceFilter(
        district_code=request.query.get("district") or None,
        kindergarten_id=request.query.get("kindergarten") or None,
        online=_bool(request, "online"),
        device_type=int(type_text) if type_text and type_text.isdigit() else None,
        offset=offset,
        limit=limit,
    )
    page = await _service(request).store_call(lambda s, f: s.list_devices(f), flt)
    return _json(_page(page, _device_json))


async def get_device(request: web.Request) -> web.Response:
    """GET /api/devices/{id}"""
    device_id = request.match_info["id"]
    device = await _service(request).store_call(lambda s, i: s.get_device(i), device_id)
    if device is None:
        raise _error(404, f"unknown device {device_id}")
    return _json(_device_json(device))


async def list_channels(request: web.Request) -> web.Response:
    """GET /api/channels?district=&kindergarten=&device=&area=&online=&offset=&limit="""
    offset, limit = _paging(request)
    area_text = request.query.get("area")
    try:
        area = AreaTag(area_text) if area_text else None
    except ValueError as exc:
        raise _error(400, f"unknown area {area_text!r}") from exc
    flt = ChannelFilter(
        district_code=request.query.get("district") or None,
        kindergarten_id=request.query.get("kindergarten") or None,
        device_id=request.query.get("device") or None,
        online=_bool(request, "online"),
        area=area,
        offset=offset,
        limit=limit,
    )
    page = await _service(request).store_call(lambda s, f: s.list_channels(f), flt)
    return _json(_page(page, asdict))


async def device_channels(request: web.Request) -> web.Response:
    """GET /api/devices/{id}/channels"""
    offset, limit = _paging(request)
    flt = ChannelFilter(device_id=request.match_info["id"], offset=offset, limit=limit)
    page = await _service(request).store_call(lambda s, f: s.list_channels(f), flt)
    return _json(_page(page, asdict))


async def query_device(request: web.Request) -> web.Response:
    """POST /api/devices/{id}/query/{cmd}: DeviceInfo, DeviceStatus or Catalog."""
    device_id, cmd = request.match_info["id"], request.match_info["cmd"]
    if cmd not in ("DeviceInfo", "DeviceStatus", "Catalog"):
        raise _error(400, "cmd must be DeviceInfo, DeviceStatus or Catalog")
    service = _service(request)
    if service.access is None or device_id not in service.access.sessions:
        raise _error(404, f"device {device_id} is not registered")
    result = await service.query(device_id, cmd)
    if result is None:
        raise _error(504, f"device {device_id} did not answer {cmd}")
    if cmd == "Catalog":
        return _json({"sn": result, "status": "requested"}, status=202)
    return _json(asdict(result))


async def list_kindergartens(request: web.Request) -> web.Response:
    """GET /api/kindergartens?district=&offset=&limit="""
    offset, limit = _paging(request)
    district = request.query.get("district") or None
    page = await _service(request).store_call(lambda s, d, o, n: s.list_kindergartens(d, o, n), district, offset, limit)
    return _json(_page(page, asdict))


async def add_kindergartens(request: web.Request) -> web.Response:
    """POST /api/kindergartens with a JSON list of {id, name, district_code, address, longitude, latitude}."""
    try:
        raw = await request.json()
        items = raw if isinstance(raw, list) else [raw]
        kindergartens = [Kindergarten(**_kindergarten_fields(item)) for item in items]
    except (ValueError, TypeError, KeyError) as exc:
        raise _error(400, f"bad kindergarten list: {exc}") from exc
    for kg in kindergartens:
        if not is_gb_id(kg.id) or not kg.name:
            raise _error(400, f"kindergarten id must be 20 digits and name non-empty: {kg.id!r}")
    try:
        count = await _service(request).add_kindergartens(kindergartens)
    except StoreError as exc:
        raise _error(400, str(exc)) from exc
    return _json({"stored": count}, status=201)


def _kindergarten_fields(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise TypeError("each kindergarten must be an object")
    allowed = {"id", "name", "district_code", "address", "longitude", "latitude"}
    fields = {k: v for k, v in item.items() if k in allowed}
    fields.setdefault("district_code", str(fields.get("id", ""))[:6])
    return fields


async def districts(request: web.Request) -> web.Response:
    """GET /api/districts: kindergartens, devices and channels online per district."""
    counts = await _service(request).store_call(lambda s: s.district_counts())
    return _json({"items": [dict(asdict(c), name=TIANJIN_DISTRICTS.get(c.district_code, "")) for c in counts]})


async def status_events(request: web.Request) -> web.Response:
    """GET /api/events?entity=&since=&limit= : online/offline history, newest first."""
    entity = request.query.get("entity") or None
    try:
        since = float(request.query["since"]) if "since" in request.query else None
        limit = int(request.query.get("limit", "100"))
    except ValueError as exc:
        raise _error(400, "since must be a number and limit an integer") from exc
    if not 1 <= limit <= 1000:
        raise _error(400, "limit must be within 1..1000")
    events = await _service(request).store_call(lambda s, e, t, n: s.list_status_events(e, t, n), entity, since, limit)
    return _json({"items": [asdict(e) for e in events]})


async def upper_platforms(request: web.Request) -> web.Response:
    """GET /api/upper-platforms: each upper platform link (state, policy, failures, subscriptions)."""
    cascade = _service(request).cascade
    return _json({"items": cascade.status() if cascade is not None else []})


def make_app(service: GatewayService) -> web.Application:
    """The aiohttp application of one gateway."""
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[SERVICE_KEY] = service
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/devices", list_devices)
    app.router.add_get("/api/devices/{id}", get_device)
    app.router.add_get("/api/devices/{id}/channels", device_channels)
    app.router.add_post("/api/devices/{id}/query/{cmd}", query_device)
    app.router.add_get("/api/channels", list_channels)
    app.router.add_get("/api/kindergartens", list_kindergartens)
    app.router.add_post("/api/kindergartens", add_kindergartens)
    app.router.add_get("/api/districts", districts)
    app.router.add_get("/api/events", status_events)
    app.router.add_get("/api/upper-platforms", upper_platforms)
    add_live_routes(app, service)
    add_alarm_routes(app, service)
    add_console_routes(app)
    return app
