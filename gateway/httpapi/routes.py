"""The registry's HTTP API: devices, channels, kindergartens, districts, history, queries, provisioning.

Lists are paginated (``offset``, ``limit`` ≤ 1000) and filterable by
``district`` (6-digit civil code) and ``kindergarten``; every item carries at
least ``id`` (the 20-digit code) and ``online``. Current state comes from the
in-memory directory, so a list agrees with ``/metrics`` the moment a device
registers; history (``/api/events``) comes from the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

from aiohttp import web

from gateway.audit.actions import AuditAction
from gateway.errors import StoreError
from gateway.gb28181.ids import TIANJIN_DISTRICTS, is_gb_id
from gateway.httpapi.common import json_error, json_response, paging, query_bool
from gateway.httpapi.identity import AUDIT, PRINCIPAL_KEY
from gateway.query_broker import QueryBroker
from gateway.registry import (
    AreaTag,
    Channel,
    ChannelFilter,
    Device,
    DeviceFilter,
    Kindergarten,
    Page,
    StatusEvent,
    Store,
)
from gateway.registry.directory import Directory
from gateway.registry.listing import district_counts, list_channels, list_devices, list_kindergartens
from gateway.registry.provisioning import AreaChoice, Provisioning
from gateway.registry.store_thread import StoreThread
from gateway.security.principal import Principal

__all__ = ["add_registry_routes"]

DIRECTORY = web.AppKey("kgw_directory", Directory)
STORE = web.AppKey("kgw_store", StoreThread)
QUERIES = web.AppKey("kgw_queries", QueryBroker)
PROVISIONING = web.AppKey("kgw_provisioning", Provisioning)

_Row = TypeVar("_Row")


def _page(page: Page[_Row], convert: Callable[[_Row], dict[str, Any]]) -> dict[str, Any]:
    return {"items": [convert(x) for x in page.items], "total": page.total, "offset": page.offset, "limit": page.limit}


def _device_json(device: Device) -> dict[str, Any]:
    data = asdict(device)
    data["district_name"] = TIANJIN_DISTRICTS.get(device.district_code, "")
    return data


def _channel_json(channel: Channel) -> dict[str, Any]:
    """A channel with its suggested area (from the name) and the operator-confirmed one apart."""
    data = asdict(channel)
    data["area"] = AreaTag(channel.effective_area).value
    data["area_suggested"] = AreaTag(channel.area).value
    data["confirmed_area"] = AreaTag(channel.confirmed_area).value if channel.confirmed_area is not None else None
    return data


def _area_of(value: object) -> AreaTag | None:
    """An area from JSON: one of the AreaTag values, or null (no confirmation)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("area must be a string or null")
    return AreaTag(value)


def _actor(request: web.Request) -> tuple[Principal | None, str]:
    """Who is asking (once authentication put a principal on the request) and the name to record."""
    principal = request.get(PRINCIPAL_KEY)
    if isinstance(principal, Principal):
        return principal, principal.username
    return None, "unauthenticated"


async def _confirm(request: web.Request, choices: Sequence[AreaChoice]) -> None:
    """Store and apply confirmations; each one is an audit record (who confirmed which camera as what)."""
    principal, by = _actor(request)
    try:
        await request.app[PROVISIONING].confirm_areas(choices, by, time.time())
    except StoreError as exc:
        raise json_error(web.HTTPServiceUnavailable, str(exc)) from exc
    audit = request.app.get(AUDIT)
    if audit is not None:
        for choice in choices:
            audit.record(
                AuditAction.AREA_CONFIRM,
                actor=principal,
                target=choice.channel_id,
                source=request.remote or "",
                detail={"area": choice.area.value if choice.area is not None else None},
            )


async def devices(request: web.Request) -> web.Response:
    """GET /api/devices?district=&kindergarten=&online=&type=&offset=&limit="""
    offset, limit = paging(request)
    type_text = request.query.get("type")
    flt = DeviceFilter(
        district_code=request.query.get("district") or None,
        kindergarten_id=request.query.get("kindergarten") or None,
        online=query_bool(request, "online"),
        device_type=int(type_text) if type_text and type_text.isdigit() else None,
        offset=offset,
        limit=limit,
    )
    return json_response(_page(list_devices(request.app[DIRECTORY], flt), _device_json))


