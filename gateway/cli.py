"""The ``kgw`` command: gateway, platform, simulate, demo, and the accounts (user, token).

Every command runs until SIGINT/SIGTERM and then shuts down cleanly
(unregistering simulated devices, flushing the registry).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from gateway.audit.commands import add_audit_parser, run_audit
from gateway.cli_accounts import add_account_commands, run_account_command
from gateway.config import (
    DEFAULT_GATEWAY_ID,
    GatewayConfig,
    ProvisionedDevice,
    UpperSpec,
    load_config,
    parse_token_hash_flag,
    parse_upper_flag,
)
from gateway.deployment import (
    DEFAULT_DEVICE_PASSWORD,
    DEVICE_PASSWORD_ENV,
    MQTT_PASSWORD_ENV,
    WEBHOOK_SECRET_ENV,
    is_loopback,
    secret_from,
    with_mqtt_password,
)
from gateway.errors import ConfigError, GatewayError
from gateway.gb28181.sip.transport import Transport
from gateway.logsafe import EscapingFilter
from gateway.stream_config import add_stream_args, stream_settings

if TYPE_CHECKING:  # the simulators are imported only when kgw simulate runs
    from simulators.fleet import FleetOptions
    from simulators.video import VideoProfile

log = logging.getLogger("kgw")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for handler in logging.getLogger().handlers:  # network text never forges a log line (issue 10, L3)
        handler.addFilter(EscapingFilter())


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        a, b = int(low), int(high or low)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected N or N-M, got {text!r}") from exc
    return a, b


def _shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected I/N, got {text!r}") from exc
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"expected 0 <= I < N, got {text!r}")
    return i, n


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the README's --help excerpts)."""
    parser = argparse.ArgumentParser(prog="kgw", description="GB/T 28181 kindergarten video and alarm gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    gw = sub.add_parser("gateway", help="run the access gateway (devices register here)")
    gw.add_argument("--config", help="TOML file with [gateway] settings and [[devices]] provisioning")
    gw.add_argument("--sip-host", help="address for SIP UDP+TCP (default 127.0.0.1)")
    gw.add_argument("--sip-port", type=int, help="SIP port, UDP and TCP (default 5060)")
    gw.add_argument("--sip-advertise", help="address devices reach us at, for Via/Contact when --sip-host is 0.0.0.0")
    gw.add_argument("--http-host", help="address for the HTTP API (default 127.0.0.1)")
    gw.add_argument("--http-port", type=int, help="HTTP API port (default 8080)")
    gw.add_argument("--id", help=f"gateway 20-digit SIP ID (default {DEFAULT_GATEWAY_ID})")
    gw.add_argument("--node", help="this process's name in a deployment of several gateway processes (default gateway)")
    gw.add_argument(
        "--districts",
        metavar="CODE[,CODE...]",
        help="the districts this process serves, e.g. 120101,120102 (default: all); other districts' devices "
        "are redirected to their --peer",
    )
    gw.add_argument(
        "--peer",
        action="append",
        metavar="CODE[,CODE...]=HOST:PORT[/GATEWAYID]",
        help="another gateway process and the districts it serves (repeatable): REGISTERs of their devices "
        "are answered 302 Moved Temporarily with Contact <sip:GATEWAYID@HOST:PORT>",
    )
    _password_args(gw, "device password that auto-enrols devices")
    gw.add_argument(
        "--db", help="database: SQLite path, sqlite:///path or postgresql://USER@HOST:PORT/DB (default var/kgw.db)"
    )
    gw.add_argument(
        "--db-password-file", metavar="FILE", help="password of a postgresql:// --db URL's user (or $KGW_DB_PASSWORD)"
    )
    gw.add_argument("--enrolment", choices=["auto", "strict"], help="strict: only provisioned device IDs")
    gw.add_argument(
        "--media-transport",
        choices=["udp", "tcp-passive", "tcp-active"],
        help="how cameras send RTP for live views (default udp; tcp-passive: we listen)",
    )
    gw.add_argument(
        "--max-transcodes", type=int, help="concurrent H.265→H.264 transcodes for browsers (default 4; then 503)"
    )
    gw.add_argument("--keepalive-interval", type=float, help="expected keepalive period in s (default 60)")
    gw.add_argument("--keepalive-missed", type=int, help="missed keepalives before offline (default 3)")
    gw.add_argument(
        "--mqtt",
        metavar="URL",
        help="police alarm integration: mqtt://[user:pass@]HOST:PORT (QoS 1, topic kgw/alarms/<district>/<kg>)",
    )
    gw.add_argument("--webhook-url", help="POST every alarm (schema-1 JSON, HMAC-signed) to this URL")
    gw.add_argument(
        "--webhook-secret", help="HMAC-SHA256 key of the webhook's X-KGW-Signature (loopback only: `ps` shows it)"
    )
    gw.add_argument(
        "--webhook-secret-file",
        metavar="FILE",
        help=f"the webhook's HMAC key, read from FILE (or ${WEBHOOK_SECRET_ENV})",
    )
    gw.add_argument(
        "--alarm-escalate-after",
        type=float,
        metavar="S",
        help="escalate alarms not acknowledged within S seconds (default 180; 0 = never)",
    )
    gw.add_argument("--public-url", help="base URL put in alarm links (default http://HTTP_HOST:HTTP_PORT)")
    gw.add_argument(
        "--upper",
        action="append",
        metavar="LEVEL[/DISTRICT]=SERVER_ID@HOST:PORT",
        help="register with an upper platform (repeatable): e.g. district/120101=12010100002000000001@"
        "10.0.0.5:5060, municipal=…, police=…; each needs its own password: --upper-password-file NAME=FILE "
        "or $KGW_UPPER_PASSWORD_<NAME> (NAME: municipal, police, district-120101…)",
    )
    gw.add_argument(
        "--upper-password-file",
        action="append",
        metavar="NAME=FILE",
        help="the password of upper platform NAME (repeatable; never the device password)",
    )
    gw.add_argument(
        "--mqtt-password-file", metavar="FILE", help="password of the --mqtt URL's user ($KGW_MQTT_PASSWORD)"
    )
    gw.add_argument("--log-level", help="DEBUG, INFO, WARNING (default INFO)")
    _login_args(gw)
    add_stream_args(gw)

    sim = sub.add_parser("simulate", help="run simulated kindergartens against a gateway")
    _simulate_args(sim)

    plat = sub.add_parser("platform", help="a GB/T 28181 upper platform: district, municipal or police")
    plat.add_argument("--level", choices=["district", "municipal", "police"], required=True)
    plat.add_argument("--district", help="the district's 6-digit civil code (level district), e.g. 120101")
    plat.add_argument("--id", help="the platform's 20-digit SIP ID (default by level, type 200)")
    plat.add_argument("--sip-host", default="127.0.0.1")
    plat.add_argument("--sip-advertise", help="address lower platforms reach us at, when --sip-host is 0.0.0.0")
    plat.add_argument("--sip-port", type=int, default=5070, help="SIP port, UDP and TCP (default 5070)")
    plat.add_argument("--http-host", default="127.0.0.1")
    plat.add_argument("--http-port", type=int, default=8070, help="console and API port (default 8070)")
    _password_args(plat, "password devices register with (lower platforms: --lower)")
    plat.add_argument(
        "--lower",
        action="append",
        metavar="ID[=FILE]",
        help="provision a lower platform (repeatable): its 20-digit ID and the file with its own password "
        "(else $KGW_LOWER_PASSWORD_<ID>, else the device password); off loopback only provisioned IDs register",
    )
    plat.add_argument("--enrolment", choices=["auto", "strict"], help="default: strict off loopback, auto on it")
    plat.add_argument("--db", help="SQLite file or postgresql://… URL (default var/platform-<level>.db)")
    plat.add_argument(
        "--upper",
        action="append",
        metavar="LEVEL[/DISTRICT]=SERVER_ID@HOST:PORT",
        help="cascade upward too (a district platform registering with the municipal one)",
    )
    plat.add_argument(
        "--upper-password-file", action="append", metavar="NAME=FILE", help="the password of upper platform NAME"
    )
    plat.add_argument("--config", help="TOML file with [gateway] settings and [[upper_platforms]]")
    plat.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    plat.add_argument(
        "--fault",
        choices=["upper-down"],
        help="a simulated failure: upper-down refuses the lower platforms' alarms (503) (simulators/upper_down.py)",
    )
    plat.add_argument(
        "--fault-control-port",
        type=int,
        metavar="PORT",
        help='switch upper-down at run time: PUT http://127.0.0.1:PORT/uppers/platform {"down": false} (0: any)',
    )
    _login_args(plat)

    police = sub.add_parser(
        "police-receiver", help="simulated police alarm integration: MQTT subscriber and/or webhook"
    )
    police.add_argument("--mqtt", metavar="URL", help="broker to subscribe to: mqtt://[user:pass@]HOST:PORT")
    police.add_argument(
        "--mqtt-password-file", metavar="FILE", help="password of the --mqtt URL's user (else $KGW_MQTT_PASSWORD)"
    )
    police.add_argument("--webhook", type=_hostport, metavar="HOST:PORT", help="also receive signed webhook POSTs here")
    police.add_argument("--secret", help="webhook HMAC secret (the gateway's webhook_secret)")
    police.add_argument("--report-every", type=float, default=10.0, help="s between report lines (default 10)")
    police.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")

    devices = sub.add_parser("devices", help="provision devices: per-device passwords for strict enrolment")
    devices_sub = devices.add_subparsers(dest="devices_command", required=True)
    imp = devices_sub.add_parser(
        "import", help="import device_id,password[,kindergarten_id,name] rows from a CSV file (all or nothing)"
    )
    imp.add_argument("file", help="CSV file with a header row (UTF-8)")
    imp.add_argument("--config", help="the gateway's TOML file (its id/realm and db)")
    imp.add_argument("--id", help=f"the gateway's 20-digit SIP ID, for the digest realm (default {DEFAULT_GATEWAY_ID})")
    imp.add_argument("--realm", help="the gateway's digest realm (default: the first 10 digits of its ID)")
    imp.add_argument("--db", help="the gateway's SQLite file (default var/kgw.db)")

    demo = sub.add_parser("demo", help="gateway + simulated city on embedded defaults")
    demo.add_argument("--kindergartens", type=int, default=20, help="simulated kindergartens (2314 = whole city)")
    demo.add_argument("--sip-port", type=int, default=5060, help="gateway SIP port, UDP and TCP (default 5060)")
    demo.add_argument(
        "--http-port",
        type=int,
        default=8080,
        help="gateway console/API port (default 8080); the 18 platforms take the next 18 ports",
    )
    demo.add_argument(
        "--data-dir", default="var/demo", help="SQLite files of the gateway and platforms (default var/demo)"
    )
    demo.add_argument("--transport", choices=["udp", "tcp"], default="udp", help="SIP transport of the devices")
    demo.add_argument(
        "--keepalive-interval",
        type=float,
        default=20.0,
        help="demo devices keep alive every N s (default 20, so offline shows within a minute)",
    )
    demo.add_argument(
        "--alarm-rate",
        type=float,
        default=1 / 30,
        help="simulated alarm presses per second across the city (default one every 30 s; 0 = none)",
    )
    demo.add_argument(
        "--control-port",
        type=int,
        help="simulator control endpoint: POST /press presses a button on demand (default: the port after the "
        "18 platform consoles, 8099 with the default --http-port)",
    )
    demo.add_argument(
        "--escalate-after",
        type=float,
        default=120.0,
        help="s before an unacknowledged alarm escalates to the municipal level (default 120)",
    )
    demo.add_argument(
        "--no-mqtt", action="store_true", help="do not start the local Mosquitto broker and police receiver"
    )
    demo.add_argument(
        "--no-platforms",
        action="store_true",
        help="only the gateway and the city, without the 16 district, municipal and police platforms",
    )
    demo.add_argument(
        "--gateways",
        type=int,
        default=1,
        help="gateway processes splitting the 16 districts (default 1); devices register at gateway 1's address "
        "and are redirected (302) to their district's gateway; all on one database",
    )
    demo.add_argument(
        "--db",
        help="the database: postgresql://USER@HOST:PORT/DB (default with --gateways N: an embedded PostgreSQL; "
        "else the SQLite file in --data-dir)",
    )
    demo.add_argument(
        "--fault",
        action="append",
        metavar="KG:MODE[:CAMERA]",
        help="a kindergarten (index or ID) that fails on purpose, or PLATFORM:upper-down (repeatable; replaces the "
        "demo's default faulty kindergartens #5, #10 and #15; see kgw simulate --help)",
    )
    demo.add_argument("--no-faults", action="store_true", help="no faulty kindergartens at all")
    demo.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    demo.add_argument("--tls-cert", metavar="FILE", help="serve every console over HTTPS with this PEM certificate")
    demo.add_argument("--tls-key", metavar="FILE", help="the certificate's PEM private key")
    add_account_commands(sub)
    add_audit_parser(sub)
    return parser


def _password_args(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--password",
        help=f"{what} (default 12345678; loopback only: every user sees it in `ps`)",
    )
    parser.add_argument(
        "--device-password-file", metavar="FILE", help=f"{what}, read from FILE (or set ${DEVICE_PASSWORD_ENV})"
    )


def _login_args(parser: argparse.ArgumentParser) -> None:
    """Flags of the HTTP logins (README "Logins") on the nodes: TLS, Host names, proxies, tokens."""
    parser.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this PEM certificate (chain)")
    parser.add_argument("--tls-key", metavar="FILE", help="the certificate's PEM private key")
    parser.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME[:PORT]",
        help="a Host name the console is reached by, besides loopback and the bind address (repeatable)",
    )
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        metavar="NETWORK",
        help="a reverse proxy whose X-Forwarded-For names the client, e.g. 10.0.0.0/24 (repeatable)",
    )
    parser.add_argument(
        "--api-token-hash",
        action="append",
        metavar="NAME:ROLE:SHA256",
        help="accept an API token given by its SHA-256 (sha256sum); ROLE metrics: /metrics only (repeatable)",
    )


