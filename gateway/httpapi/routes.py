"""The registry's HTTP API: devices, channels, kindergartens, districts, history, queries, provisioning.

Lists are paginated (``offset``, ``limit`` ≤ 1000) and filterable by
``district`` (6-digit civil code) and ``kindergarten``; every item carries at
least ``id`` (the 20-digit code) and ``online``. Current state comes from the
in-memory directory, so a list agrees with ``/metrics`` the moment a device
registers; history (``/api/events``) comes from the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

from aiohttp import web

from gateway.audit.actions import AuditAction
from gateway.errors import StoreError
from gateway.gb28181.ids import TIANJIN_DISTRICTS, is_gb_id
from gateway.httpapi.city import city_directory
from gateway.httpapi.common import json_error, json_response, paging, query_bool
from gateway.httpapi.guard import denied, record_denied, requires
from gateway.httpapi.identity import AUDIT, principal_of
from gateway.httpapi.uplink_routes import uplink_fields
from gateway.query_broker import QueryBroker
from gateway.registry import (
    MAX_PAGE_LIMIT,
    AreaTag,
    Channel,
    ChannelFilter,
    Device,
    DeviceFilter,
    DistrictCount,
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
from gateway.security.scope import (
    Capability,
    Narrowing,
    may_see_channel,
    may_see_device,
    may_see_district,
    may_see_kindergarten,
    narrowing,
)

__all__ = ["add_registry_routes"]

DIRECTORY = web.AppKey("kgw_directory", Directory)
STORE = web.AppKey("kgw_store", StoreThread)
QUERIES = web.AppKey("kgw_queries", QueryBroker)
PROVISIONING = web.AppKey("kgw_provisioning", Provisioning)

_Row = TypeVar("_Row")


def _page(page: Page[_Row], convert: Callable[[_Row], dict[str, Any]]) -> dict[str, Any]:
    return {"items": [convert(x) for x in page.items], "total": page.total, "offset": page.offset, "limit": page.limit}


def _empty(offset: int, limit: int) -> dict[str, Any]:
    return {"items": [], "total": 0, "offset": offset, "limit": limit}


def _scoped_filters(request: web.Request, scope: Narrowing | None) -> tuple[str | None, str | None] | None:
    """The district and kindergarten query parameters narrowed to the scope; None when nothing can match."""
    if scope is None:
        return None
    return scope.applied(request.query.get("district") or None, request.query.get("kindergarten") or None)


def _every_row(fetch: Callable[[int], Page[_Row]]) -> Iterator[_Row]:
    """Every row of a paged listing, page by page (from memory: the directory)."""
    offset = 0
    while True:
        page = fetch(offset)
        yield from page.items
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return


def _scoped_page(
    fetch: Callable[[int, int], Page[_Row]], keep: Callable[[_Row], bool], scope: Narrowing, offset: int, limit: int
) -> Page[_Row]:
    """One page of what the caller may see.

    ``fetch(offset, limit)`` already applies the scope's district/kindergarten
    filter; a police-shareable scope is no filter, so then every row is tested
    and the page cut from what is kept. ``keep`` is applied to every row anyway:
    a second guard should a filter ever disagree with the predicates.
    """
    if not scope.post_filter:
        page = fetch(offset, limit)
        return Page(tuple(row for row in page.items if keep(row)), page.total, page.offset, page.limit)
    rows = [row for row in _every_row(lambda at: fetch(at, MAX_PAGE_LIMIT)) if keep(row)]
    return Page(tuple(rows[offset : offset + limit]), len(rows), offset, limit)


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


async def _confirm(request: web.Request, choices: Sequence[AreaChoice]) -> None:
    """Store and apply confirmations; each one is an audit record (who confirmed which camera as what)."""
    principal = principal_of(request)
    try:
        await request.app[PROVISIONING].confirm_areas(choices, principal.username, time.time())
    except StoreError as exc:
        raise json_error(web.HTTPServiceUnavailable, str(exc)) from exc
    audit = request.app.get(AUDIT)
    if audit is not None:
        for choice in choices:
            audit.record(
                AuditAction.AREA_CONFIRM,
                actor=principal,
                target=choice.channel_id,
                source=principal.source or (request.remote or ""),
                detail={"area": choice.area.value if choice.area is not None else None},
            )


@requires(Capability.DEVICE_READ)
async def devices(request: web.Request) -> web.Response:
    """GET /api/devices?district=&kindergarten=&online=&type=&offset=&limit= (within the caller's scope)"""
    offset, limit = paging(request)
    principal = principal_of(request)
    scope = narrowing(principal, Capability.DEVICE_READ)
    filters = _scoped_filters(request, scope)
    online = query_bool(request, "online")
    if scope is None or filters is None:
        return json_response(_empty(offset, limit))
    type_text = request.query.get("type")
    directory = await city_directory(request, request.app[DIRECTORY])  # the whole city (gateway/city_view.py)

    def fetch(at: int, size: int) -> Page[Device]:
        flt = DeviceFilter(
            district_code=filters[0],
            kindergarten_id=filters[1],
            online=online,
            device_type=int(type_text) if type_text and type_text.isdigit() else None,
            offset=at,
            limit=size,
        )
        return list_devices(directory, flt)

    def keep(row: Device) -> bool:
        return may_see_device(principal, row)

    return json_response(_page(_scoped_page(fetch, keep, scope, offset, limit), _device_json))


def _visible_device(
    request: web.Request, principal: Principal, capability: Capability, directory: Directory | None = None
) -> Device:
    """The path's device when the caller may use ``capability`` on it; 404 as for an unknown one otherwise."""
    device_id = request.match_info["id"]
    row = (directory or request.app[DIRECTORY]).device(device_id)
    if row is None:
        raise json_error(web.HTTPNotFound, f"unknown device {device_id}")
    if not may_see_device(principal, row, capability):
        raise denied(request, principal, capability, device_id, f"unknown device {device_id}")
    return row


@requires(Capability.DEVICE_READ)
async def device(request: web.Request) -> web.Response:
    """GET /api/devices/{id}"""
    city = await city_directory(request, request.app[DIRECTORY])
    return json_response(_device_json(_visible_device(request, principal_of(request), Capability.DEVICE_READ, city)))


def _channel_page(
    request: web.Request, principal: Principal, device_id: str | None, directory: Directory
) -> dict[str, Any]:
    """The channels the caller may list, filtered by the query (and by device when given)."""
    offset, limit = paging(request)
    area_text = request.query.get("area")
    try:
        area = AreaTag(area_text) if area_text else None
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, f"unknown area {area_text!r}") from exc
    online = query_bool(request, "online")
    scope = narrowing(principal, Capability.CHANNEL_READ)
    filters = _scoped_filters(request, scope)
    if scope is None or filters is None:
        return _empty(offset, limit)

    def fetch(at: int, size: int) -> Page[Channel]:
        flt = ChannelFilter(
            district_code=filters[0],
            kindergarten_id=filters[1],
            device_id=device_id or request.query.get("device") or None,
            online=online,
            area=area,
            offset=at,
            limit=size,
        )
        return list_channels(directory, flt)

    def keep(channel: Channel) -> bool:
        return may_see_channel(principal, channel)

    return _page(_scoped_page(fetch, keep, scope, offset, limit), _channel_json)


