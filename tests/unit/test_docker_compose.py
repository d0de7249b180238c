"""docker-compose.yml describes the demo's system, and every kgw command in it is one kgw accepts.

Docker is not part of the test run (README); this checks what can be checked without it:
the YAML, the services, that each command parses with kgw's own argument parser and
builds a valid configuration (with the compose secrets as files), that the gateways'
uppers are the platforms' IDs, each with its own password, and the deployment's
security properties (issue 10, M4): an authenticated broker with ACLs, nothing
unauthenticated published to the network, no password on a command line. Issue 12:
the gateway processes partition the 16 districts and point at each other (--peer),
every platform takes every gateway, all share the PostgreSQL service, and Prometheus
scrapes every gateway with the token whose hash the gateways accept.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from gateway.cli import build_parser, gateway_config_from_args, platform_config_from_args
from gateway.gb28181.ids import TIANJIN_DISTRICTS
from gbplatform.ids import platform_id

ROOT = Path(__file__).resolve().parents[2]
GATEWAYS = ("gateway-a", "gateway-b")
#: Flags of the cluster work (COMMON12.md contract): until kgw's parser knows them they are parsed here only.
CLUSTER_FLAGS = ("--node", "--districts", "--peer")


def _secret_value(name: str) -> str:
    """What :func:`_secret_files` writes for a secret (the file's content, without its newline)."""
    return f"{name}-secret"


#: ``${VAR:?message}`` values, as scripts/compose-secrets.sh writes them to .env.
ENV = {"KGW_METRICS_TOKEN_SHA256": hashlib.sha256(_secret_value("metrics_token").encode()).hexdigest()}


def _compose() -> dict[str, Any]:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), text)  # compose's defaults
    text = re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: ENV[m.group(1)], text)  # required: from .env
    assert "${" not in text
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def _kgw_services() -> dict[str, list[str]]:
    return {
        name: [str(a) for a in svc["command"]]
        for name, svc in _compose()["services"].items()
        if svc.get("image") == "kgw:latest"
    }


def _flags(command: list[str]) -> dict[str, list[str]]:
    """``--name=value`` items of a command line, by name (repeatable flags keep their order)."""
    out: dict[str, list[str]] = {}
    for item in command:
        name, sep, value = item.partition("=")
        if name.startswith("--") and sep:
            out.setdefault(name, []).append(value)
    return out


def _parse(command: list[str]) -> Any:
    """kgw's own parser; the cluster's flags are left to it only once it knows them."""
    args, unknown = build_parser().parse_known_args(command)
    assert all(u.split("=", 1)[0] in CLUSTER_FLAGS for u in unknown), unknown
    return args


def test_every_role_is_a_service() -> None:
    services = _compose()["services"]
    expected = {"mosquitto", "postgres", *GATEWAYS, "simulator", "police-receiver", "municipal", "police"}
    expected |= {f"district-{code}" for code in TIANJIN_DISTRICTS} | {"prometheus", "grafana"}
    assert set(services) == expected
    assert (ROOT / "Dockerfile").exists() and all(services[g]["build"] == "." for g in GATEWAYS)
    published = [p for svc in services.values() for p in svc.get("ports", [])]
    assert len(published) == len(set(published))


def _secret_files(tmp: Path) -> dict[str, str]:
    """Every compose secret as a file under ``tmp`` (distinct contents); name -> content."""
    contents = {}
    for name, spec in _compose()["secrets"].items():
        assert spec["file"] == f"./secrets/{name}"
        contents[name] = _secret_value(name)
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
    args = _parse(command)
    if args.command == "gateway":
        config = gateway_config_from_args(args)
        assert name in GATEWAYS
        assert config.mqtt == f"mqtt://kgw-gateway:{secrets['mqtt_gateway']}@mosquitto:1883"
        assert config.password == secrets["device_password"]
        assert config.db == f"postgresql://kgw:{quote(secrets['postgres_password'], safe='')}@postgres:5432/kgw"
        [token] = config.api_tokens  # Prometheus's, metrics only, by the hash of the metrics_token secret
        assert token.metrics_only and token.token_hash == hashlib.sha256(secrets["metrics_token"].encode()).hexdigest()
        uppers = {u.link.name: u for u in config.upper_platforms}
        assert len(uppers) == 18
        for upper in uppers.values():
            level, district = upper.policy.level.value, upper.policy.district_code
            assert upper.link.server_id == platform_id(level, district)
            assert upper.link.host == (f"district-{district}" if district else level)
            assert upper.link.password == secrets[f"{name}_upper_{upper.link.name}"]
        assert len({u.link.password for u in uppers.values()} | {config.password}) == 19, "all distinct"
    elif args.command == "platform":
        config = platform_config_from_args(args)
        assert config.id == platform_id(args.level, args.district)
        assert name == (f"district-{args.district}" if args.level == "district" else args.level)
        assert config.enrolment == "strict"
        # every gateway process, each with its own password for this platform
        lowers = {lower.id: lower.password for lower in config.devices}
        assert lowers == {_gateway_id(g): secrets[f"{g}_upper_{name}"] for g in GATEWAYS}
    else:
        assert args.command in ("simulate", "police-receiver")


