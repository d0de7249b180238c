"""What every route module shares: JSON answers, JSON errors, paging, boolean and time query parameters."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.timetext import parse_when

__all__ = ["json_error", "json_response", "paging", "query_bool", "query_time"]


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON answer (UTF-8, Chinese kept as is)."""
    return web.Response(text=json.dumps(data, ensure_ascii=False), status=status, content_type="application/json")


def json_error(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    """An HTTP error with a JSON body ``{"error": message}``, to raise."""
    return cls(text=json.dumps({"error": message}, ensure_ascii=False), content_type="application/json")


def paging(request: web.Request) -> tuple[int, int]:
    """``offset`` and ``limit`` (default 0 and 100; 400 unless ``offset >= 0`` and ``1 <= limit <= 1000``)."""
    try:
        offset = int(request.query.get("offset", "0"))
        limit = int(request.query.get("limit", "100"))
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, "offset and limit must be integers") from exc
    if offset < 0 or not 1 <= limit <= 1000:
        raise json_error(web.HTTPBadRequest, "offset must be >= 0 and limit within 1..1000")
    return offset, limit


def query_bool(request: web.Request, name: str) -> bool | None:
    """A true/false query parameter; None when absent; 400 for anything else."""
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise json_error(web.HTTPBadRequest, f"{name} must be true or false")


def query_time(request: web.Request, name: str) -> float | None:
    """A time parameter: epoch seconds or ISO 8601 (local time without a zone); None when absent, else 400."""
    value = request.query.get(name)
    if not value:
        return None
    try:
        return parse_when(value)
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, f"{name} must be epoch seconds or an ISO 8601 time") from exc


async def json_object(request: web.Request, expected: str = "a JSON object") -> dict[str, Any]:
    """The request body as a JSON object; 400 naming ``expected`` for anything else."""
    try:
        body = await request.json()
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, f"expected {expected}") from exc
    if not isinstance(body, dict):
        raise json_error(web.HTTPBadRequest, f"expected {expected}")
    return body
