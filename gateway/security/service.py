"""The accounts of a running node: logins, session and token checks, off the event loop and cached.

The store has its own worker thread (like the registry and alarm stores), and
password hashing (argon2id, ~0.1 s of CPU) runs on the default executor, so
neither ever blocks the loop. An authenticated request costs a dictionary
lookup: sessions and tokens are cached for ``cache_ttl`` seconds, after which
they are read again, so a password change, a disabled user or a revoked token
made with ``kgw user``/``kgw token`` in another process takes effect within
that time. A session's last request is written back at most every
``touch_every`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, TypeVar

from gateway.errors import GatewayError
from gateway.security.account_sql import SqlAccountStore
from gateway.security.accounts import (
    TOKEN_PREFIX,
    ApiToken,
    Session,
    SessionPolicy,
    User,
    check_name,
    check_scope,
    secret_digest,
)
from gateway.security.limiter import FailureLimiter
from gateway.security.passwords import verify_password
from gateway.security.principal import Principal, Role
from gateway.security.sqlite_accounts import open_account_store

__all__ = ["AccountService", "LoginRefused", "LoginThrottled", "new_token_secret"]

log = logging.getLogger("kgw.accounts")

T = TypeVar("T")
P = ParamSpec("P")

USER_FAILURES = (5, 300.0)  # 5 wrong passwords for one user name within 5 minutes
SOURCE_FAILURES = (20, 300.0)  # 20 failures from one address within 5 minutes
MAX_CACHED = 10_000


class LoginRefused(GatewayError):
    """Wrong user name or password, or a disabled user: one answer for all three."""


class LoginThrottled(GatewayError):
    """Too many failed logins for this user name or address; try again after ``retry_after`` s."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins; retry after {retry_after:.0f} s")
        self.retry_after = retry_after