def _login_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The login flags as load_config overrides (None: not given, the file or default stands)."""
    tokens = tuple(parse_token_hash_flag(t) for t in args.api_token_hash) if args.api_token_hash else None
    return {
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "allowed_hosts": tuple(args.allowed_host) if args.allowed_host else None,
        "trusted_proxies": tuple(args.trusted_proxy) if args.trusted_proxy else None,
        "api_tokens": tokens,
    }


def _simulate_args(sim: argparse.ArgumentParser) -> None:
    sim.add_argument("--gateway", type=_hostport, default=("127.0.0.1", 5060), help="gateway SIP HOST:PORT")
    sim.add_argument("--gateway-id", default=DEFAULT_GATEWAY_ID, help="gateway 20-digit SIP ID")
    sim.add_argument(
        "--redirect-allow",
        action="append",
        metavar="HOST[:PORT]",
        help="a gateway of the city a REGISTER 302 may send devices to (repeatable; default: the --gateway host)",
    )
    sim.add_argument("--password", help="device password (default $KGW_DEVICE_PASSWORD, else 12345678)")
    sim.add_argument("--password-file", metavar="FILE", help="device password, read from FILE")
    sim.add_argument(
        "--kindergartens", type=int, default=10, help="how many kindergartens (default 10; 2314 = whole city)"
    )
    sim.add_argument("--transport", choices=["udp", "tcp"], default="udp", help="SIP transport (default udp)")
    sim.add_argument(
        "--api",
        help="gateway HTTP base URL to provision kindergartens (names, addresses); "
        "its API token comes from the environment variable KGW_API_TOKEN",
    )
    sim.add_argument("--ipc", action="store_true", help="every camera registers itself (no NVR)")
    sim.add_argument("--cameras", type=_range, default=(8, 16), help="cameras per kindergarten, N or N-M")
    sim.add_argument("--seed", type=int, default=2020, help="seed of the simulated city (same seed, same city)")
    sim.add_argument(
        "--shard",
        type=_shard,
        default=(0, 1),
        metavar="I/N",
        help="run only every N-th kindergarten of the city, from the I-th (0-based): N simulator processes share a city",
    )
    sim.add_argument(
        "--only-districts",
        metavar="CODE[,CODE...]",
        help="run only these districts' kindergartens (e.g. the districts one gateway process serves)",
    )
    sim.add_argument("--expires", type=int, default=3600, help="REGISTER Expires in s (default 3600)")
    sim.add_argument("--keepalive-interval", type=float, default=60.0, help="keepalive period in s (default 60)")
    sim.add_argument("--rate", type=float, default=2000.0, help="devices started per second (default 2000)")
    sim.add_argument("--wrong-password", type=int, default=0, help="N devices use a wrong password")
    sim.add_argument("--silent", type=int, default=0, help="N devices never keep alive")
    sim.add_argument("--flap", type=int, default=0, help="N devices alternate silent/talking")
    sim.add_argument("--flap-period", type=float, default=180.0, help="s silent, then s talking (default 180)")
    sim.add_argument("--malformed", type=int, default=0, help="N devices send broken XML now and then")
    sim.add_argument(
        "--video-codec",
        choices=["h264", "hevc"],
        default="h264",
        help="what simulated cameras stream (default h264; hevc shows the 'needs transcoding' path)",
    )
    sim.add_argument(
        "--hevc-share",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="share of the cameras that stream H.265 instead, the same ones every run (default 0; the demo: 0.125)",
    )
    sim.add_argument("--video-size", default="640x360", help="simulated camera picture, WxH (default 640x360)")
    sim.add_argument("--video-bitrate", type=int, default=1_000_000, help="encoder bitrate in bit/s (default 1000000)")
    sim.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="HOST",
        help="address the simulated devices' sockets use (default 127.0.0.1; 0.0.0.0 in containers)",
    )
    sim.add_argument(
        "--alarm-rate",
        type=float,
        default=0.0,
        metavar="PER_SECOND",
        help="press alarm buttons (1 in 5: trip perimeter detectors) at this steady rate (default 0)",
    )
    sim.add_argument(
        "--control-port",
        type=int,
        metavar="PORT",
        help='HTTP control endpoint on 127.0.0.1:PORT: POST /press {"kindergarten": ID, "kind": "button"}',
    )
    sim.add_argument(
        "--fault",
        action="append",
        metavar="KG:MODE[:CAMERA]",
        help="make a kindergarten fail on purpose (repeatable): KG is its index or 20-digit ID, MODE one of "
        "camera-offline, black-picture (CAMERA: a camera number, default every camera), no-entrance, silent-alarm",
    )
    sim.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")


async def _run_until_signal(start: Callable[[], Awaitable[Any]], stop: Callable[[], Awaitable[Any]]) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await start()
        await stopping.wait()
        log.info("shutting down")
    finally:
        await stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    """``NAME=VALUE`` flags as a dict."""
    out: dict[str, str] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ConfigError(f"{flag} wants NAME=FILE, not {item!r}")
        out[name] = value
    return out


def _uppers(args: argparse.Namespace) -> tuple[UpperSpec, ...] | None:
    if not args.upper:
        return None
    files = _pairs(args.upper_password_file, "--upper-password-file")
    return tuple(parse_upper_flag(text, files) for text in args.upper)


def _lowers(items: list[str] | None) -> tuple[ProvisionedDevice, ...] | None:
    """``--lower ID[=FILE]``: lower platforms provisioned with their own passwords."""
    if not items:
        return None
    lowers = []
    for item in items:
        device_id, _, path = item.partition("=")
        password = secret_from(file=path or None, env=f"KGW_LOWER_PASSWORD_{device_id}", what=f"lower {device_id}")
        lowers.append(ProvisionedDevice(id=device_id, password=password))
    return tuple(lowers)


def _refuse_command_line_secrets(args: argparse.Namespace, config: GatewayConfig) -> GatewayConfig:
    """Off loopback a password may not come only from the command line (issue 10, M4)."""
    if is_loopback(config.sip_host):
        return config
    if args.password is not None:
        raise ConfigError(
            f"refusing to start: --password on the command line with SIP on {config.sip_host}: every user of "
            f"this machine sees it in `ps`; use --device-password-file FILE or ${DEVICE_PASSWORD_ENV}"
        )
    if getattr(args, "webhook_secret", None):
        raise ConfigError(
            f"refusing to start: --webhook-secret on the command line with SIP on {config.sip_host}: every user of "
            f"this machine sees it in `ps`; use --webhook-secret-file FILE or ${WEBHOOK_SECRET_ENV}"
        )
    db = getattr(args, "db", None) or ""
    if db.startswith(("postgresql://", "postgres://")) and ":" in db.split("://", 1)[1].split("@")[0] and "@" in db:
        raise ConfigError(
            "refusing to start: the --db URL carries a password, visible in `ps`; "
            "use postgresql://USER@HOST:PORT/DB with --db-password-file FILE or $KGW_DB_PASSWORD"
        )
    if "@" in (getattr(args, "mqtt", None) or "") and ":" in args.mqtt.split("://", 1)[-1].split("@", 1)[0]:
        raise ConfigError(
            "refusing to start: the --mqtt URL carries a password, visible in `ps`; "
            "use mqtt://USER@HOST:PORT with --mqtt-password-file FILE or $KGW_MQTT_PASSWORD"
        )
    return config


def platform_config_from_args(args: argparse.Namespace) -> GatewayConfig:
    """``kgw platform``: a gateway service with a platform's ID that lower platforms register with."""
    from gbplatform.ids import platform_id

    if args.level == "district" and not args.district:
        raise ConfigError("--level district needs --district CODE (e.g. 120101)")
    config = load_config(
        args.config,
        id=args.id or platform_id(args.level, args.district),
        sip_host=args.sip_host,
        sip_advertise=args.sip_advertise,
        role=args.level,
        sip_port=args.sip_port,
        http_host=args.http_host,
        http_port=args.http_port,
        password=args.password,
        password_file=args.device_password_file,
        enrolment=args.enrolment,
        devices=_lowers(args.lower),
        db=args.db or f"var/platform-{args.level}{'-' + args.district if args.district else ''}.db",
        upper_platforms=_uppers(args),
        log_level=args.log_level,
        **_login_settings(args),
    )
    return _refuse_command_line_secrets(args, config)