def _gateway_id(service: str) -> str:
    [gateway_id] = _flags(_kgw_services()[service])["--id"]
    return gateway_id


def test_the_gateways_partition_the_city_and_point_at_each_other() -> None:
    services = _compose()["services"]
    commands = {g: _flags(_kgw_services()[g]) for g in GATEWAYS}
    served: dict[str, str] = {}
    for gateway, flags in commands.items():
        [node] = flags["--node"]
        assert node == gateway  # the node's name is its service's (Prometheus labels, alarm ownership)
        [districts] = flags["--districts"]
        for code in districts.split(","):
            assert code in TIANJIN_DISTRICTS and code not in served, f"{code} served twice"
            served[code] = gateway
    assert set(served) == set(TIANJIN_DISTRICTS), "every district is served by one gateway"
    assert len({_gateway_id(g) for g in GATEWAYS}) == len(GATEWAYS), "each process its own ID upward"
    for gateway, flags in commands.items():
        redirected: set[str] = set()
        for peer in flags["--peer"]:
            codes, _, target = peer.partition("=")
            address, _, peer_id = target.partition("/")
            host, _, port = address.rpartition(":")
            assert host in services and host != gateway, f"{gateway} --peer {peer}: no such other service"
            [peer_port] = commands[host]["--sip-port"]
            assert port == peer_port and peer_id == _gateway_id(host)
            assert all(served[code] == host for code in codes.split(",")), f"{peer}: not the districts {host} serves"
            redirected |= set(codes.split(","))
        assert redirected == {c for c, g in served.items() if g != gateway}, "every other district has a peer"
        [sip_port] = flags["--sip-port"]
        assert f"{sip_port}:{sip_port}/udp" in services[gateway]["ports"], "devices follow the 302 to this port"


def test_every_gateway_shares_the_postgres_service() -> None:
    services = _compose()["services"]
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:15") and not postgres.get("ports")
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"]), "data on a volume"
    env = postgres["environment"]
    assert env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password" and "POSTGRES_PASSWORD" not in env
    assert postgres["secrets"] == ["postgres_password"]
    for gateway in GATEWAYS:
        flags = _flags(_kgw_services()[gateway])
        assert flags["--db"] == [f"postgresql://{env['POSTGRES_USER']}@postgres:5432/{env['POSTGRES_DB']}"]
        assert flags["--db-password-file"] == ["/run/secrets/postgres_password"]
        assert services[gateway]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_prometheus_scrapes_every_gateway_and_grafana_is_provisioned() -> None:
    services = _compose()["services"]
    prometheus = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert prometheus["secrets"] == ["metrics_token"]
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text(encoding="utf-8"))
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "kgw-gateway"]
    assert job["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
    targets = {t: c["labels"]["node"] for c in job["static_configs"] for t in c["targets"]}
    expected = {}
    for gateway in GATEWAYS:
        flags = _flags(_kgw_services()[gateway])
        expected[f"{gateway}:{flags['--http-port'][0]}"] = flags["--node"][0]
    assert targets == expected, "every gateway scraped, labelled with its --node"
    assert config["rule_files"] == ["alerts.yml"] and (ROOT / "deploy/prometheus/alerts.yml").exists()
    grafana = services["grafana"]
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    env = grafana["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin" and grafana["secrets"] == [
        "grafana_admin"
    ]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_compose_secrets_script_creates_every_secret_and_the_token_hash(tmp_path: Path) -> None:
    if shutil.which("sha256sum") is None:
        pytest.fail("sha256sum (coreutils) is missing")
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts/compose-secrets.sh", tmp_path / "scripts/compose-secrets.sh")
    (tmp_path / ".env").write_text("OTHER=kept\nKGW_METRICS_TOKEN_SHA256=stale\n", encoding="utf-8")
    for _ in range(2):  # re-running keeps the secrets and rewrites the hash line once
        result = subprocess.run(
            ["sh", str(tmp_path / "scripts/compose-secrets.sh")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    created = {p.name for p in (tmp_path / "secrets").iterdir()}
    assert created == set(_compose()["secrets"])
    contents = {(tmp_path / "secrets" / n).read_text() for n in created}
    assert len(contents) == len(created), "every secret is its own random value"
    token = (tmp_path / "secrets/metrics_token").read_text().strip()
    env = (tmp_path / ".env").read_text(encoding="utf-8").splitlines()
    assert env == ["OTHER=kept", f"KGW_METRICS_TOKEN_SHA256={hashlib.sha256(token.encode()).hexdigest()}"]


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
            if re.fullmatch(r"(\d+):\1/(udp|tcp)", spec):  # SIP: devices must reach the gateways
                assert name in GATEWAYS and spec.split(":")[0] in _flags(_kgw_services()[name])["--sip-port"]
                continue
            assert spec.startswith("127.0.0.1:"), f"{name} publishes {spec} to every interface"


def test_no_password_on_a_command_line() -> None:
    for name, command in _kgw_services().items():
        assert not any(a.startswith("--password=") or a == "--password" for a in command), name
        assert not any(re.match(r"--mqtt=mqtt://[^@/]*:[^@/]*@", a) for a in command), name
