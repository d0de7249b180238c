"""The alarm payload, schema 1: the JSON every sink carries (README: "Alarm payload").

``drill`` is true for an acceptance drill (nobody is to be dispatched; MQTT
carries drills on ``kgw/drills/...`` only). Receivers deduplicate on ``alarm_id`` (and ``event``: an alarm can be
followed by one ``escalated`` message). ``received_at`` is the gateway's
receipt time in RFC 3339 with milliseconds, UTC. The enrichment
(kindergarten, device, location, links) comes from memory only, so building
a payload never waits on I/O; the snapshot is a link the gateway fills in
right after the alarm arrives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from gateway.alarms.model import Alarm, DeliveryEvent

__all__ = ["SCHEMA_VERSION", "Enrichment", "KindergartenInfo", "build_payload", "encode_payload", "rfc3339_ms"]

SCHEMA_VERSION: Final = 1
PRIORITY_NAMES: Final = {1: "一级警情", 2: "二级警情", 3: "三级警情", 4: "四级警情"}


def rfc3339_ms(t: float) -> str:
    """``2026-11-29T03:34:19.123Z``: UTC with milliseconds."""
    dt = datetime.fromtimestamp(round(t, 3), UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class KindergartenInfo:
    """What the payload says about the site."""

    id: str
    name: str
    district_code: str
    district_name: str
    address: str = ""
    longitude: float | None = None
    latitude: float | None = None


@dataclass(frozen=True, slots=True)
class Enrichment:
    """Everything around the alarm that the gateway knows from memory."""

    gateway_id: str
    kindergarten: KindergartenInfo | None = None
    device_name: str = ""
    source_name: str = ""
    source_area: str = ""
    live_channel_id: str | None = None  # the kindergarten's entrance camera
    live_url: str | None = None
    snapshot_url: str | None = None
    alarm_url: str | None = None  # the alarm in the gateway's API


def build_payload(
    alarm: Alarm, event: DeliveryEvent, info: Enrichment, *, escalated_at: float | None = None
) -> dict[str, Any]:
    """The schema-1 object for one alarm event."""
    kind = alarm.kind
    kg = info.kindergarten
    longitude = alarm.longitude if alarm.longitude is not None else (kg.longitude if kg else None)
    latitude = alarm.latitude if alarm.latitude is not None else (kg.latitude if kg else None)
    payload: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "event": event.value,
        "alarm_id": alarm.id,
        "received_at": rfc3339_ms(alarm.received_at),
        "device_time": alarm.alarm_time,
        "priority": alarm.priority,
        "priority_name": PRIORITY_NAMES.get(alarm.priority or 0, "未知级别"),
        "method": alarm.method,
        "type": alarm.alarm_type,
        "event_type": alarm.event_type,
        "category": kind.category,
        "kind": kind.name,
        "kind_name": kind.name_zh,
        "description": alarm.description,
        "kindergarten": {
            "id": kg.id,
            "name": kg.name,
            "district_code": kg.district_code,
            "district_name": kg.district_name,
            "address": kg.address,
            "longitude": kg.longitude,
            "latitude": kg.latitude,
        }
        if kg
        else {"id": alarm.kindergarten_id, "district_code": alarm.district_code},
        "device": {
            "id": alarm.device_id,
            "name": info.device_name,
            "source_id": alarm.source_id,
            "sn": alarm.sn,
            "source_name": info.source_name,
            "source_area": info.source_area,
        },
        "location": {"longitude": longitude, "latitude": latitude},
        "live": {"channel_id": info.live_channel_id, "url": info.live_url} if info.live_channel_id else None,
        "snapshot_url": info.snapshot_url,
        "alarm_url": info.alarm_url,
        "gateway_id": info.gateway_id,
        "problems": list(alarm.problems),
        "drill": alarm.drill,  # a drill (验收演练): nobody is to be dispatched (MQTT topic kgw/drills/...)
    }
    if event is DeliveryEvent.ESCALATED:
        payload["escalation"] = {
            "level": "municipal",
            "escalated_at": rfc3339_ms(escalated_at if escalated_at is not None else alarm.escalated_at or 0.0),
        }
    return payload


def encode_payload(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (Chinese kept as is, not \\u-escaped)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