async def device(request: web.Request) -> web.Response:
    """GET /api/devices/{id}"""
    device_id = request.match_info["id"]
    row = request.app[DIRECTORY].device(device_id)
    if row is None:
        raise json_error(web.HTTPNotFound, f"unknown device {device_id}")
    return json_response(_device_json(row))


async def channels(request: web.Request) -> web.Response:
    """GET /api/channels?district=&kindergarten=&device=&area=&online=&offset=&limit="""
    offset, limit = paging(request)
    area_text = request.query.get("area")
    try:
        area = AreaTag(area_text) if area_text else None
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, f"unknown area {area_text!r}") from exc
    flt = ChannelFilter(
        district_code=request.query.get("district") or None,
        kindergarten_id=request.query.get("kindergarten") or None,
        device_id=request.query.get("device") or None,
        online=query_bool(request, "online"),
        area=area,
        offset=offset,
        limit=limit,
    )
    return json_response(_page(list_channels(request.app[DIRECTORY], flt), _channel_json))


async def channel_area(request: web.Request) -> web.Response:
    """PUT /api/channels/{id}/area with {"area": "entrance" | ... | null}: confirm (or withdraw) its area.

    Only a confirmed entrance or perimeter camera is ever shared with police.
    """
    channel_id = request.match_info["id"]
    if not is_gb_id(channel_id):
        raise json_error(web.HTTPBadRequest, "channel id must be 20 digits")
    if request.content_type != "application/json":
        raise json_error(web.HTTPUnsupportedMediaType, "send application/json")
    try:
        body = await request.json()
        if not isinstance(body, dict) or "area" not in body:
            raise ValueError('expected {"area": ...}')
        area = _area_of(body["area"])
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, f"bad area: {exc}") from exc
    directory = request.app[DIRECTORY]
    if channel_id not in directory.channels and area is not None:
        raise json_error(web.HTTPNotFound, f"unknown channel {channel_id} (provision it with its kindergarten)")
    await _confirm(request, [AreaChoice(channel_id, area)])
    channel = directory.channels.get(channel_id)
    if channel is None:
        return json_response({"id": channel_id, "confirmed_area": None})
    return json_response(_channel_json(directory.view(channel)))


async def conflicts(request: web.Request) -> web.Response:
    """GET /api/conflicts?limit= : catalogs that listed another device's channel, newest first (not moved)."""
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, "limit must be an integer") from exc
    if not 1 <= limit <= 1000:
        raise json_error(web.HTTPBadRequest, "limit must be within 1..1000")
    directory = request.app[DIRECTORY]
    newest = list(directory.conflicts)[::-1][:limit]
    return json_response(
        {
            "items": [asdict(c) for c in newest],
            "total": directory.conflicts_total,
            "unknown_kindergartens": directory.unknown_kindergartens_total,
        }
    )


async def device_channels(request: web.Request) -> web.Response:
    """GET /api/devices/{id}/channels"""
    offset, limit = paging(request)
    flt = ChannelFilter(device_id=request.match_info["id"], offset=offset, limit=limit)
    return json_response(_page(list_channels(request.app[DIRECTORY], flt), _channel_json))


async def query_device(request: web.Request) -> web.Response:
    """POST /api/devices/{id}/query/{cmd}: DeviceInfo, DeviceStatus or Catalog."""
    device_id, cmd = request.match_info["id"], request.match_info["cmd"]
    if cmd not in ("DeviceInfo", "DeviceStatus", "Catalog"):
        raise json_error(web.HTTPBadRequest, "cmd must be DeviceInfo, DeviceStatus or Catalog")
    queries = request.app[QUERIES]
    if not queries.is_registered(device_id):
        raise json_error(web.HTTPNotFound, f"device {device_id} is not registered")
    result = await queries.ask(device_id, cmd)
    if result is None:
        raise json_error(web.HTTPGatewayTimeout, f"device {device_id} did not answer {cmd}")
    if isinstance(result, int):
        return json_response({"sn": result, "status": "requested"}, status=202)
    return json_response(asdict(result))


async def kindergartens(request: web.Request) -> web.Response:
    """GET /api/kindergartens?district=&offset=&limit="""
    offset, limit = paging(request)
    district = request.query.get("district") or None
    return json_response(_page(list_kindergartens(request.app[DIRECTORY], district, offset, limit), asdict))


