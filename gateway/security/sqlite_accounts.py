"""SQLite implementation of :class:`~gateway.security.accounts.AccountStore`.

Users, sessions and API tokens live in the node's SQLite file (``--db``) in
tables of their own, with a schema version of their own (``account_schema``),
so they migrate independently of the registry and alarm tables. Like the
alarm store it opens its own connection and is used from its own worker
thread (:class:`~gateway.security.service.AccountService`) or, by ``kgw user``,
synchronously while the gateway runs: WAL and the busy timeout serialise the
writers at the file level.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from gateway.errors import StoreError
from gateway.security.accounts import ApiToken, DuplicateAccount, Session, UnknownAccount, User
from gateway.security.principal import Role
from gateway.sqlite_connect import connect_wal

__all__ = ["SqliteAccountStore", "open_account_store"]

# Append only: _MIGRATIONS[n - 1] takes the account tables from version n-1 to n.
_MIGRATIONS: Final = [
    """
    CREATE TABLE account_user (
        username        TEXT PRIMARY KEY,
        password_hash   TEXT NOT NULL,
        role            TEXT NOT NULL,
        district_code   TEXT,
        kindergarten_id TEXT,
        disabled        INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
        created_at      REAL NOT NULL,
        changed_at      REAL NOT NULL
    );
    CREATE TABLE account_session (
        id_hash      TEXT PRIMARY KEY,
        username     TEXT NOT NULL REFERENCES account_user (username) ON DELETE CASCADE,
        created_at   REAL NOT NULL,
        last_seen_at REAL NOT NULL
    );
    CREATE INDEX account_session_user ON account_session (username);
    CREATE TABLE account_token (
        name            TEXT PRIMARY KEY,
        token_hash      TEXT NOT NULL UNIQUE,
        role            TEXT NOT NULL,
        district_code   TEXT,
        kindergarten_id TEXT,
        metrics_only    INTEGER NOT NULL DEFAULT 0 CHECK (metrics_only IN (0, 1)),
        created_at      REAL NOT NULL,
        revoked_at      REAL,
        last_used_at    REAL
    );
    """,
]

_USER_COLS: Final = "username, password_hash, role, district_code, kindergarten_id, disabled, created_at, changed_at"
_TOKEN_COLS: Final = (
    "name, token_hash, role, district_code, kindergarten_id, metrics_only, created_at, revoked_at, last_used_at"
)


def _user(row: tuple[Any, ...]) -> User:
    username, password_hash, role, district, kindergarten, disabled, created, changed = row
    return User(username, password_hash, Role(role), district, kindergarten, bool(disabled), created, changed)


def _token(row: tuple[Any, ...]) -> ApiToken:
    name, token_hash, role, district, kindergarten, metrics_only, created, revoked, used = row
    return ApiToken(name, token_hash, Role(role), district, kindergarten, bool(metrics_only), created, revoked, used)


class SqliteAccountStore:
    """The account tables on one SQLite file (or ``:memory:``). One thread at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        """Connect (WAL, foreign keys) and create or migrate the account tables."""
        if self._conn is not None:
            return
        try:
            conn = connect_wal(self.path)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite {self.path}: {exc}") from exc
        self._conn = conn
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Disconnect (a second call does nothing)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self._conn is None:
            raise StoreError("account store is not open")
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError as exc:
            raise DuplicateAccount(f"exists already ({exc})") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc

    def _migrate(self) -> None:
        for version, script in enumerate(_MIGRATIONS, start=1):
            with self._tx() as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS account_schema (version INTEGER PRIMARY KEY)")
                current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM account_schema").fetchone()[0]
                if current > len(_MIGRATIONS):
                    raise StoreError(f"account tables v{current} are newer than this code")
                if current >= version:
                    continue
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO account_schema (version) VALUES (?)", (version,))

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
                f"INSERT OR REPLACE INTO account_user ({_USER_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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


def open_account_store(url: str) -> SqliteAccountStore:
    """Open the account tables in the SQLite file a store URL names (``--db``); its folder is made."""
    from gateway.registry.backends import sqlite_path  # noqa: PLC0415 (keeps this module light)

    path = sqlite_path(url)
    if path != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    store = SqliteAccountStore(path)
    store.open()
    return store