def gateway_config_from_args(args: argparse.Namespace) -> GatewayConfig:
    """Merge --config with flags."""
    config = load_config(
        args.config,
        sip_host=args.sip_host,
        sip_port=args.sip_port,
        sip_advertise=args.sip_advertise,
        http_host=args.http_host,
        http_port=args.http_port,
        id=args.id,
        node=args.node,
        districts=args.districts,
        peers=tuple(args.peer) if args.peer else None,
        password=args.password,
        password_file=args.device_password_file,
        db=args.db,
        db_password_file=args.db_password_file,
        enrolment=args.enrolment,
        media_transport=args.media_transport,
        max_transcodes=args.max_transcodes,
        keepalive_interval=args.keepalive_interval,
        keepalive_missed=args.keepalive_missed,
        log_level=args.log_level,
        mqtt=args.mqtt,
        mqtt_password_file=args.mqtt_password_file,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        webhook_secret_file=args.webhook_secret_file,
        alarm_escalate_after=args.alarm_escalate_after,
        public_url=args.public_url,
        upper_platforms=_uppers(args),
        **_login_settings(args),
        **stream_settings(args),
    )
    return _refuse_command_line_secrets(args, config)


async def run_node(
    config: GatewayConfig, *, platform: bool, fault: str | None = None, fault_control_port: int | None = None
) -> None:
    """``kgw gateway`` (the access gateway) or ``kgw platform`` (a monitoring platform), with the console.

    ``fault`` (a platform's ``--fault upper-down``) or a ``fault_control_port`` puts the simulated
    failure switch of simulators/upper_down.py on the platform."""
    from gbplatform.app import build_gateway, build_platform

    if config.http_warning:
        log.warning("%s", config.http_warning)
    service = build_platform(config) if platform else build_gateway(config)
    if fault is None and fault_control_port is None:
        await _run_until_signal(service.start, service.stop)
        return
    from simulators.upper_down import FaultyPlatform

    node = FaultyPlatform(service, down=fault == "upper-down", control_port=fault_control_port)
    await _run_until_signal(node.start, node.stop)


