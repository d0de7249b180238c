"""H4: TCP exhaustion — idle floods, slowloris, unfinished bodies, and the alarm path's descriptors.

The review held ~20k idle connections from 4 addresses until every file descriptor was
used: the HTTP API stopped, TCP REGISTERs were reset and the alarm webhook to police failed
with "Too many open files"; slowloris connections stayed open for ever and unfinished 64 KB
bodies grew the RSS by 460 MiB. Here, over real sockets on loopback (attackers on
127.0.0.x hosts other than the devices' 127.0.0.1):

* many idle connections from one host are capped, while a real device registers over TCP
  and the HTTP API answers;
* a SIP message sent a byte at a time, and one with an unfinished body, are closed after
  the header timeout; an HTTP request head sent a byte at a time likewise;
* with a small open-file limit, inbound connections from many hosts stop at the limit
  minus the reserve, and an outgoing HTTP delivery (what the webhook does) still works.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from gateway.gb28181.sip.transport import Transport
from gateway.io.conn_limits import GATE, Refusal
from tests.conftest import free_ports, http_json, wait_for

LIMITS = {"tcp_per_address": 16, "tcp_header_timeout": 2.0, "tcp_idle_timeout": 30.0}


def _open_many(host: str, port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((host, 0))
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        socks.append(sock)
    return socks


def _alive(socks: list[socket.socket], wait: float = 0.5) -> int:
    """How many connections the server still holds open (a closed one reads EOF or a reset)."""
    alive = 0
    for sock in socks:
        sock.settimeout(wait)
        try:
            data = sock.recv(1)
        except TimeoutError:
            alive += 1
            continue
        except OSError:
            continue
        if data:
            alive += 1
    return alive


def _closed_within(sock: socket.socket, deadline: float, drip: bytes) -> float | None:
    """Drip ``drip`` a byte at a time (10 per second); seconds until the server closed, or None."""
    start = time.monotonic()
    sock.settimeout(0.1)
    for i in range(int(deadline * 10)):
        try:
            if i < len(drip):
                sock.send(drip[i : i + 1])
            data = sock.recv(4096)
            if not data or b"SIP/2.0 4" in data or b"SIP/2.0 5" in data or b"HTTP/1.1 4" in data:
                return time.monotonic() - start
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - start
    return None


async def test_idle_flood_from_one_host_is_capped_and_devices_still_register(gateway_factory, fleet_factory):
    service = await gateway_factory(**LIMITS)
    socks = await asyncio.to_thread(_open_many, "127.0.0.3", service.sip_port, 120)
    socks += await asyncio.to_thread(_open_many, "127.0.0.3", service.http_port, 40)
    try:
        alive = await asyncio.to_thread(_alive, socks)
        assert alive <= 2 * LIMITS["tcp_per_address"], f"{alive} of {len(socks)} idle connections from one host held"
        fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2), transport=Transport.TCP)
        devices = list(fleet.agents)
        assert await wait_for(lambda: all(service.directory.devices.get(d) for d in devices), 60)
        status, _ = await http_json(f"http://127.0.0.1:{service.http_port}/healthz")
        assert status == 200
        assert GATE.refused[Refusal.PER_ADDRESS] > 0
    finally:
        for sock in socks:
            sock.close()


async def test_slowloris_and_unfinished_bodies_are_closed(gateway_factory):
    service = await gateway_factory(**LIMITS)
    head = (
        b"REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\n"
        b"Via: SIP/2.0/TCP 127.0.0.4:5060;branch=z9hG4bK-slow\r\n"
        b"From: <sip:34020000001320000001@3402000000>;tag=1\r\nTo: <sip:34020000001320000001@3402000000>\r\n"
        b"Call-ID: slow@127.0.0.4\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n"
    )

    def attempt(port: int, drip: bytes, preamble: bytes = b"") -> float | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.4", 0))
        sock.connect(("127.0.0.1", port))
        try:
            if preamble:
                sock.sendall(preamble)
            return _closed_within(sock, 12.0, drip)
        finally:
            sock.close()

    slow_sip = await asyncio.to_thread(attempt, service.sip_port, head * 3)
    assert slow_sip is not None, "a SIP message dripping a byte every 100 ms stayed open"
    body = head + b"Content-Type: Application/MANSCDP+xml\r\nContent-Length: 60000\r\n\r\n" + b"x" * 1000
    unfinished = await asyncio.to_thread(attempt, service.sip_port, b"", body)
    assert unfinished is not None, "an unfinished 60 KB body stayed open"
    slow_http = await asyncio.to_thread(
        attempt, service.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 200
    )
    assert slow_http is not None, "an HTTP request head dripping a byte every 100 ms stayed open"
    status, _ = await http_json(f"http://127.0.0.1:{service.http_port}/healthz")
    assert status == 200


_ATTACKER = textwrap.dedent(
    """
    import socket, sys, time
    port, hosts, per_host = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    held = []
    for h in range(hosts):
        for _ in range(per_host):
            s = socket.socket()
            s.bind((f"127.0.1.{h + 1}", 0))
            try:
                s.connect(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            held.append(s)
    print(len(held), flush=True)
    sys.stdin.read()
    """
)

_RECEIVER = textwrap.dedent(
    """
    import http.server, sys
    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204); self.end_headers()
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
    """
)


async def test_fd_reserve_keeps_outgoing_deliveries_working(gateway_factory):
    """A small open-file limit: inbound connections from many hosts stop short; the webhook path still connects."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    service = await gateway_factory(tcp_per_address=1000, fd_reserve=64)
    used = len(os.listdir("/proc/self/fd"))
    limit = used + 300
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    GATE.configure(GATE.limits, nofile=limit)
    receiver_port = free_ports(1)
    receiver = subprocess.Popen([sys.executable, "-c", _RECEIVER, str(receiver_port)])
    attacker = subprocess.Popen(
        [sys.executable, "-c", _ATTACKER, str(service.sip_port), "40", "20"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard)),  # the attacker has its own
    )
    try:
        assert attacker.stdout is not None
        await asyncio.to_thread(attacker.stdout.readline)  # the attacker holds what it could open
        await asyncio.sleep(0.5)

        def deliver() -> int:
            import urllib.request  # noqa: PLC0415

            request = urllib.request.Request(f"http://127.0.0.1:{receiver_port}/alarm", data=b"{}", method="POST")
            deadline = time.monotonic() + 20
            while True:
                try:
                    with urllib.request.urlopen(request, timeout=5) as response:
                        return int(response.status)
                except ConnectionRefusedError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)

        assert await asyncio.to_thread(deliver) == 204, "the alarm webhook's outgoing connection works"
        assert GATE.refused[Refusal.FD_RESERVE] > 0, "inbound connections stopped at the limit minus the reserve"
        assert len(os.listdir("/proc/self/fd")) < limit - 16
    finally:
        with contextlib.suppress(Exception):
            attacker.communicate("", timeout=10)
        receiver.kill()
        receiver.wait()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        GATE.configure(GATE.limits, nofile=soft)


@pytest.fixture(autouse=True)
def _restore_gate():
    limits, nofile = GATE.limits, GATE.nofile
    yield
    GATE.configure(limits, nofile=nofile)
