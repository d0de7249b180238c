"""Default SIP IDs of the monitoring platforms (type 200, SIP server / platform).

A district platform is ``<district civil code>00002000000001``; the municipal
platform ``12010000002000000001``; the police video platform
``12010000002000000110`` (Tianjin, 1201). Deployments set their own IDs with
``--id``; these defaults are what ``kgw platform`` and ``kgw demo`` use.
"""

from __future__ import annotations

from gateway.errors import ConfigError

__all__ = ["LEVELS", "platform_id"]

LEVELS = ("district", "municipal", "police")
MUNICIPAL_ID = "12010000002000000001"
POLICE_ID = "12010000002000000110"


def platform_id(level: str, district: str | None = None) -> str:
    """The default SIP ID of a platform of ``level`` (a district platform needs its civil code)."""
    if level == "district":
        if not district:
            raise ConfigError("a district platform needs its district code (e.g. 120101)")
        return f"{district}00002000000001"
    if level == "municipal":
        return MUNICIPAL_ID
    if level == "police":
        return POLICE_ID
    raise ConfigError(f"unknown platform level {level!r}: one of {', '.join(LEVELS)}")
