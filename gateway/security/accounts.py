"""Users, sessions and API tokens of the HTTP API and console: the model and the store interface.

Pure: no clock, no randomness, no database. The times are wall-clock seconds
passed in by the caller; secrets (session ids, token values) are made by the
caller too, and only their SHA-256 is ever stored, so a copy of the database
opens no session and replays no token. Password hashes are argon2id strings
(:mod:`gateway.security.passwords`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import GatewayError
from gateway.gb28181.ids import TIANJIN_DISTRICTS, is_gb_id
from gateway.security.principal import Principal, Role

__all__ = [
    "TOKEN_PREFIX",
    "AccountError",
    "AccountStore",
    "ApiToken",
    "DuplicateAccount",
    "Session",
    "SessionPolicy",
    "UnknownAccount",
    "User",
    "check_name",
    "check_scope",
    "parse_role",
    "secret_digest",
]

TOKEN_PREFIX = "kgw_"  # API tokens start with this, so a leaked one is easy to recognise in logs and scans
MAX_NAME = 64


class AccountError(GatewayError, ValueError):
    """A user or token that cannot be created or changed as asked (the message says why)."""


class DuplicateAccount(AccountError):
    """A user or token name that exists already."""


class UnknownAccount(AccountError):
    """No user or token of that name."""


def secret_digest(secret: str) -> str:
    """The SHA-256 (hex) kept instead of a session id or token value."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_role(text: str) -> Role:
    """A role by its value (``city_admin``…) or its zh-CN label (``市级管理员``…)."""
    for role in Role:
        if text in (role.value, role.label_zh):
            return role
    names = ", ".join(f"{r.value} ({r.label_zh})" for r in Role)
    raise AccountError(f"unknown role {text!r}; roles: {names}")


def check_name(name: str, what: str = "user name") -> str:
    """A user or token name: 1..64 printable characters without spaces, ':' or '/'."""
    if not 0 < len(name) <= MAX_NAME or not name.isprintable() or any(c in name for c in " :/\\"):
        raise AccountError(f"{what} must be 1..{MAX_NAME} printable characters without spaces, ':' or '/'")
    return name


def check_scope(role: Role, district_code: str | None, kindergarten_id: str | None) -> tuple[str | None, str | None]:
    """The (district, kindergarten) a role is bound to; AccountError when they do not fit the role.

    A 区级值班员 needs a Tianjin district code, a 园方 account a kindergarten ID; the
    other roles are city-wide and take neither.
    """
    if role is Role.DISTRICT_DUTY:
        if not district_code:
            raise AccountError(f"role {role.value} ({role.label_zh}) needs --district CODE (e.g. 120101)")
        if district_code not in TIANJIN_DISTRICTS:
            raise AccountError(f"{district_code!r} is not a Tianjin district code (120101..120119)")
        if kindergarten_id:
            raise AccountError(f"role {role.value} takes no kindergarten")
        return district_code, None
    if role is Role.KINDERGARTEN:
        if not kindergarten_id:
            raise AccountError(f"role {role.value} ({role.label_zh}) needs --kindergarten ID (20 digits)")
        if not is_gb_id(kindergarten_id):
            raise AccountError(f"kindergarten id must be 20 digits, not {kindergarten_id!r}")
        return kindergarten_id[:6] if district_code is None else district_code, kindergarten_id
    if district_code or kindergarten_id:
        raise AccountError(f"role {role.value} ({role.label_zh}) is city-wide: no --district or --kindergarten")
    return None, None


@dataclass(frozen=True, slots=True)
class User:
    """A person who logs in to the console."""

    username: str
    password_hash: str
    role: Role
    district_code: str | None = None
    kindergarten_id: str | None = None
    disabled: bool = False
    created_at: float = 0.0
    changed_at: float = 0.0

    def principal(self, source: str) -> Principal:
        """Who a request of this user's session is."""
        return Principal(self.username, self.role, self.district_code, self.kindergarten_id, source, "session")


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A machine client's credential (``Authorization: Bearer kgw_…``); only its digest is stored."""

    name: str
    token_hash: str
    role: Role
    district_code: str | None = None
    kindergarten_id: str | None = None
    metrics_only: bool = False
    created_at: float = 0.0
    revoked_at: float | None = None
    last_used_at: float | None = None

    def principal(self, source: str) -> Principal:
        """Who a request with this token is (the token's name stands for the user name)."""
        return Principal(self.name, self.role, self.district_code, self.kindergarten_id, source, "token")


@dataclass(frozen=True, slots=True)
class Session:
    """A console login: the cookie holds the id, the store only ``id_hash``."""

    id_hash: str
    username: str
    created_at: float
    last_seen_at: float


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long a session lives: ``lifetime`` after login at most, ``idle`` after its last request."""

    idle: float = 3600.0
    lifetime: float = 12 * 3600.0

    def expired(self, session: Session, now: float) -> bool:
        """True once either limit has passed."""
        return now >= session.created_at + self.lifetime or now >= session.last_seen_at + self.idle

    def expires_at(self, session: Session) -> float:
        """When the session ends unless used again."""
        return min(session.created_at + self.lifetime, session.last_seen_at + self.idle)


class AccountStore(Protocol):
    """Where users, sessions and tokens are kept (SQLite now; PostgreSQL later).

    Called from one thread at a time. Writes raise :class:`DuplicateAccount` or
    :class:`UnknownAccount` for names that exist already or do not exist.
    """

    def close(self) -> None: ...

    def add_user(self, user: User) -> None: ...

    def put_user(self, user: User) -> None:
        """Insert or overwrite a user, ending their sessions (the demo's administrator, reset each start)."""

    def get_user(self, username: str) -> User | None: ...

    def list_users(self) -> Sequence[User]: ...

    def set_password(self, username: str, password_hash: str, now: float) -> None:
        """Change the hash and end every session of the user (a stolen cookie dies with the old password)."""

    def set_disabled(self, username: str, disabled: bool, now: float) -> None:
        """Disable (and end every session of) a user, or enable them again."""

    def add_session(self, session: Session) -> None: ...

    def get_session(self, id_hash: str) -> Session | None: ...

    def touch_session(self, id_hash: str, last_seen_at: float) -> None: ...

    def delete_session(self, id_hash: str) -> None: ...

    def delete_sessions_before(self, created_before: float, seen_before: float) -> int:
        """Drop sessions created before one time or last seen before another; returns how many."""

    def add_token(self, token: ApiToken) -> None: ...

    def get_token(self, token_hash: str) -> ApiToken | None: ...

    def list_tokens(self) -> Sequence[ApiToken]: ...

    def revoke_token(self, name: str, now: float) -> None: ...

    def touch_token(self, token_hash: str, last_used_at: float) -> None: ...
