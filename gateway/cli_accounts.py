"""``kgw user …`` and ``kgw token …``: the console's users and the API tokens of machine clients.

They work on the node's SQLite file (``--db``, the gateway's default) directly,
also while the node runs (WAL; the node re-reads a changed account within
30 s). Passwords come from a prompt (twice), ``--password-file`` or the
environment variable ``KGW_PASSWORD``, never from the command line, where
``ps`` would show them. A token is printed once and only its SHA-256 is kept.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from gateway.audit.actions import AuditAction
from gateway.audit.backends import append_now
from gateway.errors import ConfigError, GatewayError
from gateway.security.account_sql import SqlAccountStore
from gateway.security.accounts import ApiToken, User, check_name, check_scope, parse_role, secret_digest
from gateway.security.passwords import check_strength, hash_password
from gateway.security.principal import Role
from gateway.security.service import new_token_secret
from gateway.security.sqlite_accounts import open_account_store

__all__ = ["add_account_commands", "run_account_command"]

DEFAULT_DB = "var/kgw.db"
_ROLES = ", ".join(f"{r.value} ({r.label_zh})" for r in Role)


def add_account_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``user`` and ``token`` commands to the ``kgw`` parser."""
    user = sub.add_parser("user", help="console users: add, passwd, list, disable, enable")
    users = user.add_subparsers(dest="action", required=True)
    add = users.add_parser("add", help="create a user (the first administrator: --role city_admin)")
    add.add_argument("name")
    _scope_args(add)
    _password_args(add)
    passwd = users.add_parser("passwd", help="set a new password (ends the user's sessions)")
    passwd.add_argument("name")
    _password_args(passwd)
    for action, text in (("disable", "disable a user (ends their sessions)"), ("enable", "enable a user again")):
        users.add_parser(action, help=text).add_argument("name")
    users.add_parser("list", help="list users")

    token = sub.add_parser("token", help="API tokens for machine clients and the Prometheus scrape")
    tokens = token.add_subparsers(dest="action", required=True)
    tadd = tokens.add_parser("add", help="create a token and print it once")
    tadd.add_argument("name")
    _scope_args(tadd)
    tadd.add_argument("--metrics-only", action="store_true", help="the token may only read /metrics")
    tokens.add_parser("list", help="list tokens (never their values)")
    tokens.add_parser("revoke", help="revoke a token").add_argument("name")
    for parser in (*users.choices.values(), *tokens.choices.values()):
        parser.add_argument("--db", default=DEFAULT_DB, help=f"the node's SQLite file (default {DEFAULT_DB})")


def _scope_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", required=True, help=f"one of {_ROLES}")
    parser.add_argument("--district", help="district code, for district_duty (e.g. 120101)")
    parser.add_argument("--kindergarten", help="kindergarten ID (20 digits), for kindergarten")


def _password_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--password-file", metavar="FILE", help="read the password from FILE (first line)")