async def add_kindergartens(request: web.Request) -> web.Response:
    """POST /api/kindergartens with a JSON list of {id, name, district_code, address, longitude, latitude}.

    An item may carry ``channels``: [{"id", "area", "name"?}, ...], the areas an
    installer confirmed for the kindergarten's cameras (null withdraws one).
    """
    try:
        raw = await request.json()
        items = raw if isinstance(raw, list) else [raw]
        rows = [Kindergarten(**_kindergarten_fields(item)) for item in items]
        choices = [choice for item in items for choice in _area_choices(item)]
    except (ValueError, TypeError, KeyError) as exc:
        raise json_error(web.HTTPBadRequest, f"bad kindergarten list: {exc}") from exc
    for kg in rows:
        if not is_gb_id(kg.id) or not kg.name:
            raise json_error(web.HTTPBadRequest, f"kindergarten id must be 20 digits and name non-empty: {kg.id!r}")
    try:
        count = await request.app[PROVISIONING].add_kindergartens(rows)
    except StoreError as exc:
        raise json_error(web.HTTPBadRequest, str(exc)) from exc
    if choices:
        await _confirm(request, choices)
    return json_response({"stored": count, "areas_confirmed": len(choices)}, status=201)


def _area_choices(item: dict[str, Any]) -> list[AreaChoice]:
    """The confirmed areas a provisioning item carries (``channels``), validated."""
    channels = item.get("channels") or []
    if not isinstance(channels, list):
        raise TypeError("channels must be a list")
    choices = []
    for channel in channels:
        if not isinstance(channel, dict) or not is_gb_id(str(channel.get("id", ""))):
            raise ValueError(f"each channel needs a 20-digit id: {channel!r:.80}")
        name = channel.get("name")
        if name is not None and not isinstance(name, str):
            raise TypeError("channel name must be a string")
        choices.append(AreaChoice(str(channel["id"]), _area_of(channel.get("area")), name))
    return choices


def _kindergarten_fields(item: object) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise TypeError("each kindergarten must be an object")
    allowed = {"id", "name", "district_code", "address", "longitude", "latitude"}
    fields = {k: v for k, v in item.items() if k in allowed}
    fields.setdefault("district_code", str(fields.get("id", ""))[:6])
    return fields


async def districts(request: web.Request) -> web.Response:
    """GET /api/districts: kindergartens, devices and channels online per district."""
    counts = district_counts(request.app[DIRECTORY])
    return json_response({"items": [dict(asdict(c), name=TIANJIN_DISTRICTS.get(c.district_code, "")) for c in counts]})


async def status_events(request: web.Request) -> web.Response:
    """GET /api/events?entity=&since=&limit= : online/offline history, newest first (from the store)."""
    entity = request.query.get("entity") or None
    try:
        since = float(request.query["since"]) if "since" in request.query else None
        limit = int(request.query.get("limit", "100"))
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, "since must be a number and limit an integer") from exc
    if not 1 <= limit <= 1000:
        raise json_error(web.HTTPBadRequest, "limit must be within 1..1000")

    def history(store: Store) -> list[StatusEvent]:
        return store.list_status_events(entity, since, limit)

    events = await request.app[STORE].call(history)
    return json_response({"items": [asdict(e) for e in events]})


def add_registry_routes(
    app: web.Application,
    directory: Directory,
    store: StoreThread,
    queries: QueryBroker,
    provisioning: Provisioning,
) -> None:
    """Register the registry endpoints."""
    app[DIRECTORY], app[STORE], app[QUERIES], app[PROVISIONING] = directory, store, queries, provisioning
    app.router.add_get("/api/devices", devices)
    app.router.add_get("/api/devices/{id}", device)
    app.router.add_get("/api/devices/{id}/channels", device_channels)
    app.router.add_post("/api/devices/{id}/query/{cmd}", query_device)
    app.router.add_get("/api/channels", channels)
    app.router.add_put("/api/channels/{id}/area", channel_area)
    app.router.add_get("/api/conflicts", conflicts)
    app.router.add_get("/api/kindergartens", kindergartens)
    app.router.add_post("/api/kindergartens", add_kindergartens)
    app.router.add_get("/api/districts", districts)
    app.router.add_get("/api/events", status_events)
