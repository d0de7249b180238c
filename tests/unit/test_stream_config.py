"""Uplink budgets and stream-number spellings from the TOML file and the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import build_parser, gateway_config_from_args
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.gb28181.stream_number import StreamStyle
from gateway.registry.directory import Directory
from gateway.stream_config import build_planner, build_uplink

KG = "120101000021600001"

TOML = f"""
[gateway]
uplink_budget_mbps = 12
main_stream_kbps = 3000
stream_number_style = "2022"

[uplink_budgets]
"{KG}" = 8.5

[stream_number_styles]
"Hikvision" = "stream"
"""


def test_the_file_sets_budgets_and_spellings_and_flags_override_them(tmp_path: Path) -> None:
    path = tmp_path / "kgw.toml"
    path.write_text(TOML, encoding="utf-8")

    config = load_config(path)
    uplink = build_uplink(config)
    assert (uplink.default_kbps, uplink.budget_of(KG), uplink.main_kbps, uplink.sub_kbps) == (12000, 8500, 3000, 768)
    planner = build_planner(config, Directory(), lambda device_id: None)
    assert planner.style_overrides == {"Hikvision": StreamStyle.STREAM}

    args = build_parser().parse_args(
        ["gateway", "--config", str(path), "--uplink-budget", "0", "--uplink-budget-for", f"{KG}=2",
         "--stream-number-style", "streamprofile"]
    )  # fmt: skip
    config = gateway_config_from_args(args)
    uplink = build_uplink(config)
    assert (uplink.default_kbps, uplink.budget_of(KG)) == (0, 2000)
    assert build_planner(config, Directory(), lambda d: None).default_style is StreamStyle.STREAMPROFILE


@pytest.mark.parametrize(
    "settings",
    [
        {"stream_number_style": "hd"},
        {"stream_number_styles": {"Dahua": "profile"}},
        {"uplink_budget_mbps": -1},
        {"uplink_budgets": {KG: "lots"}},
        {"sub_stream_kbps": 0},
    ],
)
def test_unusable_settings_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        load_config(None, **settings)


def test_defaults_are_twenty_megabits_and_the_2022_form() -> None:
    config = load_config(None)
    assert build_uplink(config).budget_of(KG) == 20_000
    assert build_planner(config, Directory(), lambda d: None).default_style is StreamStyle.STREAMNUMBER
