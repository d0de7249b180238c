"""Gateway configuration: embedded defaults, a TOML file, then command-line flags.

Everything has a default that works on one machine (``kgw demo``); a TOML file
(``--config``) sets the rest, and flags override both. Unknown keys are
refused so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from gateway.cascade.policy import PolicyLevel, SharePolicy
from gateway.cascade.upper_config import UpperPlatformConfig, UpperSpec
from gateway.cluster import DEFAULT_NODE, Cluster, PeerGateway, parse_districts, parse_peer
from gateway.deployment import (
    DB_PASSWORD_ENV,
    DEFAULT_DEVICE_PASSWORD,
    DEVICE_PASSWORD_ENV,
    MQTT_PASSWORD_ENV,
    WEBHOOK_SECRET_ENV,
    is_loopback,
    secret_from,
    upper_password_env,
    with_mqtt_password,
)
from gateway.errors import ConfigError, GatewayError
from gateway.gb28181.ids import is_gb_id
from gateway.security.accounts import AccountError, ApiToken, check_name, check_scope, parse_role
from gateway.security.principal import Role
from gateway.stream_config import TABLES as STREAM_TABLES
from gateway.stream_config import check_stream_settings, normalise_tables

__all__ = [
    "DEFAULT_GATEWAY_ID",
    "GatewayConfig",
    "ProvisionedDevice",
    "UpperSpec",
    "load_config",
    "parse_token_hash_flag",
    "parse_upper_flag",
]

DEFAULT_GATEWAY_ID = "12010000002090000001"  # Tianjin (1201), type 209 access gateway

log = logging.getLogger("kgw.config")


@dataclass(frozen=True, slots=True)
class ProvisionedDevice:
    """A device known in advance: its own password (or HA1s of it, from an import) and kindergarten."""

    id: str
    password: str | None = None
    kindergarten_id: str | None = None
    ha1_md5: str | None = None  # H(id:realm:password) (gateway.device_credentials)
    ha1_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Every setting of ``kgw gateway``."""

    id: str = DEFAULT_GATEWAY_ID
    # --- several gateway processes (gateway/cluster.py, README "Several gateway processes") ---
    node: str = DEFAULT_NODE  # this process's name in the deployment (stored with what it owns, e.g. alarms)
    districts: tuple[str, ...] = ()  # 6-digit district codes this process serves; () = every district
    peers: tuple[PeerGateway, ...] = ()  # who serves other districts: their devices are answered 302
    role: str = "gateway"  # gateway | district | municipal | police (what the console calls itself)
    realm: str = ""  # default: the first 10 digits of id
    password: str = DEFAULT_DEVICE_PASSWORD  # refused off loopback (gateway.deployment)
    password_file: str = ""  # the device password's file (else $KGW_DEVICE_PASSWORD, else ``password``)
    sip_host: str = "127.0.0.1"
    sip_advertise: str = ""  # address put in Via/Contact; default: sip_host, or this host's address for 0.0.0.0
    sip_port: int = 5060
    sip_tcp: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    db: str = "var/kgw.db"
    db_password_file: str = ""  # a postgresql:// db URL user's password (else $KGW_DB_PASSWORD), not in ``ps``
    enrolment: str = "auto"  # or "strict"; load_config defaults it to strict off loopback
    media_transport: str = "udp"  # how cameras send RTP: udp, tcp-passive (we listen), tcp-active (we connect)
    play_timeout: float = 10.0  # s for a camera to answer a live INVITE
    rtp_timeout: float = 10.0  # s without RTP before a live stream is ended (BYE)
    media_ports: str = ""  # "30000-30999": RTP ports for live streams (firewalls); "" = any free port
    keepalive_interval: float = 60.0
    keepalive_missed: int = 3
    query_timeout: float = 10.0
    flush_interval: float = 2.0
    nonce_ttl: float = 300.0
    max_message_size: int = 65_536
    log_level: str = "INFO"
    # --- inbound TCP limits (README "Resource limits"; gateway/io/conn_limits.py) ---
    tcp_per_address: int = 128  # open inbound TCP connections (SIP, HTTP, RTP) per source address
    tcp_idle_timeout: float = 300.0  # s a SIP/TCP connection may go without a complete message
    tcp_header_timeout: float = 10.0  # s a started SIP message / an HTTP request head may take
    http_body_timeout: float = 30.0  # s an HTTP request body may take
    fd_reserve: int = 512  # file descriptors inbound connections leave free for alarm deliveries
    webrtc_per_user: int = 4  # open WebRTC sessions per user (or source address)
    webrtc_total: int = 64  # open WebRTC sessions in total
    webrtc_ice_timeout: float = 15.0  # s for a WebRTC viewer to connect before its session is closed
    # --- recording downloads (gateway/downloads.py) ---
    download_dir: str = ""  # MP4 files; default: downloads/ beside the db file (var/downloads)
    downloads_total: int = 8  # running downloads on this node
    downloads_per_user: int = 2  # running downloads of one user
    download_max_range: int = 7200  # s of recording one download may ask for
    download_keep: float = 86400.0  # s a finished file is kept
    max_transcodes: int = 4  # concurrent H.265→H.264 transcodes for browsers (bench/transcode.py); then 503
    public_url: str = ""  # base URL put in alarm links (live view, snapshot); default http://http_host:http_port
    # --- alarms (README "Alarms") ---
    mqtt: str = ""  # police integration broker, mqtt://[user:pass@]host:port; "" = no MQTT sink
    mqtt_client_id: str = ""  # persistent-session client id; default kgw-<gateway id>
    mqtt_password_file: str = ""  # password of the URL's user (else $KGW_MQTT_PASSWORD), kept out of ``ps``
    webhook_url: str = ""  # POST every alarm here (signed); "" = no webhook sink
    webhook_secret: str = ""  # HMAC-SHA256 key of the X-KGW-Signature header (required with webhook_url)
    webhook_secret_file: str = ""  # the webhook secret's file (else $KGW_WEBHOOK_SECRET), kept out of ``ps``
    webhook_timeout: float = 5.0
    alarm_escalate_after: float = (
        180.0  # s without acknowledgement before escalating to the municipal level (0 = never)
    )
    alarm_dedupe_window: float = 600.0  # s within which a repeated notification of the same event is one alarm
    alarm_retry_cap: float = 60.0  # s: the longest wait between delivery attempts
    alarm_dead_after: int = 10  # attempts before a delivery is shown as dead-letter (it keeps being retried)
    alarm_snapshot_budget: float = 0.0  # s the first delivery may wait for the entrance snapshot
    # --- PTZ and device control (README "PTZ and device control") ---
    ptz_auto_stop: float = 2.0  # s after a PTZ move without a new command before the gateway sends the stop
    control_timeout: float = 5.0  # s a DeviceControl (TeleBoot, RecordCmd, GuardCmd…) waits for its Result
    # --- the coverage dashboard (README "Coverage"; gateway/coverage/model.py CoverageRules) ---
    coverage_drill_max_age_days: float = 180.0  # a successful drill older than this: 部分接入 (演练已超过N天)
    coverage_loss_percent: float = 2.0  # RTP loss of a kindergarten's streams over 24 h at or above this (%)
    coverage_flaps: int = 3  # device offline transitions in 24 h at or above this: 频繁掉线
    coverage_require_perimeter: bool = True  # no perimeter camera: 部分接入
    coverage_refresh: float = 30.0  # s between refreshes of drills, offline counts and RTP samples
    devices: tuple[ProvisionedDevice, ...] = field(default_factory=tuple)
    upper_platforms: tuple[UpperSpec, ...] = field(default_factory=tuple)  # cascade (README "Cascade")
    # --- logins (README "Logins") ---
    accounts_db: str = ""  # users, sessions, API tokens; default: db (the demo's nodes share one file)
    tls_cert: str = ""  # PEM certificate (chain): serve HTTPS, cookies Secure
    tls_key: str = ""  # its PEM private key
    allowed_hosts: tuple[str, ...] = ()  # Host names besides loopback and the bind address (DNS rebinding)
    trusted_proxies: tuple[str, ...] = ()  # networks whose X-Forwarded-For names the client
    session_idle: float = 3600.0  # s a console session lives without a request
    session_lifetime: float = 12 * 3600.0  # s a console session lives at most
    api_tokens: tuple[ApiToken, ...] = field(default_factory=tuple)  # [[api_tokens]]: tokens given by SHA-256
    # --- sub-streams and uplink budgets (issue 11; gateway/stream_config.py) ---
    uplink_budget_mbps: float = 20.0  # each kindergarten's uplink budget (0: no limit)
    uplink_budgets: tuple[tuple[str, float], ...] = ()  # [uplink_budgets]: kindergarten id -> Mbit/s
    main_stream_kbps: int = 4000  # a main stream's estimated rate until measured
    sub_stream_kbps: int = 768  # a sub-stream's
    uplink_measure_after: float = 10.0  # s of streaming before the measured rate counts (0: estimates only)
    stream_number_style: str = "streamnumber"  # offers' sub-stream spelling unless known per device
    stream_number_styles: tuple[tuple[str, str], ...] = ()  # [stream_number_styles]: device id or maker -> style
    # --- onboarding acceptance (issue 13; gateway/acceptance/) ---
    acceptance_drill_wait: float = 180.0  # s an acceptance waits for the guard to press the one-button alarm
    acceptance_proof_wait: float = 60.0  # s it then waits for every upper level to confirm the drill's delivery
    acceptance_overdue_days: float = 180.0  # a kindergarten whose last passed drill is older is listed (reminder)
    acceptance_check_interval: float = 3600.0  # s between refreshes of that list

    @property
    def domain(self) -> str:
        """The SIP domain / digest realm (GB/T 28181: first 10 digits of the ID)."""
        return self.realm or self.id[:10]

    @property
    def cluster(self) -> Cluster:
        """This process's place in the deployment: its node name, districts and peers."""
        return Cluster.from_settings(self.node, self.districts, self.peers, self.id)

    @property
    def media_port_range(self) -> tuple[int, int] | None:
        """``media_ports`` as (low, high), or None for "any free port" (and for bad text)."""
        low, _, high = self.media_ports.partition("-")
        if not (low.isdigit() and high.isdigit()) or not 0 < int(low) <= int(high) < 65536:
            return None
        return int(low), int(high)

    def validate(self) -> GatewayConfig:
        """Raise ConfigError for values that cannot work."""
        if not is_gb_id(self.id):
            raise ConfigError(f"gateway id must be 20 digits, got {self.id!r}")
        if self.role not in ("gateway", "district", "municipal", "police"):
            raise ConfigError("role must be gateway, district, municipal or police")
        if self.enrolment not in ("auto", "strict"):
            raise ConfigError("enrolment must be 'auto' or 'strict'")
        if self.media_ports and self.media_port_range is None:
            raise ConfigError(f"media_ports must look like 30000-30999, not {self.media_ports!r}")
        if self.media_transport not in ("udp", "tcp-passive", "tcp-active"):
            raise ConfigError("media_transport must be udp, tcp-passive or tcp-active")
        if not 0 <= self.sip_port < 65536 or not 0 <= self.http_port < 65536:
            raise ConfigError("ports must be within 0..65535")
        if self.keepalive_interval <= 0 or self.keepalive_missed < 1:
            raise ConfigError("keepalive interval must be > 0 and missed count >= 1")
        if self.flush_interval <= 0:
            raise ConfigError("flush_interval must be > 0")
        if self.max_transcodes < 0:
            raise ConfigError("max_transcodes must be >= 0 (0: H.265 cameras are not shown in browsers)")
        if self.mqtt:
            from gateway.alarms.sinks.mqtt import parse_mqtt_url  # noqa: PLC0415 (keeps config import-light)

            parse_mqtt_url(self.mqtt)
        if self.webhook_url:
            if not self.webhook_url.startswith(("http://", "https://")):
                raise ConfigError(f"webhook_url must be an http(s) URL, not {self.webhook_url!r}")
            if not self.webhook_secret:
                raise ConfigError("webhook_url needs webhook_secret (receivers verify the HMAC signature)")
        if self.alarm_escalate_after < 0 or self.alarm_dedupe_window < 0 or self.alarm_snapshot_budget < 0:
            raise ConfigError("alarm_* times must be >= 0")
        if self.alarm_retry_cap <= 0 or self.alarm_dead_after < 1 or self.webhook_timeout <= 0:
            raise ConfigError("alarm_retry_cap and webhook_timeout must be > 0, alarm_dead_after >= 1")
        if not 0.2 <= self.ptz_auto_stop <= 30.0 or not 0.2 <= self.control_timeout <= 60.0:
            raise ConfigError("ptz_auto_stop must be 0.2-30 s and control_timeout 0.2-60 s")
        for device in self.devices:
            if not is_gb_id(device.id):
                raise ConfigError(f"provisioned device id must be 20 digits, got {device.id!r}")
        check_stream_settings(self)
        _ = self.cluster  # node name, district codes, no district both here and at a peer
        self._check_exposure()
        self._validate_logins()
        return self

    def _check_exposure(self) -> None:
        """Refuse what would hand out a master key (issue 10, H1 and M4; :mod:`gateway.deployment`)."""
        if not self.password:
            raise ConfigError("the device password must not be empty")
        for upper in self.upper_platforms:
            if upper.link.password == self.password:
                raise ConfigError(
                    f"refusing to start: upper platform {upper.link.name!r} would use the device password; "
                    "anyone with a device's password could register there as this gateway. Give each upper "
                    f"its own password (password_file in [[upper_platforms]], --upper-password-file "
                    f"{upper.link.name}=FILE or ${upper_password_env(upper.link.name)})"
                )
        if is_loopback(self.sip_host):
            return
        if self.password == DEFAULT_DEVICE_PASSWORD:
            raise ConfigError(
                f"refusing to start: SIP listens on {self.sip_host}, reachable from the network, with the default "
                f"device password {DEFAULT_DEVICE_PASSWORD}; set a device password with --device-password-file "
                f"FILE or ${DEVICE_PASSWORD_ENV}"
            )
        if self.enrolment == "auto":
            log.warning(
                "auto enrolment on %s: any device that knows the device password can register; "
                "provision devices with their own passwords (kgw devices import) and use --enrolment strict",
                self.sip_host,
            )

    def _validate_logins(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together (--tls-cert FILE --tls-key FILE)")
        for network in self.trusted_proxies:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ConfigError(f"trusted proxy must be an address or network, not {network!r}") from exc
        for host in self.allowed_hosts:
            if not host or any(c in host for c in "/@ \t"):
                raise ConfigError(f"allowed host must be NAME or NAME:PORT, not {host!r}")
        if self.session_idle <= 0 or self.session_lifetime <= 0:
            raise ConfigError("session_idle and session_lifetime must be > 0")

    @property
    def http_warning(self) -> str | None:
        """Why the HTTP listener is exposed, or None (TLS settings, when present, silence it)."""
        if is_loopback(self.http_host) or self.tls_cert:
            return None
        return (
            f"HTTP listens on {self.http_host} without TLS: logins, live views and alarms cross the network "
            "in clear text; use TLS (or a reverse proxy) or bind --http-host 127.0.0.1"
        )


def load_config(
    path: str | Path | None = None, *, environ: Mapping[str, str] | None = None, **overrides: Any
) -> GatewayConfig:
    """Defaults ← TOML file (``[gateway]`` table or top level) ← non-None overrides.

    Secrets not set that way come from their files (``password_file``…) or the
    environment (``environ``, default ``os.environ``): ``KGW_DEVICE_PASSWORD``,
    ``KGW_MQTT_PASSWORD``, ``KGW_UPPER_PASSWORD_<NAME>``.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        values.update(data.get("gateway", {k: v for k, v in data.items() if not isinstance(v, dict)}))
        if "devices" in data:
            values["devices"] = data["devices"]
        if "upper_platforms" in data:
            values["upper_platforms"] = data["upper_platforms"]
        if "api_tokens" in data:
            values["api_tokens"] = data["api_tokens"]
        if "peers" in data:
            values["peers"] = data["peers"]
        values.update({t: data[t] for t in STREAM_TABLES if t in data})
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(GatewayConfig)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown gateway settings: {', '.join(sorted(unknown))}")
    _resolve_secrets(values, environ)
    normalise_tables(values)
    if "enrolment" not in values:  # strict whenever strangers can reach the SIP port
        values["enrolment"] = "auto" if is_loopback(str(values.get("sip_host", GatewayConfig().sip_host))) else "strict"
    if "devices" in values:
        values["devices"] = tuple(_device(d) for d in values["devices"])
    if "districts" in values:
        values["districts"] = parse_districts(values["districts"])
    if "peers" in values:
        if not isinstance(values["peers"], list | tuple):
            raise ConfigError("peers must be a list of 'DISTRICTS=HOST:PORT[/GATEWAYID]' or [[peers]] tables")
        own_id = str(values.get("id") or DEFAULT_GATEWAY_ID)
        values["peers"] = tuple(parse_peer(p, own_id) for p in values["peers"])
    if "api_tokens" in values:
        values["api_tokens"] = tuple(_api_token(t) for t in values["api_tokens"])
    for name in ("allowed_hosts", "trusted_proxies"):
        if isinstance(values.get(name), list | tuple):
            values[name] = tuple(str(v) for v in values[name])
    if "upper_platforms" in values:
        values["upper_platforms"] = tuple(_upper(u, environ) for u in values["upper_platforms"])
    try:
        config = replace(GatewayConfig(), **values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc
    return config.validate()


def _resolve_secrets(values: dict[str, Any], environ: Mapping[str, str] | None) -> None:
    """The device and MQTT passwords and the webhook secret from their files or environment variables (never logged)."""
    if "password" not in values:
        password = secret_from(
            file=values.get("password_file") or None, env=DEVICE_PASSWORD_ENV, what="device password", environ=environ
        )
        if password is not None:
            values["password"] = password
    if "webhook_secret" not in values:
        secret = secret_from(
            file=values.get("webhook_secret_file") or None,
            env=WEBHOOK_SECRET_ENV,
            what="webhook secret",
            environ=environ,
        )
        if secret is not None:
            values["webhook_secret"] = secret
    db = str(values.get("db") or "")
    if db.startswith(("postgresql://", "postgres://")) and "@" in db and ":" not in db.split("://", 1)[1].split("@")[0]:
        password = secret_from(
            file=values.get("db_password_file") or None, env=DB_PASSWORD_ENV, what="database password", environ=environ
        )
        if password is not None:
            values["db"] = with_mqtt_password(db, password)  # any URL: user:quoted-password@host
    elif values.get("db_password_file"):
        raise ConfigError("--db-password-file needs --db postgresql://USER@HOST:PORT/DB (a user, no password)")
    mqtt = str(values.get("mqtt") or "")
    if mqtt and "@" in mqtt and ":" not in mqtt.split("://", 1)[-1].split("@", 1)[0]:
        password = secret_from(
            file=values.get("mqtt_password_file") or None, env=MQTT_PASSWORD_ENV, what="MQTT password", environ=environ
        )
        if password is not None:
            values["mqtt"] = with_mqtt_password(mqtt, password)


def _device(raw: Any) -> ProvisionedDevice:
    if isinstance(raw, ProvisionedDevice):
        return raw
    if not isinstance(raw, dict) or "id" not in raw:
        raise ConfigError("each [[devices]] entry needs an id")
    extra = set(raw) - {"id", "password", "kindergarten_id"}
    if extra:
        raise ConfigError(f"unknown device settings: {', '.join(sorted(extra))}")
    return ProvisionedDevice(
        id=str(raw["id"]), password=raw.get("password"), kindergarten_id=raw.get("kindergarten_id")
    )


def _api_token(raw: Any) -> ApiToken:
    """``[[api_tokens]]``: a token known by its SHA-256 (``kgw token add`` stores tokens in the database)."""
    if isinstance(raw, ApiToken):
        return raw
    if not isinstance(raw, dict) or not {"name", "role", "sha256"} <= set(raw):
        raise ConfigError("each [[api_tokens]] entry needs name, role and sha256")
    extra = set(raw) - {"name", "role", "sha256", "district", "kindergarten", "metrics_only"}
    if extra:
        raise ConfigError(f"unknown api token settings: {', '.join(sorted(extra))}")
    digest = str(raw["sha256"]).lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ConfigError("api token sha256 must be 64 hex digits (sha256sum of the token)")
    try:
        role = parse_role(str(raw["role"]))
        district, kindergarten = check_scope(role, raw.get("district"), raw.get("kindergarten"))
        name = check_name(str(raw["name"]), "token name")
    except AccountError as exc:
        raise ConfigError(f"api token {raw['name']!r}: {exc}") from exc
    return ApiToken(name, digest, role, district, kindergarten, bool(raw.get("metrics_only", False)))


def parse_token_hash_flag(text: str) -> ApiToken:
    """``--api-token-hash NAME:ROLE:SHA256`` (ROLE may be ``metrics`` for a metrics-only city-wide token)."""
    name, _, rest = text.partition(":")
    role, _, digest = rest.partition(":")
    raw: dict[str, Any] = {"name": name, "role": role, "sha256": digest}
    if role == "metrics":
        raw.update(role=Role.CITY_ADMIN.value, metrics_only=True)
    return _api_token(raw)


_UPPER_LINK_FIELDS = frozenset(f.name for f in fields(UpperPlatformConfig))


_UPPER_SECRET_FIELDS = frozenset({"password_file", "password_env"})


def _upper(raw: Any, environ: Mapping[str, str] | None = None) -> UpperSpec:
    """``[[upper_platforms]]``: the link's settings plus ``level``, (district level) ``district`` and its password.

    Each upper has its own password (issue 10, H1): ``password``, ``password_file``,
    ``password_env`` (a variable name) or ``KGW_UPPER_PASSWORD_<NAME>``; never the
    device password.
    """
    if isinstance(raw, UpperSpec):
        return raw
    if not isinstance(raw, dict):
        raise ConfigError("each [[upper_platforms]] entry must be a table")
    extra = set(raw) - _UPPER_LINK_FIELDS - _UPPER_SECRET_FIELDS - {"level", "district"}
    if extra:
        raise ConfigError(f"unknown upper platform settings: {', '.join(sorted(extra))}")
    level = str(raw.get("level", ""))
    district = raw.get("district")
    try:
        policy = SharePolicy(PolicyLevel(level), str(district) if district is not None else None)
    except ValueError as exc:
        raise ConfigError(f"upper platform level must be district, municipal or police, not {level!r}") from exc
    settings = {k: v for k, v in raw.items() if k in _UPPER_LINK_FIELDS}
    settings.setdefault("name", level if level != "district" else f"district-{district}")
    name = str(settings["name"])
    if not settings.get("password"):
        env = str(raw.get("password_env") or upper_password_env(name))
        password = secret_from(
            file=raw.get("password_file") or None, env=env, what=f"upper platform {name!r} password", environ=environ
        )
        if password is None:
            raise ConfigError(
                f"upper platform {name!r} needs its own password: password_file in [[upper_platforms]], "
                f"--upper-password-file {name}=FILE or ${env} (the device password is never used upward)"
            )
        settings["password"] = password
    try:
        link = UpperPlatformConfig(**settings)
        link.validate()
    except TypeError as exc:
        raise ConfigError(f"upper platform {settings.get('name')!r}: {exc}") from exc
    except GatewayError as exc:
        raise ConfigError(str(exc)) from exc
    return UpperSpec(link, policy)


def parse_upper_flag(
    text: str, password_files: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None
) -> UpperSpec:
    """``LEVEL[/DISTRICT]=SERVER_ID@HOST:PORT`` from the command line.

    The password comes from ``password_files[name]`` (``--upper-password-file NAME=FILE``)
    or ``KGW_UPPER_PASSWORD_<NAME>``; the name is the level, or ``district-<code>``.
    """
    target, _, address = text.partition("=")
    server_id, _, hostport = address.partition("@")
    host, _, port = hostport.rpartition(":")
    level, _, district = target.partition("/")
    if not (level and server_id and host and port.isdigit()):
        raise ConfigError(f"--upper wants LEVEL[/DISTRICT]=SERVER_ID@HOST:PORT, not {text!r}")
    raw: dict[str, Any] = {"level": level, "server_id": server_id, "host": host, "port": int(port)}
    if district:
        raw["district"] = district
    name = level if level != "district" else f"district-{district}"
    if password_files and name in password_files:
        raw["password_file"] = password_files[name]
    return _upper(raw, environ)