@requires(Capability.AREA_CONFIRM)
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
    known = directory.channels.get(channel_id)
    principal = principal_of(request)
    if (
        not may_see_channel(principal, known, Capability.AREA_CONFIRM)
        if known is not None
        else narrowing(principal, Capability.AREA_CONFIRM) != Narrowing()  # unknown: only the city-wide
    ):
        raise denied(request, principal, Capability.AREA_CONFIRM, channel_id, f"unknown channel {channel_id}")
    await _confirm(request, [AreaChoice(channel_id, area)])
    channel = directory.channels.get(channel_id)
    if channel is None:
        return json_response({"id": channel_id, "confirmed_area": None})
    return json_response(_channel_json(directory.view(channel)))


@requires(Capability.PROVISION)
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


@requires(Capability.CHANNEL_READ)
async def channels(request: web.Request) -> web.Response:
    """GET /api/channels?district=&kindergarten=&device=&area=&online=&offset=&limit= (within the caller's scope)"""
    city = await city_directory(request, request.app[DIRECTORY])
    return json_response(_channel_page(request, principal_of(request), None, city))


@requires(Capability.DEVICE_READ)
async def device_channels(request: web.Request) -> web.Response:
    """GET /api/devices/{id}/channels: of a device the caller may see, the channels it may see."""
    principal = principal_of(request)
    city = await city_directory(request, request.app[DIRECTORY])
    row = _visible_device(request, principal, Capability.DEVICE_READ, city)
    return json_response(_channel_page(request, principal, row.id, city))


@requires(Capability.DEVICE_QUERY)
async def query_device(request: web.Request) -> web.Response:
    """POST /api/devices/{id}/query/{cmd}: DeviceInfo, DeviceStatus or Catalog."""
    device_id, cmd = request.match_info["id"], request.match_info["cmd"]
    if cmd not in ("DeviceInfo", "DeviceStatus", "Catalog"):
        raise json_error(web.HTTPBadRequest, "cmd must be DeviceInfo, DeviceStatus or Catalog")
    principal = principal_of(request)
    row = request.app[DIRECTORY].device(device_id)
    if row is not None and not may_see_device(principal, row, Capability.DEVICE_QUERY):
        raise denied(request, principal, Capability.DEVICE_QUERY, device_id, f"device {device_id} is not registered")
    queries = request.app[QUERIES]
    if row is None or not queries.is_registered(device_id):
        raise json_error(web.HTTPNotFound, f"device {device_id} is not registered")
    result = await queries.ask(device_id, cmd)
    if result is None:
        raise json_error(web.HTTPGatewayTimeout, f"device {device_id} did not answer {cmd}")
    if isinstance(result, int):
        return json_response({"sn": result, "status": "requested"}, status=202)
    return json_response(asdict(result))