def fleet_options_from_args(args: argparse.Namespace) -> FleetOptions:
    """FleetOptions from ``kgw simulate`` flags."""
    from simulators.faults import parse_faults
    from simulators.fleet import FleetOptions

    return FleetOptions(
        gateway_host=args.gateway[0],
        gateway_port=args.gateway[1],
        gateway_id=args.gateway_id,
        password=args.password
        or secret_from(file=args.password_file, env=DEVICE_PASSWORD_ENV, what="device password")
        or DEFAULT_DEVICE_PASSWORD,
        kindergartens=args.kindergartens,
        transport=Transport(args.transport.upper()),
        seed=args.seed,
        ipc_mode=args.ipc,
        cameras=args.cameras,
        shard=args.shard,
        only_districts=tuple(c.strip() for c in (args.only_districts or "").split(",") if c.strip()),
        expires=args.expires,
        keepalive_interval=args.keepalive_interval,
        rate=args.rate,
        wrong_password=args.wrong_password,
        silent=args.silent,
        flap=args.flap,
        flap_period=args.flap_period,
        malformed=args.malformed,
        api=args.api,
        video=_video_profile(args),
        hevc_share=args.hevc_share,
        alarm_rate=args.alarm_rate,
        control_port=args.control_port,
        local_host=args.bind,
        redirect_allow=tuple(args.redirect_allow or ()),
        faults=parse_faults(args.fault or ()),
    )


