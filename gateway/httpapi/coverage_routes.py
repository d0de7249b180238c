"""The coverage dashboard's API (README "Coverage"): list, summary, one kindergarten, CSV/XLSX export, history.

Scope is the kindergarten list's (:attr:`Capability.KINDERGARTEN_READ`): a 市级管理员
sees the city, a 区级值班员 their district, 园方 their own kindergarten (and no
district history), 公安/运维 the city or the district their account names. A
kindergarten out of scope answers the 404 an unknown one gets; a district filter
outside the scope gives an empty list, never another district's rows.

``GET /api/coverage/kindergartens?district=&status=&reason=&q=&sort=&order=&offset=&limit=&all=``
``GET /api/coverage/summary`` · ``GET /api/coverage/kindergartens/{id}``
``GET /api/coverage/export.csv`` · ``GET /api/coverage/export.xlsx`` (the list's filters)
``GET /api/coverage/history?days=90``
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any, Final

from aiohttp import web

from gateway.coverage.export import coverage_json, district_name, summary_json, to_csv, to_xlsx
from gateway.coverage.model import (
    SORT_KEYS,
    CoverageStatus,
    KindergartenCoverage,
    Reason,
    select,
    summarise,
)
from gateway.coverage.service import HISTORY_DAYS, CoverageService
from gateway.httpapi.common import json_error, json_response, query_bool
from gateway.httpapi.guard import denied, requires
from gateway.httpapi.identity import principal_of
from gateway.security.scope import Capability, Narrowing, narrowing

__all__ = ["COVERAGE", "coverage_part"]

COVERAGE = web.AppKey("kgw_coverage", CoverageService)
MAX_PAGE: Final = 5000
_CAPABILITY: Final = Capability.KINDERGARTEN_READ


def _scope(request: web.Request) -> Narrowing | None:
    return narrowing(principal_of(request), _CAPABILITY)


def _in_scope(scope: Narrowing) -> Callable[[KindergartenCoverage], bool]:
    def keep(row: KindergartenCoverage) -> bool:
        f = row.facts
        return (scope.district_code is None or f.district_code == scope.district_code) and (
            scope.kindergarten_id is None or f.id == scope.kindergarten_id
        )

    return keep


def _visible(request: web.Request) -> list[KindergartenCoverage]:
    scope = _scope(request)
    if scope is None:
        return []
    return list(filter(_in_scope(scope), request.app[COVERAGE].evaluate().rows))


def _enum(request: web.Request, name: str, kind: type[CoverageStatus] | type[Reason]) -> Any:
    text = request.query.get(name)
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise json_error(web.HTTPBadRequest, f"unknown {name} {text[:40]!r}") from None


def _filtered(request: web.Request) -> list[KindergartenCoverage]:
    sort = request.query.get("sort", "status")
    if sort not in SORT_KEYS:
        raise json_error(web.HTTPBadRequest, f"sort must be one of {', '.join(SORT_KEYS)}")
    order = request.query.get("order", "asc")
    if order not in ("asc", "desc"):
        raise json_error(web.HTTPBadRequest, "order must be asc or desc")
    return select(
        _visible(request),
        district=request.query.get("district") or None,
        status=_enum(request, "status", CoverageStatus),
        reason=_enum(request, "reason", Reason),
        text=request.query.get("q", "").strip()[:100],
        sort=sort,
        descending=order == "desc",
    )


@requires(_CAPABILITY)
async def list_coverage(request: web.Request) -> web.Response:
    """The table: ``{"items", "total", "offset", "limit", "evaluated_at"}`` (``all=true``: every row)."""
    rows = _filtered(request)
    whole = query_bool(request, "all") is True
    try:
        offset = int(request.query.get("offset", "0"))
        limit = len(rows) if whole else int(request.query.get("limit", "100"))
    except ValueError:
        raise json_error(web.HTTPBadRequest, "offset and limit must be integers") from None
    if offset < 0 or not whole and not 1 <= limit <= MAX_PAGE:
        raise json_error(web.HTTPBadRequest, f"offset must be >= 0 and limit within 1..{MAX_PAGE}")
    page = rows[offset : offset + limit] if not whole else rows
    return json_response(
        {
            "items": [coverage_json(r) for r in page],
            "total": len(rows),
            "offset": 0 if whole else offset,
            "limit": len(rows) if whole else limit,
            "evaluated_at": request.app[COVERAGE].evaluate().at,
        }
    )


@requires(_CAPABILITY)
async def one_kindergarten(request: web.Request) -> web.Response:
    """One kindergarten's row (404 for an unknown one and for one out of the caller's scope)."""
    kindergarten_id = request.match_info["id"]
    rows = {r.facts.id: r for r in request.app[COVERAGE].evaluate().rows}
    row = rows.get(kindergarten_id)
    message = f"unknown kindergarten {kindergarten_id[:40]}"
    if row is None:
        raise json_error(web.HTTPNotFound, message)
    scope = _scope(request)
    if scope is None or not _in_scope(scope)(row):
        raise denied(request, principal_of(request), _CAPABILITY, kindergarten_id, message)
    return json_response(coverage_json(row))


@requires(_CAPABILITY)
async def coverage_summary(request: web.Request) -> web.Response:
    """Counts per district and for the city (of what the caller may see), the rules, the reason codes."""
    districts, city = summarise(_visible(request))
    service = request.app[COVERAGE]
    return json_response(
        {
            "city": summary_json(city),
            "districts": [summary_json(d) for d in districts],
            "evaluated_at": service.evaluate().at,
            "rules": asdict(service.rules),
            "statuses": [{"code": s.value, "label": s.label} for s in CoverageStatus],
            "reasons": [{"code": r.value, "label": r.label} for r in Reason],
        }
    )


def _filename(suffix: str) -> str:
    return f"coverage-{datetime.now().strftime('%Y%m%d-%H%M')}.{suffix}"


@requires(_CAPABILITY)
async def export_csv(request: web.Request) -> web.Response:
    """The filtered table as CSV (UTF-8 with BOM)."""
    body = to_csv(_filtered(request))
    return web.Response(
        body=body,
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{_filename("csv")}"'},
    )


@requires(_CAPABILITY)
async def export_xlsx(request: web.Request) -> web.Response:
    """The filtered table and the counts as an XLSX workbook."""
    rows = _filtered(request)
    districts, city = summarise(_visible(request))
    body = to_xlsx(rows, districts, city)
    return web.Response(
        body=body,
        content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers={"Content-Disposition": f'attachment; filename="{_filename("xlsx")}"'},
    )


@requires(_CAPABILITY)
async def coverage_history(request: web.Request) -> web.Response:
    """``{"days": [...], "districts": [{"district_code", "district_name", "points": [...]}], "city": [...]}``.

    Each point: ``{"day", "complete", "partial", "missing", "total", "rate"}``; a
    园方 account (one kindergarten) gets no district history.
    """
    try:
        days = int(request.query.get("days", str(HISTORY_DAYS)))
    except ValueError:
        raise json_error(web.HTTPBadRequest, "days must be an integer") from None
    if not 1 <= days <= HISTORY_DAYS:
        raise json_error(web.HTTPBadRequest, f"days must be within 1..{HISTORY_DAYS}")
    scope = _scope(request)
    rows = [] if scope is None or scope.kindergarten_id is not None else await request.app[COVERAGE].history(days)
    if scope is not None and scope.district_code is not None:
        rows = [r for r in rows if r.district_code == scope.district_code]
    wanted = request.query.get("district")
    if wanted:
        rows = [r for r in rows if r.district_code == wanted]
    per_district: dict[str, list[dict[str, Any]]] = {}
    city: dict[str, list[int]] = {}
    for r in rows:
        per_district.setdefault(r.district_code, []).append(
            {
                "day": r.day,
                "complete": r.complete,
                "partial": r.partial,
                "missing": r.missing,
                "total": r.total,
                "rate": round(r.rate, 4),
            }
        )
        c = city.setdefault(r.day, [0, 0, 0])
        c[0], c[1], c[2] = c[0] + r.complete, c[1] + r.partial, c[2] + r.missing
    return json_response(
        {
            "days": sorted(city),
            "districts": [
                {"district_code": code, "district_name": district_name(code), "points": points}
                for code, points in sorted(per_district.items())
            ],
            "city": [
                {
                    "day": day,
                    "complete": a,
                    "partial": b,
                    "missing": m,
                    "total": a + b + m,
                    "rate": round(a / (a + b + m), 4) if a + b + m else 0.0,
                }
                for day, (a, b, m) in sorted(city.items())
            ],
        }
    )


def coverage_part(service: CoverageService) -> Callable[[web.Application], None]:
    """The web part serving the dashboard's API."""

    def add(app: web.Application) -> None:
        app[COVERAGE] = service
        app.router.add_get("/api/coverage/kindergartens", list_coverage)
        app.router.add_get("/api/coverage/kindergartens/{id}", one_kindergarten)
        app.router.add_get("/api/coverage/summary", coverage_summary)
        app.router.add_get("/api/coverage/export.csv", export_csv)
        app.router.add_get("/api/coverage/export.xlsx", export_xlsx)
        app.router.add_get("/api/coverage/history", coverage_history)

    return add