def new_token_secret() -> str:
    """A fresh API token value: the prefix and 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass
class _Cached:
    principal_of: Callable[[str], Principal]
    checked_at: float  # when the store was last asked
    last_seen: float  # the latest request (sessions) or use (tokens)
    persisted_seen: float
    metrics_only: bool = False
    session: Session | None = None


class AccountService:
    """Users, sessions and tokens of one node (its ``--db`` file)."""

    def __init__(
        self,
        url: str,
        *,
        policy: SessionPolicy | None = None,
        static_tokens: Sequence[ApiToken] = (),
        clock: Callable[[], float] = time.time,
        cache_ttl: float = 30.0,
        touch_every: float = 60.0,
    ) -> None:
        self.url = url
        self.policy = policy or SessionPolicy()
        self.clock = clock
        self.cache_ttl = cache_ttl
        self.touch_every = touch_every
        self.static_tokens = {t.token_hash: t for t in static_tokens}
        self.by_user = FailureLimiter(*USER_FAILURES)
        self.by_source = FailureLimiter(*SOURCE_FAILURES)
        self._store: SqlAccountStore | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kgw-accounts")
        self._sessions: dict[str, _Cached] = {}
        self._tokens: dict[str, _Cached] = {}
        self._background: set[asyncio.Future[None]] = set()

    # --- lifecycle --------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (and migrate) the account tables; drop sessions that expired while we were down."""
        self._store = await self._run(open_account_store, self.url)
        now = self.clock()
        await self.call(SqlAccountStore.delete_sessions_before, now - self.policy.lifetime, now - self.policy.idle)

    async def close(self) -> None:
        """Write back pending work, close the store and end the thread."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._store is not None:
            await self._run(self._store.close)
            self._store = None
        self._executor.shutdown(wait=True)

    async def call(self, fn: Callable[Concatenate[SqlAccountStore, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(store, ...)`` on the store's thread."""
        store = self._store
        assert store is not None, "AccountService.open() first"
        return await self._run(lambda: fn(store, *args, **kwargs))

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _later(self, fn: Callable[[SqlAccountStore], None]) -> None:
        """A write nobody waits for (last-seen times), kept until done so close() can wait."""
        future = asyncio.ensure_future(self.call(fn))
        self._background.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[None]) -> None:
        self._background.discard(future)
        if not future.cancelled() and (exc := future.exception()) is not None:
            log.warning("account store write failed: %s", exc)

    # --- logins -----------------------------------------------------------------------------------

    async def login(self, username: str, password: str, source: str) -> tuple[str, Principal]:
        """A new session id (to put in the cookie) and its principal.

        Raises LoginThrottled (before any password work) or LoginRefused (the same
        for an unknown user, a wrong password and a disabled user, after the same work).
        """
        now = self.clock()
        user_key = username.casefold()[:128]
        wait = max(self.by_user.retry_after(user_key, now), self.by_source.retry_after(source, now))
        if wait > 0:
            raise LoginThrottled(wait)
        user = await self.call(SqlAccountStore.get_user, username) if 0 < len(username) <= 128 else None
        stored = user.password_hash if user is not None else None
        ok = await asyncio.to_thread(verify_password, stored, password)
        now = self.clock()
        if not ok or user is None or user.disabled:
            self.by_user.failed(user_key, now)
            self.by_source.failed(source, now)
            raise LoginRefused("wrong user name or password")
        self.by_user.succeeded(user_key)
        session_id = secrets.token_urlsafe(32)  # 256 bits
        session = Session(secret_digest(session_id), user.username, now, now)
        await self.call(SqlAccountStore.add_session, session)
        self._cache_session(session, user, now)
        await self.call(SqlAccountStore.delete_sessions_before, now - self.policy.lifetime, now - self.policy.idle)
        return session_id, user.principal(source)

    async def logout(self, session_id: str) -> None:
        """End a session (an unknown id is no error)."""
        id_hash = secret_digest(session_id)
        self._sessions.pop(id_hash, None)
        await self.call(SqlAccountStore.delete_session, id_hash)

    def _cache_session(self, session: Session, user: User, now: float) -> None:
        if len(self._sessions) >= MAX_CACHED:
            self._sessions.clear()
        self._sessions[session.id_hash] = _Cached(
            user.principal, now, session.last_seen_at, session.last_seen_at, session=session
        )

    async def session_principal(self, session_id: str, source: str) -> Principal | None:
        """The principal of a live session cookie; None for an unknown, expired or revoked one."""
        id_hash = secret_digest(session_id)
        now = self.clock()
        cached = self._sessions.get(id_hash)
        if cached is None or now - cached.checked_at >= self.cache_ttl:
            session, user = await self.call(_session_and_user, id_hash)
            if session is None or user is None or user.disabled:
                self._sessions.pop(id_hash, None)
                return None
            self._cache_session(session, user, now)
            if cached is not None:  # a refresh: keep what this node saw but did not write back yet
                fresh = self._sessions[id_hash]
                fresh.last_seen = max(fresh.last_seen, cached.last_seen)
                fresh.persisted_seen = max(fresh.persisted_seen, cached.persisted_seen)
            cached = self._sessions[id_hash]
        assert cached.session is not None
        seen = Session(id_hash, cached.session.username, cached.session.created_at, cached.last_seen)
        if self.policy.expired(seen, now):
            self._sessions.pop(id_hash, None)
            self._later(lambda store: store.delete_session(id_hash))
            return None
        cached.last_seen = now
        if now - cached.persisted_seen >= self.touch_every:
            cached.persisted_seen = now
            self._later(lambda store: store.touch_session(id_hash, now))
        return cached.principal_of(source)

    def session_expires_at(self, session_id: str) -> float | None:
        """When a cached session ends unless used again (for the cookie's Max-Age)."""
        cached = self._sessions.get(secret_digest(session_id))
        if cached is None or cached.session is None:
            return None
        return self.policy.expires_at(
            Session(cached.session.id_hash, cached.session.username, cached.session.created_at, cached.last_seen)
        )

    # --- tokens -----------------------------------------------------------------------------------

    async def token_principal(self, secret: str, source: str) -> tuple[Principal, bool] | None:
        """(principal, metrics_only) of a valid API token; None for an unknown or revoked one."""
        token_hash = secret_digest(secret)
        static = self.static_tokens.get(token_hash)
        if static is not None:
            return static.principal(source), static.metrics_only
        now = self.clock()
        cached = self._tokens.get(token_hash)
        if cached is None or now - cached.checked_at >= self.cache_ttl:
            token = await self.call(SqlAccountStore.get_token, token_hash)
            if token is None or token.revoked_at is not None:
                self._tokens.pop(token_hash, None)
                return None
            if len(self._tokens) >= MAX_CACHED:
                self._tokens.clear()
            seen = token.last_used_at or 0.0
            cached = self._tokens[token_hash] = _Cached(token.principal, now, seen, seen, token.metrics_only)
        if now - cached.persisted_seen >= self.touch_every:
            cached.persisted_seen = now
            self._later(lambda store: store.touch_token(token_hash, now))
        return cached.principal_of(source), cached.metrics_only

    async def create_token(
        self,
        name: str,
        role: Role,
        *,
        district_code: str | None = None,
        kindergarten_id: str | None = None,
        metrics_only: bool = False,
    ) -> str:
        """A new API token stored by its digest; returns the value (shown once, never stored)."""
        district_code, kindergarten_id = check_scope(role, district_code, kindergarten_id)
        secret = new_token_secret()
        token = ApiToken(
            check_name(name, "token name"),
            secret_digest(secret),
            role,
            district_code,
            kindergarten_id,
            metrics_only,
            self.clock(),
        )
        await self.call(SqlAccountStore.add_token, token)
        return secret


def _session_and_user(store: SqlAccountStore, id_hash: str) -> tuple[Session | None, User | None]:
    session = store.get_session(id_hash)
    return session, (store.get_user(session.username) if session is not None else None)