def _video_profile(args: argparse.Namespace) -> VideoProfile:
    """The simulated cameras' VideoProfile from ``--video-*`` flags."""
    from simulators.video import VideoProfile

    width, _, height = args.video_size.lower().partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise ConfigError(f"--video-size must be WxH, not {args.video_size!r}")
    return VideoProfile(width=int(width), height=int(height), codec=args.video_codec, bitrate=args.video_bitrate)


async def run_simulate(options: FleetOptions) -> None:
    """``kgw simulate``: start the fleet, print progress every 5 s."""
    from simulators.fleet import Fleet

    fleet = Fleet(options)
    progress: list[asyncio.Task[None]] = []

    async def report() -> None:
        while True:
            await asyncio.sleep(5)
            s = fleet.summary()
            log.info(
                "simulator: %d/%d devices registered, %d keepalives sent, %d/%d alarms answered, states %s",
                s["registered"],
                s["devices"],
                s["keepalives_sent"],
                s["alarms_answered"],
                s["alarms_pressed"],
                s["states"],
            )

    async def start() -> None:
        await fleet.start()
        if fleet.control_port is not None:
            log.info(
                'simulator control: POST http://127.0.0.1:%d/press {"kindergarten": ID, "kind": "button"}',
                fleet.control_port,
            )
        progress.append(asyncio.create_task(report()))

    async def stop() -> None:
        for task in progress:
            task.cancel()
        await fleet.stop()

    await _run_until_signal(start, stop)


