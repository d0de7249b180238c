"""docker-compose.yml describes the demo's system, and every kgw command in it is one kgw accepts.

Docker is not part of the test run (README); this checks what can be checked without it:
the YAML, the services, that each command parses with kgw's own argument parser and
builds a valid configuration (with the compose secrets as files), that the gateway's
uppers are the platforms' IDs, each with its own password, and the deployment's
security properties (issue 10, M4): an authenticated broker with ACLs, nothing
unauthenticated published to the network, no password on a command line.
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


def _secret_files(tmp: Path) -> dict[str, str]:
    """Every compose secret as a file under ``tmp`` (distinct contents); name -> content."""
    contents = {}
    for name, spec in _compose()["secrets"].items():
        assert spec["file"] == f"./secrets/{name}"
        contents[name] = f"{name}-secret"
        (tmp / name).write_text(contents[name] + "\n", encoding="utf-8")
    return contents


@pytest.mark.parametrize("name", sorted(_kgw_services()))
def test_each_command_is_valid_for_kgw(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("KGW_DEVICE_PASSWORD", "KGW_MQTT_PASSWORD"):
        monkeypatch.delenv(variable, raising=False)
    secrets = _secret_files(tmp_path)
    service = _compose()["services"][name]
    command = [a.replace("/run/secrets/", f"{tmp_path}/") for a in _kgw_services()[name]]
    used = {a.split("/run/secrets/", 1)[1] for a in _kgw_services()[name] if "/run/secrets/" in a}
    assert used <= set(service.get("secrets", [])), f"{name} reads secrets it is not given"
    args = build_parser().parse_args(command)
    if args.command == "gateway":
        config = gateway_config_from_args(args)
        assert config.mqtt == f"mqtt://kgw-gateway:{secrets['mqtt_gateway']}@mosquitto:1883"
        assert config.password == secrets["device_password"]
        uppers = {u.link.name: u for u in config.upper_platforms}
        assert len(uppers) == 18
        for upper in uppers.values():
            level, district = upper.policy.level.value, upper.policy.district_code
            assert upper.link.server_id == platform_id(level, district)
            assert upper.link.host == (f"district-{district}" if district else level)
            assert upper.link.password == secrets[f"upper_{upper.link.name}"]
        assert len({u.link.password for u in uppers.values()} | {config.password}) == 19, "all distinct"
    elif args.command == "platform":
        config = platform_config_from_args(args)
        assert config.id == platform_id(args.level, args.district)
        assert name == (f"district-{args.district}" if args.level == "district" else args.level)
        assert config.enrolment == "strict"
        [lower] = config.devices  # the gateway, with its own password for this platform
        assert lower.id == "12010000002090000001" and lower.password == secrets[f"upper_{name}"]
    else:
        assert args.command in ("simulate", "police-receiver")


def test_the_broker_is_authenticated_and_not_published() -> None:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    broker = _compose()["services"]["mosquitto"]
    assert "allow_anonymous true" not in text and "no-auth" not in text
    assert not broker.get("ports"), "Mosquitto is reached only inside the compose network"
    conf = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text(encoding="utf-8")
    settings = [line.split("#")[0].strip() for line in conf.splitlines()]
    assert "allow_anonymous false" in settings
    assert "password_file /mosquitto/data/passwd" in settings and "acl_file /mosquitto/config/acl" in settings
    acl = (ROOT / "deploy/mosquitto/acl").read_text(encoding="utf-8")
    assert "user kgw-gateway\ntopic write kgw/#" in acl and "user police\ntopic read kgw/#" in acl
    assert (ROOT / "scripts/compose-secrets.sh").exists()


def test_only_sip_is_published_to_the_network() -> None:
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            spec = str(port)
            if spec in ("5060:5060/udp", "5060:5060/tcp"):
                assert name == "gateway"
                continue
            assert spec.startswith("127.0.0.1:"), f"{name} publishes {spec} to every interface"


def test_no_password_on_a_command_line() -> None:
    for name, command in _kgw_services().items():
        assert not any(a.startswith("--password=") or a == "--password" for a in command), name
        assert not any(re.match(r"--mqtt=mqtt://[^@/]*:[^@/]*@", a) for a in command), name
