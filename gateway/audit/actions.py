"""What the audit trail records, and the interface every recording place calls.

Routes record through :class:`AuditRecorder` (found on the aiohttp app under
``gateway.httpapi.identity.AUDIT``); the chained, durable implementation lives
beside this module. Recording never blocks the caller: the recorder queues.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Protocol

from gateway.security.principal import Principal

__all__ = ["AuditAction", "AuditRecorder"]


class AuditAction(StrEnum):
    """The kinds of audited actions (stable strings: they are stored and exported)."""

    LOGIN = "login"
    LOGIN_FAILED = "login_failed"
    LOGOUT = "logout"
    LIVE_VIEW = "live_view"  # a live stream opened (and, on close, how long it ran)
    WEBRTC_SESSION = "webrtc_session"
    SNAPSHOT = "snapshot"
    ALARM_SNAPSHOT = "alarm_snapshot"
    ALARM_ACK = "alarm_ack"
    ALARM_RESOLVE = "alarm_resolve"
    ALARM_VERIFY = "alarm_verify"
    DELIVERY_RETRY = "delivery_retry"
    DEVICE_QUERY = "device_query"
    PTZ_CONTROL = "ptz_control"  # a PTZ command (move, stop, zoom, preset) to a channel
    DEVICE_CONTROL = "device_control"  # TeleBoot, RecordCmd, GuardCmd, AlarmCmd, HomePosition, DragZoom, IFameCmd
    PROVISIONING = "provisioning"  # kindergartens, devices, passwords, confirmed areas
    AREA_CONFIRM = "area_confirm"
    USER_CHANGE = "user_change"  # user added, password changed, role changed
    TOKEN_CHANGE = "token_change"  # API token created or revoked
    CONFIG_CHANGE = "config_change"
    ACCESS_DENIED = "access_denied"  # an authenticated caller asked for something outside their scope
    DOWNLOAD = "download"  # a recording download started, its file fetched, or deleted
    UPPER_LIVE_VIEW = "upper_live_view"  # an upper platform (e.g. police) watched a camera through the cascade
    UPPER_PLAYBACK = "upper_playback"  # an upper platform played a camera's recording back through the cascade
    UPPER_DOWNLOAD = "upper_download"  # an upper platform downloaded a camera's recording through the cascade
    RECORD_SEARCH = "record_search"  # a camera's recordings listed (RecordInfo)
    PLAYBACK = "playback"  # a playback opened, controlled or closed
    BROADCAST = "broadcast"  # voice broadcast (喊话) to a device: start, end with its duration
    ACCEPTANCE = "acceptance"  # an acceptance run (验收) started, areas confirmed, finished, aborted, report read


class AuditRecorder(Protocol):
    """Appends one audit record; implementations queue and never raise into the caller."""

    def record(
        self,
        action: AuditAction,
        *,
        actor: Principal | None,
        target: str = "",
        source: str = "",
        outcome: str = "ok",
        detail: Mapping[str, object] | None = None,
        duration: float | None = None,
    ) -> None:
        """Record that ``actor`` did ``action`` on ``target`` (``duration`` in seconds for sessions)."""