async def run_police_receiver(args: argparse.Namespace) -> None:
    """``kgw police-receiver``: count, deduplicate and time the alarms the police would get."""
    from simulators.police_receiver import run_receiver

    if args.mqtt is None and args.webhook is None:
        raise ConfigError("police-receiver needs --mqtt URL and/or --webhook HOST:PORT")
    mqtt = args.mqtt
    if mqtt and "@" in mqtt and ":" not in mqtt.split("://", 1)[-1].split("@", 1)[0]:
        password = secret_from(file=args.mqtt_password_file, env=MQTT_PASSWORD_ENV, what="MQTT password")
        mqtt = with_mqtt_password(mqtt, password) if password is not None else mqtt
    task: list[asyncio.Task[None]] = []

    async def start() -> None:
        task.append(asyncio.create_task(run_receiver(mqtt, args.webhook, args.secret, args.report_every)))
        await asyncio.sleep(0)

    async def stop() -> None:
        for t in task:
            t.cancel()
        await asyncio.gather(*task, return_exceptions=True)

    await _run_until_signal(start, stop)


async def run_demo(args: argparse.Namespace) -> None:
    """``kgw demo``: the gateway, 18 platforms, a simulated city and the police alarm side (simulators/demo.py)."""
    from simulators.demo import Demo, DemoOptions

    demo = Demo(
        DemoOptions(
            kindergartens=args.kindergartens,
            sip_port=args.sip_port,
            http_port=args.http_port,
            data_dir=args.data_dir,
            transport=args.transport,
            keepalive_interval=args.keepalive_interval,
            alarm_rate=args.alarm_rate,
            control_port=args.control_port,
            escalate_after=args.escalate_after,
            mqtt=not args.no_mqtt,
            platforms=not args.no_platforms,
            tls_cert=args.tls_cert or "",
            tls_key=args.tls_key or "",
            gateways=args.gateways,
            db=args.db or "",
            faults=() if args.no_faults else tuple(args.fault) if args.fault else None,
        )
    )

    async def start() -> None:
        await demo.start()
        print(f"\n{demo.banner()}\n", flush=True)

    await _run_until_signal(start, demo.stop)


