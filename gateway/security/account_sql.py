"""The account store's SQL, shared by the SQLite and PostgreSQL backends.

:class:`SqlAccountStore` implements :class:`~gateway.security.accounts.AccountStore`
once, with ``?`` placeholders, over one hook each backend provides: ``_tx()``, a
context manager yielding a connection inside one transaction that maps a
constraint failure to :class:`~gateway.security.accounts.DuplicateAccount` and
any other database failure to :class:`~gateway.errors.StoreError`. The tables
(``account_user``, ``account_session``, ``account_token``) have their own schema
version (``account_schema``), in each backend's dialect.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any, Final

from gateway.security.accounts import ApiToken, DuplicateAccount, Session, UnknownAccount, User
from gateway.security.principal import Role

__all__ = ["SqlAccountStore"]

_USER_COLS: Final = "username, password_hash, role, district_code, kindergarten_id, disabled, created_at, changed_at"
_TOKEN_COLS: Final = (
    "name, token_hash, role, district_code, kindergarten_id, metrics_only, created_at, revoked_at, last_used_at"
)
# Insert or overwrite (SQLite >= 3.24 and PostgreSQL alike); sessions are ended by the caller.
_USER_UPSERT: Final = (
    f"INSERT INTO account_user ({_USER_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (username) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _USER_COLS.split(", ") if c != "username")
)


def _user(row: tuple[Any, ...]) -> User:
    username, password_hash, role, district, kindergarten, disabled, created, changed = row
    return User(username, password_hash, Role(role), district, kindergarten, bool(disabled), created, changed)


def _token(row: tuple[Any, ...]) -> ApiToken:
    name, token_hash, role, district, kindergarten, metrics_only, created, revoked, used = row
    return ApiToken(name, token_hash, Role(role), district, kindergarten, bool(metrics_only), created, revoked, used)


class SqlAccountStore(ABC):
    """Users, sessions and API tokens in SQL (module doc). One thread at a time."""

    @abstractmethod
    def close(self) -> None:
        """Disconnect (a second call does nothing)."""

    @abstractmethod
    def _tx(self) -> AbstractContextManager[Any]:
        """One transaction on the backend's connection."""

    def _one(self, sql: str, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        with self._tx() as conn:
            row: tuple[Any, ...] | None = conn.execute(sql, args).fetchone()
            return row

    # --- users ------------------------------------------------------------------------------------

    def add_user(self, user: User) -> None:
        """Insert a new user; DuplicateAccount when the name is taken."""
        try:
            with self._tx() as conn:
                conn.execute(
                    f"INSERT INTO account_user ({_USER_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        user.username,
                        user.password_hash,
                        user.role.value,
                        user.district_code,
                        user.kindergarten_id,
                        int(user.disabled),
                        user.created_at,
                        user.changed_at,
                    ),
                )
        except DuplicateAccount as exc:
            raise DuplicateAccount(f"user {user.username!r} exists already") from exc

    def put_user(self, user: User) -> None:
        """Insert or overwrite a user (the demo's administrator) and end the old sessions."""
        with self._tx() as conn:
            conn.execute("DELETE FROM account_session WHERE username = ?", (user.username,))
            conn.execute(
                _USER_UPSERT,
                (
                    user.username,
                    user.password_hash,
                    user.role.value,
                    user.district_code,
                    user.kindergarten_id,
                    int(user.disabled),
                    user.created_at,
                    user.changed_at,
                ),
            )

    def get_user(self, username: str) -> User | None:
        """One user by name."""
        row = self._one(f"SELECT {_USER_COLS} FROM account_user WHERE username = ?", (username,))
        return None if row is None else _user(row)

    def list_users(self) -> list[User]:
        """Every user, by name."""
        with self._tx() as conn:
            return [_user(r) for r in conn.execute(f"SELECT {_USER_COLS} FROM account_user ORDER BY username")]

    def set_password(self, username: str, password_hash: str, now: float) -> None:
        """New hash; every session of the user ends."""
        with self._tx() as conn:
            changed = conn.execute(
                "UPDATE account_user SET password_hash = ?, changed_at = ? WHERE username = ?",
                (password_hash, now, username),
            ).rowcount
            if not changed:
                raise UnknownAccount(f"no user {username!r}")
            conn.execute("DELETE FROM account_session WHERE username = ?", (username,))

    def set_disabled(self, username: str, disabled: bool, now: float) -> None:
        """Disable (ending every session) or enable a user."""
        with self._tx() as conn:
            changed = conn.execute(
                "UPDATE account_user SET disabled = ?, changed_at = ? WHERE username = ?",
                (int(disabled), now, username),
            ).rowcount
            if not changed:
                raise UnknownAccount(f"no user {username!r}")
            if disabled:
                conn.execute("DELETE FROM account_session WHERE username = ?", (username,))

    # --- sessions ---------------------------------------------------------------------------------

    def add_session(self, session: Session) -> None:
        """Store a new session (its id's digest only)."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO account_session (id_hash, username, created_at, last_seen_at) VALUES (?, ?, ?, ?)",
                (session.id_hash, session.username, session.created_at, session.last_seen_at),
            )

    def get_session(self, id_hash: str) -> Session | None:
        """A session by its id's digest."""
        row = self._one(
            "SELECT id_hash, username, created_at, last_seen_at FROM account_session WHERE id_hash = ?", (id_hash,)
        )
        return None if row is None else Session(*row)

    def touch_session(self, id_hash: str, last_seen_at: float) -> None:
        """Record the session's latest request (idle expiry)."""
        with self._tx() as conn:
            conn.execute("UPDATE account_session SET last_seen_at = ? WHERE id_hash = ?", (last_seen_at, id_hash))

    def delete_session(self, id_hash: str) -> None:
        """Log out."""
        with self._tx() as conn:
            conn.execute("DELETE FROM account_session WHERE id_hash = ?", (id_hash,))

    def delete_sessions_before(self, created_before: float, seen_before: float) -> int:
        """Drop expired sessions; returns how many."""
        with self._tx() as conn:
            return int(
                conn.execute(
                    "DELETE FROM account_session WHERE created_at < ? OR last_seen_at < ?",
                    (created_before, seen_before),
                ).rowcount
            )

    # --- API tokens -------------------------------------------------------------------------------

    def add_token(self, token: ApiToken) -> None:
        """Store a new token (its value's digest only); DuplicateAccount when the name is taken."""
        try:
            with self._tx() as conn:
                conn.execute(
                    f"INSERT INTO account_token ({_TOKEN_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        token.name,
                        token.token_hash,
                        token.role.value,
                        token.district_code,
                        token.kindergarten_id,
                        int(token.metrics_only),
                        token.created_at,
                        token.revoked_at,
                        token.last_used_at,
                    ),
                )
        except DuplicateAccount as exc:
            raise DuplicateAccount(f"token {token.name!r} exists already") from exc

    def get_token(self, token_hash: str) -> ApiToken | None:
        """A token by its value's digest (revoked ones too: the caller checks)."""
        row = self._one(f"SELECT {_TOKEN_COLS} FROM account_token WHERE token_hash = ?", (token_hash,))
        return None if row is None else _token(row)

    def list_tokens(self) -> list[ApiToken]:
        """Every token, by name."""
        with self._tx() as conn:
            return [_token(r) for r in conn.execute(f"SELECT {_TOKEN_COLS} FROM account_token ORDER BY name")]

    def revoke_token(self, name: str, now: float) -> None:
        """Revoke a token for good (kept for the record)."""
        with self._tx() as conn:
            changed = conn.execute(
                "UPDATE account_token SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (now, name)
            ).rowcount
            if not changed:
                raise UnknownAccount(f"no active token {name!r}")

    def touch_token(self, token_hash: str, last_used_at: float) -> None:
        """Record the token's latest use."""
        with self._tx() as conn:
            conn.execute("UPDATE account_token SET last_used_at = ? WHERE token_hash = ?", (last_used_at, token_hash))
