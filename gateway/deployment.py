"""Secure defaults of a deployment (issue 10, H1 and M4): what a node refuses to start with.

On loopback (``kgw demo``, the tests) everything stays convenient: auto
enrolment, a password on the command line. As soon as SIP listens on another
address the node is reachable by strangers, so:

* enrolment defaults to strict (only provisioned devices register);
* the default device password ``12345678`` is refused;
* passwords come from a file or an environment variable, never only from a
  command-line flag (``ps`` shows every process's arguments to every user);
* each upper platform has its own password, never the device password (a
  device's password would let anyone register at the police platform as this
  gateway).

Secrets are read here (files, environment) so that configuration stays one
place; nothing is logged of them.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final
from urllib.parse import quote, urlsplit, urlunsplit

from gateway.errors import ConfigError

__all__ = [
    "DB_PASSWORD_ENV",
    "DEFAULT_DEVICE_PASSWORD",
    "DEVICE_PASSWORD_ENV",
    "MQTT_PASSWORD_ENV",
    "WEBHOOK_SECRET_ENV",
    "is_loopback",
    "read_secret",
    "secret_from",
    "upper_password_env",
    "with_mqtt_password",
]

DEFAULT_DEVICE_PASSWORD: Final = "12345678"
DEVICE_PASSWORD_ENV: Final = "KGW_DEVICE_PASSWORD"
MQTT_PASSWORD_ENV: Final = "KGW_MQTT_PASSWORD"
WEBHOOK_SECRET_ENV: Final = "KGW_WEBHOOK_SECRET"
DB_PASSWORD_ENV: Final = "KGW_DB_PASSWORD"
MAX_SECRET_BYTES: Final = 4096


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: only this machine can reach such a socket."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or a wildcard: reachable from elsewhere


def read_secret(path: str, what: str) -> str:
    """The first line of a secret file (trailing newline stripped); ConfigError naming ``what`` otherwise."""
    try:
        data = Path(path).read_bytes()[: MAX_SECRET_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"cannot read {what} from {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(f"{what} file {path} is larger than {MAX_SECRET_BYTES} bytes")
    try:
        text = data.decode("utf-8").splitlines()[0] if data.strip() else ""
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} file {path} is not UTF-8 text") from exc
    if not text:
        raise ConfigError(f"{what} file {path} is empty")
    return text


def secret_from(
    *, file: str | None, env: str | None, what: str, environ: Mapping[str, str] | None = None
) -> str | None:
    """A secret from ``file`` (if given) or the environment variable ``env`` (if set and not empty)."""
    if file:
        return read_secret(file, what)
    value = (os.environ if environ is None else environ).get(env or "", "") if env else ""
    return value or None


def upper_password_env(name: str) -> str:
    """The environment variable holding an upper platform's password: ``KGW_UPPER_PASSWORD_POLICE``, …"""
    return "KGW_UPPER_PASSWORD_" + "".join(c if c.isalnum() else "_" for c in name.upper())


def with_mqtt_password(url: str, password: str) -> str:
    """``mqtt://user@host:port`` with ``password`` put in (quoted); the URL must name the user."""
    parts = urlsplit(url)
    if not parts.username:
        raise ConfigError("an MQTT password needs a user in the URL: mqtt://USER@HOST:PORT")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(parts.username, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