def run_devices(args: argparse.Namespace) -> int:
    """``kgw devices import FILE.csv``: store per-device HA1s (a running gateway reads them at start)."""
    from gateway.device_credentials import credentials_db, hash_credentials, save_credentials
    from gateway.device_csv import parse_device_csv

    try:
        with open(args.file, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {args.file}: {exc}") from exc
    rows = parse_device_csv(text)
    # HA1 depends on the realm: the gateway's, from its config file / ID like `kgw gateway` computes it.
    config = load_config(args.config, id=args.id, realm=args.realm, db=args.db)
    path = credentials_db(config.db)
    if path is None:
        raise ConfigError("--db must be a SQLite file or a postgresql:// URL")
    count = save_credentials(path, hash_credentials(rows, config.domain), config.domain)
    where = "the PostgreSQL database" if path.startswith(("postgresql:", "postgres:")) else path  # no password shown
    print(f"imported {count} device credential(s) into {where}; restart the gateway (or POST /api/devices/import)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kgw`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "audit":
        return run_audit(args)
    try:
        if args.command == "gateway":
            config = gateway_config_from_args(args)
            _setup_logging(config.log_level)
            runner: Coroutine[Any, Any, None] = run_node(config, platform=False)
        elif args.command == "simulate":
            _setup_logging(args.log_level)
            runner = run_simulate(fleet_options_from_args(args))
        elif args.command == "platform":
            config = platform_config_from_args(args)
            _setup_logging(config.log_level)
            runner = run_node(config, platform=True, fault=args.fault, fault_control_port=args.fault_control_port)
        elif args.command == "devices":
            return run_devices(args)
        elif args.command == "police-receiver":
            _setup_logging(args.log_level)
            runner = run_police_receiver(args)
        elif args.command in ("user", "token"):
            return run_account_command(args)
        else:
            _setup_logging(args.log_level)
            runner = run_demo(args)
        _run(runner)
    except GatewayError as exc:
        print(f"kgw: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"kgw: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop  # optional: 5x the UDP throughput of plain asyncio (docs/dependencies.md)
    except ImportError:
        asyncio.run(coro)
        return
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(coro)


if __name__ == "__main__":
    raise SystemExit(main())