@requires(Capability.KINDERGARTEN_READ)
async def kindergartens(request: web.Request) -> web.Response:
    """GET /api/kindergartens?district=&offset=&limit= (within the caller's scope)"""
    offset, limit = paging(request)
    principal = principal_of(request)
    scope = narrowing(principal, Capability.KINDERGARTEN_READ)
    filters = _scoped_filters(request, scope)
    if scope is None or filters is None:
        return json_response(_empty(offset, limit))
    directory = await city_directory(request, request.app[DIRECTORY])
    if scope.kindergarten_id is not None:  # one site: no district filter expresses it
        scope = Narrowing(scope.district_code, scope.kindergarten_id, post_filter=True)

    def fetch(at: int, size: int) -> Page[Kindergarten]:
        return list_kindergartens(directory, filters[0], at, size)

    def keep(kg: Kindergarten) -> bool:
        return may_see_kindergarten(principal, kg)

    def row(kg: Kindergarten) -> dict[str, Any]:
        return {**asdict(kg), **uplink_fields(request.app, kg.id)}  # the uplink in use (issue 11)

    return json_response(_page(_scoped_page(fetch, keep, scope, offset, limit), row))


@requires(Capability.PROVISION)
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
    principal = principal_of(request)
    known = request.app[DIRECTORY].kindergartens
    for kg in rows:
        old = known.get(kg.id)
        if not may_see_kindergarten(principal, kg, Capability.PROVISION) or (
            old is not None and not may_see_kindergarten(principal, old, Capability.PROVISION)
        ):
            record_denied(request, principal, Capability.PROVISION, kg.id)
            raise json_error(web.HTTPForbidden, f"kindergarten {kg.id} is outside your scope (超出权限范围)")
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


@requires(Capability.DISTRICT_READ)
async def districts(request: web.Request) -> web.Response:
    """GET /api/districts: kindergartens, devices and channels online per district (those in scope)."""
    principal = principal_of(request)
    directory = await city_directory(request, request.app[DIRECTORY])
    scope = narrowing(principal, Capability.DISTRICT_READ)
    figures = _shareable_counts(directory, principal) if scope and scope.post_filter else district_counts(directory)
    counts = [c for c in figures if may_see_district(principal, c.district_code)]
    return json_response({"items": [dict(asdict(c), name=TIANJIN_DISTRICTS.get(c.district_code, "")) for c in counts]})


def _shareable_counts(directory: Directory, principal: Principal) -> list[DistrictCount]:
    """District figures as police see them: kindergartens, no devices, and only the channels they may list."""
    figures: dict[str, list[int]] = {}
    for kindergarten in directory.kindergartens.values():
        figures.setdefault(kindergarten.district_code, [0, 0, 0, 0, 0])[0] += 1
    for channel in directory.channels.values():
        if may_see_channel(principal, channel):
            counts = figures.setdefault(channel.district_code, [0, 0, 0, 0, 0])
            counts[3] += 1
            counts[4] += directory.is_up(channel)
    return [DistrictCount(code, *counts) for code, counts in sorted(figures.items())]


def _entity_visible(directory: Directory, principal: Principal, entity_id: str) -> bool:
    """Whether a status event's device or channel is in the caller's scope (by its ID's district when gone)."""
    row = directory.device(entity_id)
    if row is not None:
        return may_see_device(principal, row)
    channel = directory.channels.get(entity_id)
    if channel is not None:
        return may_see_channel(principal, channel, Capability.DEVICE_READ)
    return may_see_district(principal, entity_id[:6], Capability.DEVICE_READ)


@requires(Capability.DEVICE_READ)
async def status_events(request: web.Request) -> web.Response:
    """GET /api/events?entity=&since=&limit= : online/offline history, newest first (from the store).

    A caller narrowed to a district gets that district's events among the
    newest 1,000 that match (the store filters by entity only).
    """
    principal = principal_of(request)
    directory = request.app[DIRECTORY]
    entity = request.query.get("entity") or None
    try:
        since = float(request.query["since"]) if "since" in request.query else None
        limit = int(request.query.get("limit", "100"))
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, "since must be a number and limit an integer") from exc
    if not 1 <= limit <= 1000:
        raise json_error(web.HTTPBadRequest, "limit must be within 1..1000")

    if entity is not None and not _entity_visible(directory, principal, entity):
        return json_response({"items": []})  # as for an entity without history: existence is not confirmed
    scope = narrowing(principal, Capability.DEVICE_READ)
    whole_city = scope is not None and scope == Narrowing()
    wanted = limit if whole_city or entity is not None else MAX_PAGE_LIMIT

    def history(store: Store) -> list[StatusEvent]:
        return store.list_status_events(entity, since, wanted)

    events = await request.app[STORE].call(history)
    visible = [e for e in events if _entity_visible(directory, principal, e.entity_id)][:limit]
    return json_response({"items": [asdict(e) for e in visible]})


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
