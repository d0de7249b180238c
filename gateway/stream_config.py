"""Settings of sub-streams and uplink budgets (issue 11): flags, TOML tables, checks, and the built objects.

TOML::

    [gateway]
    uplink_budget_mbps = 20        # per kindergarten (0: no limit)
    main_stream_kbps = 4000        # estimate of a main stream until measured
    sub_stream_kbps = 768          # estimate of a sub-stream
    uplink_measure_after = 10      # s before a stream's measured rate replaces its estimate (0: estimates only)
    stream_number_style = "streamnumber"   # default spelling: streamnumber (2022), stream, streamprofile, streamMode

    [uplink_budgets]               # per-kindergarten overrides, Mbit/s
    "120101000021600001" = 8

    [stream_number_styles]         # per device ID or manufacturer (substring of DeviceInfo's)
    "Hikvision" = "stream"
    "12010100001320000001" = "streamprofile"

Flags: ``--uplink-budget MBPS``, ``--uplink-budget-for KG=MBPS``, ``--stream-number-style
STYLE``, ``--stream-number-style-for DEVICE_OR_MAKER=STYLE`` (repeatable ones replace the file's table).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from gateway.errors import ConfigError
from gateway.gb28181.stream_number import StreamStyle, parse_style
from gateway.substreams import StreamPlanner
from gateway.uplink import UplinkBudget

if TYPE_CHECKING:
    from gateway.registry.directory import Directory

__all__ = [
    "StreamSettings",
    "add_stream_args",
    "build_planner",
    "build_uplink",
    "check_stream_settings",
    "normalise_tables",
    "stream_settings",
]

TABLES = ("uplink_budgets", "stream_number_styles")


class StreamSettings(Protocol):
    """The configuration's fields read here (GatewayConfig has them)."""

    @property
    def uplink_budget_mbps(self) -> float: ...
    @property
    def uplink_budgets(self) -> tuple[tuple[str, float], ...]: ...
    @property
    def main_stream_kbps(self) -> int: ...
    @property
    def sub_stream_kbps(self) -> int: ...
    @property
    def uplink_measure_after(self) -> float: ...
    @property
    def stream_number_style(self) -> str: ...
    @property
    def stream_number_styles(self) -> tuple[tuple[str, str], ...]: ...


def normalise_tables(values: dict[str, Any]) -> None:
    """TOML tables (dicts) and flag lists become the config's tuples of pairs."""
    for name in TABLES:
        raw = values.get(name)
        if isinstance(raw, Mapping):
            values[name] = tuple((str(k), v) for k, v in raw.items())
        elif isinstance(raw, list | tuple):
            values[name] = tuple((str(k), v) for k, v in raw)
    if "uplink_budgets" in values:
        try:
            values["uplink_budgets"] = tuple((k, float(v)) for k, v in values["uplink_budgets"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"uplink_budgets wants Mbit/s numbers: {exc}") from exc
    if "stream_number_styles" in values:
        values["stream_number_styles"] = tuple((k, str(v)) for k, v in values["stream_number_styles"])


def check_stream_settings(config: StreamSettings) -> None:
    """ConfigError for values that cannot work."""
    if config.uplink_budget_mbps < 0 or any(mbps < 0 for _, mbps in config.uplink_budgets):
        raise ConfigError("uplink budgets must be >= 0 Mbit/s (0: no limit)")
    if config.main_stream_kbps <= 0 or config.sub_stream_kbps <= 0 or config.uplink_measure_after < 0:
        raise ConfigError("main_stream_kbps and sub_stream_kbps must be > 0, uplink_measure_after >= 0")
    try:
        parse_style(config.stream_number_style)
        for _, style in config.stream_number_styles:
            parse_style(style)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def build_uplink(config: StreamSettings) -> UplinkBudget:
    """The budgets in kbit/s."""
    return UplinkBudget(
        round(config.uplink_budget_mbps * 1000),
        {k: round(mbps * 1000) for k, mbps in config.uplink_budgets},
        main_kbps=config.main_stream_kbps,
        sub_kbps=config.sub_stream_kbps,
    )


def build_planner(
    config: StreamSettings, directory: Directory, gb_version_of: Callable[[str], str | None]
) -> StreamPlanner:
    """The live service's per-channel stream facts."""
    overrides: dict[str, StreamStyle] = {k: parse_style(v) for k, v in config.stream_number_styles}
    return StreamPlanner(
        directory,
        gb_version_of,
        style_overrides=overrides,
        default_style=parse_style(config.stream_number_style),
    )


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key.strip(), value.strip()


def add_stream_args(parser: argparse.ArgumentParser) -> None:
    """The flags of ``kgw gateway`` for sub-streams and uplink budgets."""
    parser.add_argument(
        "--uplink-budget", type=float, metavar="MBPS", help="uplink budget of each kindergarten (default 20; 0: none)"
    )
    parser.add_argument(
        "--uplink-budget-for",
        action="append",
        type=_pair,
        metavar="KG=MBPS",
        help="uplink budget of one kindergarten (repeatable)",
    )
    parser.add_argument(
        "--stream-number-style",
        metavar="STYLE",
        help="default sub-stream spelling in offers: streamnumber (GB 2022, default), stream, streamprofile, streamMode",
    )
    parser.add_argument(
        "--stream-number-style-for",
        action="append",
        type=_pair,
        metavar="DEVICE_OR_MAKER=STYLE",
        help="sub-stream spelling for a device ID or a manufacturer (repeatable)",
    )


def stream_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The flags as load_config overrides (None: not given)."""
    return {
        "uplink_budget_mbps": getattr(args, "uplink_budget", None),
        "uplink_budgets": tuple(args.uplink_budget_for) if getattr(args, "uplink_budget_for", None) else None,
        "stream_number_style": getattr(args, "stream_number_style", None),
        "stream_number_styles": (
            tuple(args.stream_number_style_for) if getattr(args, "stream_number_style_for", None) else None
        ),
    }
