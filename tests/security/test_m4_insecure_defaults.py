"""M4: a node reachable from the network does not start with insecure defaults.

``kgw gateway --sip-host 0.0.0.0`` (and ``kgw platform``) refuse the default
device password and any password given only on the command line (``ps`` shows
it to every user), with a message that says what to do; with a password file
the gateway starts and enrolment is strict. ``docker-compose.yml`` has no
anonymous broker and publishes no unauthenticated console to the network.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import load_config
from gateway.errors import ConfigError
from tests.conftest import free_sip_port
from tests.processes import KGW, ROOT, Proc, free_tcp_port, until_json
from tests.security.sip_register import register_as

GATEWAY_ID = "12010000002090000001"
DEVICE_ID = "12010100001320000001"


def _kgw(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run kgw; a node that starts after all is stopped by the timeout (and the test fails)."""
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT) + ":" + str(ROOT / "platform")}
    return subprocess.run(
        [*KGW, *args], cwd=ROOT, capture_output=True, text=True, timeout=30, env={**base, **(env or {})}
    )


def _exposed(tmp: Path, command: str = "gateway") -> list[str]:
    level = ["--level", "police"] if command == "platform" else []
    return [
        command,
        *level,
        "--sip-host",
        "0.0.0.0",
        "--sip-port",
        str(free_sip_port()),
        "--http-host",
        "0.0.0.0",
        "--http-port",
        str(free_tcp_port()),
        "--db",
        str(tmp / f"{command}.db"),
    ]


async def test_default_password_on_all_interfaces_is_refused(tmp_path: Path) -> None:
    for command in ("gateway", "platform"):
        result = await asyncio.to_thread(_kgw, *_exposed(tmp_path, command))
        assert result.returncode == 2, result.stderr[-2000:]
        assert "refusing to start" in result.stderr and "default device password 12345678" in result.stderr
        assert "--device-password-file" in result.stderr and "Traceback" not in result.stderr


async def test_password_only_on_the_command_line_is_refused(tmp_path: Path) -> None:
    for command in ("gateway", "platform"):
        result = await asyncio.to_thread(_kgw, *_exposed(tmp_path, command), "--password", "Str0ng-but-visible")
        assert result.returncode == 2, result.stderr[-2000:]
        assert "refusing to start: --password on the command line" in result.stderr
        assert "--device-password-file" in result.stderr


async def test_webhook_secret_only_on_the_command_line_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "device.pw"
    secret.write_text("a-long-device-secret\n", encoding="utf-8")
    exposed = [*_exposed(tmp_path), "--device-password-file", str(secret), "--webhook-url", "http://127.0.0.1:9/x"]
    result = await asyncio.to_thread(_kgw, *exposed, "--webhook-secret", "hmac-key-in-ps")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "refusing to start: --webhook-secret on the command line" in result.stderr
    assert "--webhook-secret-file" in result.stderr


def test_webhook_secret_comes_from_a_file_or_the_environment(tmp_path: Path) -> None:
    key = tmp_path / "webhook.key"
    key.write_text("hmac-key-from-a-file\n", encoding="utf-8")
    hook = {"webhook_url": "http://127.0.0.1:9/x"}
    assert load_config(None, webhook_secret_file=str(key), environ={}, **hook).webhook_secret == "hmac-key-from-a-file"
    assert load_config(None, environ={"KGW_WEBHOOK_SECRET": "from-env"}, **hook).webhook_secret == "from-env"
    with pytest.raises(ConfigError, match="webhook_secret"):
        load_config(None, environ={}, **hook)


async def test_password_file_starts_strict_and_warns_about_plain_http(tmp_path: Path, procs: list[Any]) -> None:
    secret = tmp_path / "device.pw"
    secret.write_text("a-long-device-secret\n", encoding="utf-8")
    args = _exposed(tmp_path)
    sip_port, http_port = int(args[args.index("--sip-port") + 1]), int(args[args.index("--http-port") + 1])
    gateway = Proc("gateway", [*args, "--device-password-file", str(secret)], tmp_path)
    procs.append(gateway)
    health = await until_json(f"http://127.0.0.1:{http_port}/healthz", lambda b: True, gateway)
    assert health["gateway_id"] == GATEWAY_ID
    output = gateway.output()
    assert "enrolment strict" in output, output[-2000:]
    assert re.search(r"HTTP listens on 0\.0\.0\.0 without TLS", output), output[-2000:]
    # An unprovisioned device with the right device password is not enrolled (strict).
    assert await register_as(sip_port, GATEWAY_ID, DEVICE_ID, "a-long-device-secret") == 403
    assert await gateway.stop(signal.SIGTERM) == 0
    assert "a-long-device-secret" not in gateway.output()


async def test_environment_variable_is_a_password_source(tmp_path: Path) -> None:
    # KGW_DEVICE_PASSWORD is read; a bad --upper (no password for it) then shows config got that far.
    result = await asyncio.to_thread(
        _kgw,
        *_exposed(tmp_path),
        "--upper",
        "police=12010000002000000110@127.0.0.1:5070",
        env={"KGW_DEVICE_PASSWORD": "from-env-secret"},
    )
    assert result.returncode == 2 and "needs its own password" in result.stderr, result.stderr[-2000:]


def test_docker_compose_has_no_anonymous_broker_and_no_open_consoles() -> None:
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    compose = yaml.safe_load(text)
    services = compose["services"]
    assert "allow_anonymous true" not in text and "mosquitto-no-auth" not in text
    broker = services["mosquitto"]
    assert not any(str(p).split(":")[-1].startswith("1883") for p in broker.get("ports", [])), "1883 published"
    conf = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
    lines = [line.split("#")[0].strip() for line in conf.read_text(encoding="utf-8").splitlines()]
    assert "allow_anonymous false" in lines and any(line.startswith("password_file ") for line in lines)
    assert any(line.startswith("acl_file ") for line in lines)
    for name, service in services.items():
        command = [str(a) for a in service.get("command", [])]
        assert not any(a == "--password" or a.startswith("--password=") for a in command), f"{name}: password in argv"
        assert not any(re.match(r"--mqtt=mqtt://[^@/]*:[^@/]*@", a) for a in command), f"{name}: MQTT password"
        for port in service.get("ports", []):
            spec = str(port)
            sip_port = spec.split(":")[-1].split("/")[0]
            if spec.endswith(("/udp", "/tcp")) and command[:1] == ["gateway"] and f"--sip-port={sip_port}" in command:
                continue  # a gateway process's SIP port: devices must reach it
            assert spec.startswith("127.0.0.1:"), f"{name}: {spec} published to every interface"
