"""Accounts (issue 10, C2): the login limiter on a fake clock, argon2id hashing, session expiry,
the SQLite account tables, the service's cache and ``kgw user``/``kgw token``."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.cli import main
from gateway.security.account_sql import SqlAccountStore
from gateway.security.accounts import AccountError, Session, SessionPolicy, check_scope, parse_role, secret_digest
from gateway.security.limiter import FailureLimiter
from gateway.security.passwords import WeakPassword, hash_password, verify_password
from gateway.security.principal import Role
from gateway.security.service import AccountService, LoginRefused, LoginThrottled
from gateway.security.sqlite_accounts import open_account_store


def test_limiter_blocks_after_the_limit_until_the_window_passes():
    limiter = FailureLimiter(limit=3, window=60.0)
    for t in (0.0, 10.0, 20.0):
        assert limiter.retry_after("u", t) == 0
        limiter.failed("u", t)
    assert limiter.retry_after("u", 21.0) == pytest.approx(39.0)  # until the first failure leaves the window
    assert limiter.retry_after("other", 21.0) == 0
    assert limiter.retry_after("u", 60.0) == 0  # 3rd-oldest gone: 2 left in the window
    limiter.failed("u", 61.0)
    assert limiter.retry_after("u", 62.0) > 0
    limiter.succeeded("u")
    assert limiter.retry_after("u", 62.0) == 0


def test_limiter_memory_is_capped():
    limiter = FailureLimiter(limit=2, window=60.0, max_keys=100)
    for i in range(1000):
        limiter.failed(f"name-{i}", 0.0)
    assert len(limiter) == 100


def test_argon2id_hashes_and_the_minimum_length():
    stored = hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse battery")
    assert not verify_password(stored, "correct horse batterY")
    assert not verify_password(None, "correct horse battery")  # unknown user: same work, no
    assert not verify_password("not a hash", "x")
    with pytest.raises(WeakPassword):
        hash_password("short")


def test_session_expiry_idle_and_absolute():
    policy = SessionPolicy(idle=60.0, lifetime=300.0)
    session = Session("h", "u", created_at=1000.0, last_seen_at=1000.0)
    assert not policy.expired(session, 1059.0)
    assert policy.expired(session, 1060.0)  # idle
    busy = Session("h", "u", created_at=1000.0, last_seen_at=1290.0)
    assert not policy.expired(busy, 1299.0)
    assert policy.expired(busy, 1300.0)  # absolute, however busy


def test_roles_and_scopes():
    assert parse_role("区级值班员") is Role.DISTRICT_DUTY and parse_role("police") is Role.POLICE
    with pytest.raises(AccountError, match="unknown role"):
        parse_role("root")
    with pytest.raises(AccountError, match="--district"):
        check_scope(Role.DISTRICT_DUTY, None, None)
    with pytest.raises(AccountError, match="Tianjin"):
        check_scope(Role.DISTRICT_DUTY, "110101", None)
    assert check_scope(Role.KINDERGARTEN, None, "12010100112160000100") == ("120101", "12010100112160000100")
    with pytest.raises(AccountError, match="city-wide"):
        check_scope(Role.CITY_ADMIN, "120101", None)


async def test_service_sessions_cache_expiry_and_password_change(db_url):
    now = [1_000_000.0]
    service = AccountService(
        db_url, policy=SessionPolicy(idle=60.0, lifetime=600.0), clock=lambda: now[0], cache_ttl=5.0
    )
    await service.open()
    try:
        from gateway.security.accounts import User

        user = User("duty", hash_password("duty-password-1"), Role.CITY_ADMIN, created_at=now[0], changed_at=now[0])
        await service.call(SqlAccountStore.add_user, user)
        with pytest.raises(LoginRefused):
            await service.login("duty", "wrong-password", "10.0.0.1")
        session_id, principal = await service.login("duty", "duty-password-1", "10.0.0.1")
        assert principal.username == "duty" and len(session_id) >= 43  # 256 bits
        stored = await service.call(SqlAccountStore.get_session, secret_digest(session_id))
        assert stored is not None and await service.call(SqlAccountStore.get_session, session_id) is None
        now[0] += 50
        assert await service.session_principal(session_id, "10.0.0.1") is not None  # used: idle restarts
        now[0] += 50
        assert await service.session_principal(session_id, "10.0.0.1") is not None
        now[0] += 61
        assert await service.session_principal(session_id, "10.0.0.1") is None  # idle expiry
        session_id, _ = await service.login("duty", "duty-password-1", "10.0.0.1")
        await service.call(SqlAccountStore.set_password, "duty", hash_password("new-password-22"), now[0])
        now[0] += 6  # past the cache's ttl: the store says the session is gone
        assert await service.session_principal(session_id, "10.0.0.1") is None
        for _ in range(5):  # the old password, 5 times (a success had cleared the earlier failure)
            with pytest.raises(LoginRefused):
                await service.login("duty", "duty-password-1", "10.0.0.2")
        with pytest.raises(LoginThrottled):
            await service.login("duty", "new-password-22", "10.0.0.3")  # the user name is throttled
    finally:
        await service.close()


def test_cli_users_and_tokens(tmp_path, db_url, monkeypatch, capsys):
    db = db_url  # both backends: on PostgreSQL every gateway node shares these users
    monkeypatch.setenv("KGW_PASSWORD", "first-admin-password")
    assert main(["user", "add", "chen", "--role", "city_admin", "--db", db]) == 0
    assert main(["user", "add", "chen", "--role", "city_admin", "--db", db]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["user", "add", "li", "--role", "district_duty", "--db", db]) == 2
    assert "--district" in capsys.readouterr().err
    assert main(["user", "add", "li", "--role", "superuser", "--db", db]) == 2
    assert "unknown role" in capsys.readouterr().err
    monkeypatch.setenv("KGW_PASSWORD", "short")
    assert main(["user", "add", "li", "--role", "district_duty", "--district", "120101", "--db", db]) == 2
    assert "at least 10" in capsys.readouterr().err
    secret = tmp_path / "pw"
    secret.write_text("li-password-123\n")
    monkeypatch.delenv("KGW_PASSWORD")
    argv = ["user", "add", "li", "--role", "district_duty", "--district", "120101", "--password-file", str(secret)]
    assert main([*argv, "--db", db]) == 0
    assert main(["user", "disable", "li", "--db", db]) == 0
    capsys.readouterr()
    assert main(["user", "list", "--db", db]) == 0
    listing = capsys.readouterr().out
    assert "chen" in listing and "市级管理员" in listing and "120101" in listing and "disabled" in listing
    assert main(["token", "add", "prometheus", "--role", "city_admin", "--metrics-only", "--db", db]) == 0
    token = capsys.readouterr().out.splitlines()[-1]
    assert token.startswith("kgw_")
    store = open_account_store(db)
    try:
        found = store.get_token(secret_digest(token))
        assert found is not None and found.metrics_only
        if db.startswith("sqlite:///"):
            with open(db.removeprefix("sqlite:///"), "rb") as raw:
                assert token.encode() not in raw.read()  # only the digest is stored
        user = store.get_user("li")
        assert user is not None and user.disabled and verify_password(user.password_hash, "li-password-123")
    finally:
        store.close()
    assert main(["token", "revoke", "prometheus", "--db", db]) == 0
    assert main(["token", "revoke", "prometheus", "--db", db]) == 2
    capsys.readouterr()
    assert main(["token", "list", "--db", db]) == 0
    assert "revoked" in capsys.readouterr().out
    # Every change, and only the changes, is an audit record of the OS user, in the same file.
    assert main(["audit", "export", "--db", db, "--format", "jsonl"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    changes = [(r["action"], r["target"], json.loads(r["detail"])["op"]) for r in records]
    assert changes == [
        ("user_change", "chen", "add"),
        ("user_change", "li", "add"),
        ("user_change", "li", "disable"),
        ("token_change", "prometheus", "add"),
        ("token_change", "prometheus", "revoke"),
    ], records
    assert all(r["via"] == "cli" and r["actor"].startswith("os:") for r in records)
    assert main(["audit", "verify", "--db", db]) == 0


def test_no_password_without_a_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KGW_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(""))
    assert main(["user", "add", "x", "--role", "police", "--db", str(tmp_path / "k.db")]) == 2
    assert "--password-file" in capsys.readouterr().err


def test_login_run_in_threads_keeps_the_loop_free(tmp_path):
    async def go() -> None:
        service = AccountService(str(tmp_path / "k.db"))
        await service.open()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        task = asyncio.create_task(ticker())
        with pytest.raises(LoginRefused):
            await service.login("nobody", "whatever-password", "x")  # argon2 on a worker thread
        task.cancel()
        await service.close()
        assert ticks >= 2

    asyncio.run(go())
