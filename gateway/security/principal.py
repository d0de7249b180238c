"""The authenticated caller of the HTTP API and console: a user (or API token) with one role.

A principal is what the server decided after checking a password, a session
cookie or a token: never a name typed into a form. ``district_code`` binds a
区级值班员 to one district, ``kindergarten_id`` binds a 园方 account to one site.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Principal", "Role"]


class Role(StrEnum):
    """The five roles of the permission table (README, "Users, roles and scope")."""

    CITY_ADMIN = "city_admin"  # 市级管理员: everything
    DISTRICT_DUTY = "district_duty"  # 区级值班员: their district's kindergartens
    POLICE = "police"  # 公安: police-shareable cameras and alarms only
    KINDERGARTEN = "kindergarten"  # 园方: their own kindergarten's alarm state and drills
    MAINTENANCE = "maintenance"  # 运维: devices and onboarding, no live view of indoor cameras

    @property
    def label_zh(self) -> str:
        """The role's name in the zh-CN console."""
        return _LABELS_ZH[self]


_LABELS_ZH = {
    Role.CITY_ADMIN: "市级管理员",
    Role.DISTRICT_DUTY: "区级值班员",
    Role.POLICE: "公安",
    Role.KINDERGARTEN: "园方",
    Role.MAINTENANCE: "运维",
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request was authenticated as.

    ``via`` says how (``"session"`` cookie or ``"token"``); ``source`` is the
    client address as the server trusts it (the socket peer, or a configured
    proxy's forwarded header).
    """

    username: str
    role: Role
    district_code: str | None = None
    kindergarten_id: str | None = None
    source: str = ""
    via: str = "session"
