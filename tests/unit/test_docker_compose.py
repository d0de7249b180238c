"""docker-compose.yml describes the demo's system, and every kgw command in it is one kgw accepts.

Docker is not part of the test run (README); this checks what can be checked without it:
the YAML, the services, that each command parses with kgw's own argument parser and
builds a valid configuration, and that the gateway's uppers are the platforms' IDs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli import build_parser, gateway_config_from_args, platform_config_from_args
from gateway.gb28181.ids import TIANJIN_DISTRICTS
from gbplatform.ids import platform_id

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), text)  # compose's defaults
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def _kgw_services() -> dict[str, list[str]]:
    return {
        name: [str(a) for a in svc["command"]]
        for name, svc in _compose()["services"].items()
        if svc.get("image") == "kgw:latest"
    }


def test_every_role_is_a_service() -> None:
    services = _compose()["services"]
    expected = {"mosquitto", "gateway", "simulator", "police-receiver", "municipal", "police"}
    expected |= {f"district-{code}" for code in TIANJIN_DISTRICTS}
    assert set(services) == expected
    assert (ROOT / "Dockerfile").exists() and services["gateway"]["build"] == "."
    published = [p for svc in services.values() for p in svc.get("ports", [])]
    assert len(published) == len(set(published))


@pytest.mark.parametrize("name", sorted(_kgw_services()))
def test_each_command_is_valid_for_kgw(name: str) -> None:
    args = build_parser().parse_args(_kgw_services()[name])
    if args.command == "gateway":
        config = gateway_config_from_args(args)
        assert config.mqtt == "mqtt://mosquitto:1883"
        uppers = {u.link.name: u for u in config.upper_platforms}
        assert len(uppers) == 18
        for upper in uppers.values():
            level, district = upper.policy.level.value, upper.policy.district_code
            assert upper.link.server_id == platform_id(level, district)
            assert upper.link.host == (f"district-{district}" if district else level)
    elif args.command == "platform":
        config = platform_config_from_args(args)
        assert config.id == platform_id(args.level, args.district)
        assert name == (f"district-{args.district}" if args.level == "district" else args.level)
    else:
        assert args.command in ("simulate", "police-receiver")