def read_password(args: argparse.Namespace, prompt: Callable[[str], str] = getpass.getpass) -> str:
    """The new password: --password-file, else KGW_PASSWORD, else asked twice on the terminal."""
    if args.password_file:
        try:
            lines = Path(args.password_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read password file: {exc}") from exc
        password = lines[0] if lines else ""
    elif os.environ.get("KGW_PASSWORD"):
        password = os.environ["KGW_PASSWORD"]
    else:
        if not sys.stdin.isatty():
            raise ConfigError("no password: give --password-file FILE or KGW_PASSWORD, or run on a terminal")
        password = prompt(f"new password for {args.name}: ")
        if prompt("again: ") != password:
            raise ConfigError("the passwords differ")
    return check_strength(password)


def _when(at: float | None) -> str:
    return datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S") if at else "-"


def _scope(role: Role, district: str | None, kindergarten: str | None) -> str:
    return kindergarten or district or ("city" if role is not Role.DISTRICT_DUTY else "-")


def run_account_command(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    """Run ``kgw user …`` or ``kgw token …``; GatewayError (exit 2) for what the operator must fix."""
    store = open_account_store(args.db)
    try:
        if args.command == "user":
            change = _user_command(store, args, out)
        else:
            change = _token_command(store, args, out)
    finally:
        store.close()
    if change is not None:  # every change is an audit record in the same file (who: the OS user)
        action = AuditAction.USER_CHANGE if args.command == "user" else AuditAction.TOKEN_CHANGE
        target, detail = change
        append_now(args.db, action, target=target, detail=detail)
    return 0


_Change = tuple[str, dict[str, object]]  # what an audit record says of a change: target, detail


def _user_command(store: SqlAccountStore, args: argparse.Namespace, out: Callable[[str], None]) -> _Change | None:
    now = time.time()
    if args.action == "add":
        role = parse_role(args.role)
        district, kindergarten = check_scope(role, args.district, args.kindergarten)
        name = check_name(args.name)
        if store.get_user(name) is not None:
            raise GatewayError(f"user {name!r} exists already (kgw user passwd {name} changes the password)")
        store.add_user(User(name, hash_password(read_password(args)), role, district, kindergarten, False, now, now))
        out(f"user {name} added: {role.value} ({role.label_zh}) {_scope(role, district, kindergarten)}")
        return name, {"op": "add", "role": role.value, "district": district, "kindergarten": kindergarten}
    elif args.action == "passwd":
        if store.get_user(args.name) is None:
            raise GatewayError(f"no user {args.name!r}")
        store.set_password(args.name, hash_password(read_password(args)), now)
        out(f"password of {args.name} changed; their sessions ended")
        return args.name, {"op": "passwd"}
    elif args.action in ("disable", "enable"):
        store.set_disabled(args.name, args.action == "disable", now)
        out(f"user {args.name} {args.action}d")
        return args.name, {"op": args.action}
    else:
        out(f"{'USER':<20} {'ROLE':<28} {'SCOPE':<22} {'STATE':<9} {'CREATED':<20} CHANGED")
        for u in store.list_users():
            label = f"{u.role.value} ({u.role.label_zh})"
            state = "disabled" if u.disabled else "active"
            scope = _scope(u.role, u.district_code, u.kindergarten_id)
            out(f"{u.username:<20} {label:<28} {scope:<22} {state:<9} {_when(u.created_at):<20} {_when(u.changed_at)}")
        return None


def _token_command(store: SqlAccountStore, args: argparse.Namespace, out: Callable[[str], None]) -> _Change | None:
    now = time.time()
    if args.action == "add":
        role = parse_role(args.role)
        district, kindergarten = check_scope(role, args.district, args.kindergarten)
        secret = new_token_secret()
        name = check_name(args.name, "token name")
        store.add_token(ApiToken(name, secret_digest(secret), role, district, kindergarten, args.metrics_only, now))
        what = "metrics only" if args.metrics_only else f"{role.value} ({role.label_zh})"
        out(f"token {name} added ({what}); it is shown only now:")
        out(secret)
        return name, {"op": "add", "role": role.value, "metrics_only": args.metrics_only}
    elif args.action == "revoke":
        store.revoke_token(args.name, now)
        out(f"token {args.name} revoked")
        return args.name, {"op": "revoke"}
    else:
        out(f"{'TOKEN':<20} {'ROLE':<28} {'SCOPE':<22} {'STATE':<9} {'CREATED':<20} LAST USED")
        for t in store.list_tokens():
            label = "metrics only" if t.metrics_only else f"{t.role.value} ({t.role.label_zh})"
            state = "revoked" if t.revoked_at else "active"
            scope = _scope(t.role, t.district_code, t.kindergarten_id)
            out(f"{t.name:<20} {label:<28} {scope:<22} {state:<9} {_when(t.created_at):<20} {_when(t.last_used_at)}")
        return None
