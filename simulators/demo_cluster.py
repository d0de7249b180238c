"""``kgw demo --gateways N``: the city split over N gateway processes on one database, without Docker.

The topology of docker-compose.yml on one machine: N children ``python -m
gateway.cli gateway --node gwK --id … --districts … --peer …``, each with its
own SIP port, console port and media port range, splitting the 16 districts;
all on one database (an embedded PostgreSQL from :mod:`simulators.postgres`
unless a URL is given); the platforms and the simulated city run in the demo
process as with one gateway. Every simulated device knows ONE city address —
gateway 1's — and the 302 redirects (gateway/cluster.py) send it to the
process serving its district.

Each child's remaining settings (upper platforms with their passwords, the
simulator's API token, MQTT, timings) go in a TOML file of its own in the data
directory (mode 0600: it holds the upper passwords); its log goes to
``gateway-gwK.log`` there. Stopping sends SIGTERM to every child (they
unregister upward and flush their stores), SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from gateway.errors import GatewayError
from gateway.gb28181.ids import TIANJIN_DISTRICTS
from simulators.demo_ports import PortUse

__all__ = [
    "ChildFailed",
    "GatewayChild",
    "GatewayPlan",
    "child_env",
    "plan_gateways",
    "split_city_ports",
    "stop_all",
    "toml_config",
]

log = logging.getLogger("kgw.demo")
READY_TIMEOUT = 60.0  # s for a child to answer /healthz
STOP_GRACE = 15.0  # s for a child to stop after SIGTERM before SIGKILL
HTTP_OFFSET = 20  # gateway K>1's console: http_port + 20 + K-1 (after the platforms and the control port)
MEDIA_BASE, MEDIA_SPAN = 30000, 1000  # gateway K's RTP ports: 30000 + (K-1)*1000 … +999


class ChildFailed(GatewayError):
    """A gateway child exited or never answered; the message ends with its last log lines."""


@dataclass(frozen=True, slots=True)
class GatewayPlan:
    """One gateway process of the demo: its name, ID, districts, ports and peers."""

    node: str
    gateway_id: str
    districts: tuple[str, ...]
    sip_port: int
    http_port: int
    media_ports: str
    peers: tuple[str, ...]  # --peer values

    def argv(self, config_path: str) -> list[str]:
        """The child's command line."""
        argv = [sys.executable, "-m", "gateway.cli", "gateway", "--config", config_path, "--node", self.node]
        argv += ["--id", self.gateway_id, "--districts", ",".join(self.districts)]
        argv += ["--sip-port", str(self.sip_port), "--http-port", str(self.http_port)]
        for peer in self.peers:
            argv += ["--peer", peer]
        return argv


def plan_gateways(count: int, sip_port: int, http_port: int) -> list[GatewayPlan]:
    """Split the 16 districts over ``count`` gateways (contiguous groups by civil code, sizes differing by one)."""
    codes = sorted(TIANJIN_DISTRICTS)
    if not 1 <= count <= len(codes):
        raise ValueError(f"--gateways must be 1..{len(codes)}")
    groups: list[tuple[str, ...]] = []
    start = 0
    for index in range(count):
        size = len(codes) // count + (1 if index < len(codes) % count else 0)
        groups.append(tuple(codes[start : start + size]))
        start += size
    plans = []
    for index, districts in enumerate(groups):
        plans.append(
            GatewayPlan(
                node=f"gw{index + 1}",
                gateway_id=f"120100000020900{index + 1:05d}",
                districts=districts,
                sip_port=sip_port + index,
                http_port=http_port if index == 0 else http_port + HTTP_OFFSET + index - 1,
                media_ports=f"{MEDIA_BASE + index * MEDIA_SPAN}-{MEDIA_BASE + index * MEDIA_SPAN + MEDIA_SPAN - 1}",
                peers=(),
            )
        )
    return [
        GatewayPlan(
            p.node,
            p.gateway_id,
            p.districts,
            p.sip_port,
            p.http_port,
            p.media_ports,
            tuple(f"{','.join(o.districts)}=127.0.0.1:{o.sip_port}/{o.gateway_id}" for o in plans if o.node != p.node),
        )
        for p in plans
    ]


def split_city_ports(plan: GatewayPlan) -> list[PortUse]:
    """The fixed ports a gateway child binds (for :func:`~simulators.demo_ports.ensure_free`)."""
    return [
        PortUse(plan.sip_port, f"gateway {plan.node} SIP", ("udp", "tcp")),
        PortUse(plan.http_port, f"gateway {plan.node} console/API"),
    ]


def toml_config(settings: dict[str, Any], uppers: Sequence[dict[str, Any]], tokens: Sequence[dict[str, Any]]) -> str:
    """A gateway TOML file: ``[gateway]`` settings, ``[[upper_platforms]]`` and ``[[api_tokens]]``."""
    lines = ["[gateway]"]
    lines += [f"{key} = {_toml(value)}" for key, value in settings.items()]
    for table, rows in (("upper_platforms", uppers), ("api_tokens", tokens)):
        for row in rows:
            lines += ["", f"[[{table}]]", *(f"{key} = {_toml(value)}" for key, value in row.items())]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string is a JSON string


class GatewayChild:
    """One running ``kgw gateway`` child process."""

    def __init__(self, plan: GatewayPlan, data_dir: Path, config_text: str, env: dict[str, str]) -> None:
        self.plan = plan
        self.config_path = data_dir / f"gateway-{plan.node}.toml"
        self.log_path = data_dir / f"gateway-{plan.node}.log"
        self.config_text = config_text
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self._log: TextIO | None = None

    def start(self) -> None:
        """Write the config (0600) and start the process."""
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(self.config_text)
        self._log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
            self.plan.argv(str(self.config_path)),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,  # the terminal's Ctrl-C reaches the demo, which stops us in order
        )

    async def ready(self, scheme: str, timeout: float = READY_TIMEOUT) -> None:
        """Wait until the console answers /healthz; RuntimeError when the process died or never answered."""
        url = f"{scheme}://127.0.0.1:{self.plan.http_port}/healthz"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise ChildFailed(f"gateway {self.plan.node} exited ({self.log_path}):\n{self.log_tail()}")
            if await asyncio.to_thread(_answers, url):
                return
            await asyncio.sleep(0.2)
        raise ChildFailed(f"gateway {self.plan.node} did not answer {url} within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 8) -> str:
        """The end of the child's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def stop(self, grace: float = STOP_GRACE) -> int | None:
        """SIGTERM, wait up to ``grace`` s, then SIGKILL; the exit status."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, grace)
            except subprocess.TimeoutExpired:
                log.warning("gateway %s did not stop within %.0f s: killing it", self.plan.node, grace)
                process.kill()
                await asyncio.to_thread(process.wait)
        if self._log is not None:
            self._log.close()
            self._log = None
        return process.returncode if process is not None else None


def _answers(url: str) -> bool:
    import ssl  # noqa: PLC0415

    context = ssl._create_unverified_context()  # noqa: S323 (our own loopback child, its demo certificate)
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310 (loopback)
            return int(response.status) == 200
    except OSError:
        return False


def child_env() -> dict[str, str]:
    """The environment of a child: ours, with this checkout first on the import path."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    paths = [root, str(Path(root) / "platform"), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


async def stop_all(children: Sequence[GatewayChild]) -> None:
    """Stop every child at once (each unregisters upward and flushes)."""
    with contextlib.suppress(Exception):
        await asyncio.gather(*(child.stop() for child in children))
