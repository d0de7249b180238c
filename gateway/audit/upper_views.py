"""Audit records of live views by upper platforms through the cascade (the police among them, marked).

The cascade's relay says when an upper's live call was answered and when it
ended (:attr:`gateway.cascade.relay.UpperRelay.on_view`); this turns that into
``upper_live_view`` records (``upper_playback`` / ``upper_download`` for an upper's
look back at a recording, with the recording's window) whose actor is the upper
platform: its 20-digit ID, a role from its level (police → 公安, municipal →
市级管理员, district → 区级值班员 of its district), via ``upper_platform``, its
configured address, and ``"police": true`` in the detail for the police platform.
The detail's ``session`` says live, playback or download; the end record carries the
duration and how it ended.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.audit.actions import AuditAction, AuditRecorder
from gateway.cascade.policy import PolicyLevel
from gateway.cascade.relay import ViewHook
from gateway.cascade.upper_config import UpperSpec
from gateway.security.principal import Principal, Role

__all__ = ["upper_view_recorder"]

_ROLES = {
    PolicyLevel.POLICE: Role.POLICE,
    PolicyLevel.MUNICIPAL: Role.CITY_ADMIN,
    PolicyLevel.DISTRICT: Role.DISTRICT_DUTY,
}


_ACTIONS = {
    "live": AuditAction.UPPER_LIVE_VIEW,
    "playback": AuditAction.UPPER_PLAYBACK,
    "download": AuditAction.UPPER_DOWNLOAD,
}


def upper_view_recorder(recorder: AuditRecorder, specs: Sequence[UpperSpec]) -> ViewHook:
    """The relay's ``on_view`` hook for these uppers, recording into ``recorder``."""
    uppers: dict[str, tuple[Principal, str]] = {}
    for spec in specs:
        link, level = spec.link, PolicyLevel(spec.policy.level)
        principal = Principal(
            username=link.server_id,
            role=_ROLES[level],
            district_code=spec.policy.district_code,
            source=f"{link.host}:{link.port}",
            via="upper_platform",
        )
        uppers[link.name] = (principal, level.value)

    def on_view(
        upper: str,
        channel_id: str,
        duration: float | None,
        outcome: str,
        *,
        session: str = "live",
        window: tuple[int, int] | None = None,
    ) -> None:
        principal, level = uppers.get(upper, (None, ""))
        detail: dict[str, object] = {"upper": upper, "level": level, "op": "start" if duration is None else "end"}
        detail["session"] = session
        if window is not None:
            detail["start"], detail["end"] = window
        if level == PolicyLevel.POLICE.value:
            detail["police"] = True
        recorder.record(
            _ACTIONS.get(session, AuditAction.UPPER_LIVE_VIEW),
            actor=principal,
            target=channel_id,
            outcome=outcome,
            detail=detail,
            duration=duration,
        )

    return on_view
