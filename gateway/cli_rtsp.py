"""``kgw rtsp add|list|remove``: RTSP cameras through a running gateway's API (issue 13).

Through the API, not the database: the running gateway starts pulling at once, the
change is audited under the token's user, and the scope rules apply. The API token comes
from ``KGW_API_TOKEN``; a camera's password from ``KGW_RTSP_PASSWORD``, ``--password-file``
or the URL — never a plain command-line argument, which every user of the machine sees in ``ps``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gateway.rtsp.model import redact_url

__all__ = ["add_rtsp_commands", "run_rtsp"]


def add_rtsp_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``rtsp`` command and its sub-commands."""
    rtsp = sub.add_parser("rtsp", help="RTSP cameras (no GB/T 28181): add, list, remove through a gateway's API")
    rtsp.add_argument(
        "--api", default="http://127.0.0.1:8080", help="the gateway's HTTP base URL (token: $KGW_API_TOKEN)"
    )
    rtsp_sub = rtsp.add_subparsers(dest="rtsp_command", required=True)
    add = rtsp_sub.add_parser("add", help="add a camera: it becomes a channel of the kindergarten's virtual device")
    add.add_argument("--kindergarten", required=True, help="the kindergarten's 20-digit ID (…2160KKKK00)")
    add.add_argument("--name", required=True, help="the camera's name, e.g. 大门口")
    add.add_argument("--area", default="other", help="entrance, perimeter, playground, classroom, … (default other)")
    add.add_argument("--url", required=True, help="rtsp://host[:port]/path (credentials in it are taken out)")
    add.add_argument("--user", default="", help="the camera's user name")
    add.add_argument("--password-file", metavar="FILE", help="the camera's password (else $KGW_RTSP_PASSWORD)")
    rtsp_sub.add_parser("list", help="list cameras with their connection state")
    remove = rtsp_sub.add_parser("remove", help="remove a camera by its channel ID")
    remove.add_argument("channel_id")


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    token = os.environ.get("KGW_API_TOKEN", "")
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(args.api.rstrip("/") + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, {"error": exc.reason}


def run_rtsp(args: argparse.Namespace) -> int:
    """Run one ``kgw rtsp`` sub-command; 0 on success, 1 when the gateway refused."""
    if args.rtsp_command == "add":
        password = os.environ.get("KGW_RTSP_PASSWORD", "")
        if args.password_file:
            password = Path(args.password_file).read_text(encoding="utf-8").strip()
        body = {
            "kindergarten_id": args.kindergarten,
            "name": args.name,
            "area": args.area,
            "url": args.url,
            "username": args.user,
            "password": password,
        }
        status, answer = _call(args, "POST", "/api/rtsp-cameras", body)
        if status != 201:
            print(
                f"kgw rtsp add: HTTP {status}: {redact_url(str((answer or {}).get('error', answer)))}", file=sys.stderr
            )
            return 1
        print(f"{answer['channel_id']}  {answer['name']}  {answer['url']}  {answer['state_label']}")
        return 0
    if args.rtsp_command == "list":
        status, answer = _call(args, "GET", "/api/rtsp-cameras")
        if status != 200:
            print(f"kgw rtsp list: HTTP {status}: {answer}", file=sys.stderr)
            return 1
        for item in answer["items"]:
            detail = f"  ({item['detail']})" if item["detail"] and item["state"] != "online" else ""
            print(
                f"{item['channel_id']}  {item['kindergarten_id']}  {item['name']}  {item['area']}  {item['url']}  "
                f"{item['state_label']}{detail}"
            )
        return 0
    status, answer = _call(args, "DELETE", f"/api/rtsp-cameras/{args.channel_id}")
    if status != 200:
        print(f"kgw rtsp remove: HTTP {status}: {answer}", file=sys.stderr)
        return 1
    print(f"removed {args.channel_id}")
    return 0
