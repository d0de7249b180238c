"""H1 (part 3): the device password is no key to the police platform.

Before issue 10 the gateway's link to an upper platform used the device
password when none was configured, so anyone holding a device's password (one
city-wide password, default 12345678) could register at the police platform
*as the gateway*. Now each upper has its own password, the gateway refuses to
start with the device password on an upper link, and a platform (``kgw
platform``) takes its lower platforms only with their own provisioned
credentials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.cli import build_parser, gateway_config_from_args
from gateway.config import DEFAULT_GATEWAY_ID, ProvisionedDevice, load_config
from gateway.errors import ConfigError
from tests.conftest import wait_for
from tests.security.sip_register import register_as

POLICE_ID = "12010000002000000110"
DEVICE_PASSWORD = "city-device-pw-1"
POLICE_PASSWORD = "police-link-pw-2"


def test_an_upper_link_without_its_own_password_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KGW_UPPER_PASSWORD_POLICE", raising=False)
    args = build_parser().parse_args(
        ["gateway", "--password", DEVICE_PASSWORD, "--upper", f"police={POLICE_ID}@127.0.0.1:5070"]
    )
    with pytest.raises(ConfigError, match="police.*needs its own password"):
        gateway_config_from_args(args)


def test_an_upper_link_with_the_device_password_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "kgw.toml"
    config.write_text(
        f'[gateway]\npassword = "{DEVICE_PASSWORD}"\n\n[[upper_platforms]]\nlevel = "police"\n'
        f'server_id = "{POLICE_ID}"\nhost = "127.0.0.1"\nport = 5070\npassword = "{DEVICE_PASSWORD}"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="refusing to start: upper platform 'police' would use the device password"):
        load_config(config)


def test_the_upper_password_comes_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "police.pw"
    secret.write_text(POLICE_PASSWORD + "\n", encoding="utf-8")
    upper = f"police={POLICE_ID}@127.0.0.1:5070"
    args = build_parser().parse_args(["gateway", "--upper", upper, "--upper-password-file", f"police={secret}"])
    assert gateway_config_from_args(args).upper_platforms[0].link.password == POLICE_PASSWORD
    monkeypatch.setenv("KGW_UPPER_PASSWORD_POLICE", "from-the-environment")
    args = build_parser().parse_args(["gateway", "--upper", upper])
    assert gateway_config_from_args(args).upper_platforms[0].link.password == "from-the-environment"


async def test_the_device_password_cannot_register_at_the_police_as_the_gateway(
    gateway_factory: Any, platform_factory: Any
) -> None:
    # The police platform knows the gateway (its lower platform) with the gateway's own password.
    police = await platform_factory(
        id=POLICE_ID,
        role="police",
        password="police-device-pw-3",
        enrolment="strict",
        devices=(ProvisionedDevice(DEFAULT_GATEWAY_ID, POLICE_PASSWORD),),
    )
    args = build_parser().parse_args(
        ["gateway", "--password", DEVICE_PASSWORD, "--upper", f"police={POLICE_ID}@127.0.0.1:{police.sip_port}"]
    )
    with pytest.raises(ConfigError):  # what used to register upward with the device password
        gateway_config_from_args(args)
    # An attacker holding the city's device password, claiming to be the gateway: refused.
    assert await register_as(police.sip_port, POLICE_ID, DEFAULT_GATEWAY_ID, DEVICE_PASSWORD) == 403
    assert not police.queries.is_registered(DEFAULT_GATEWAY_ID)
    # The real gateway with its own police password: registered.
    assert await register_as(police.sip_port, POLICE_ID, DEFAULT_GATEWAY_ID, POLICE_PASSWORD) == 200
    assert await wait_for(lambda: police.queries.is_registered(DEFAULT_GATEWAY_ID), 30)
