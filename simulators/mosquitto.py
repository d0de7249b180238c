"""A real Mosquitto broker on a loopback ephemeral port (tests, benchmarks, ``kgw demo``).

The broker keeps persistent sessions on disk (``persistence true``) so a
restart on the same port behaves like a production broker coming back. It is
the Debian ``mosquitto`` package's binary, started as a child process.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

__all__ = ["MOSQUITTO", "MOSQUITTO_PASSWD", "BrokerError", "MosquittoBroker", "mosquitto_available"]

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
START_TIMEOUT = 10.0


class BrokerError(RuntimeError):
    """The test broker could not be started or stopped."""


def _free_tcp_port() -> int:
    """A loopback TCP port that nobody holds right now (bind port 0 and let the kernel pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MosquittoBroker:
    """One Mosquitto process with its own config, password file, persistence and log in a temp dir."""

    def __init__(self, users: dict[str, str] | None = None, *, port: int | None = None) -> None:
        if not os.access(MOSQUITTO, os.X_OK):
            raise BrokerError(f"{MOSQUITTO} is missing: run scripts/setup.sh to install Mosquitto")
        self.users = dict(users or {})
        self.port = port or _free_tcp_port()
        self.dir = Path(tempfile.mkdtemp(prefix="kgw-mosquitto-"))
        self.log_path = self.dir / "mosquitto.log"
        self.config_path = self.dir / "mosquitto.conf"
        self._process: asyncio.subprocess.Process | None = None
        self._write_config()

    # --- configuration ---------------------------------------------------------------

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence true",
            f"persistence_location {self.dir}/",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if os.geteuid() == 0:
            # Mosquitto drops root to the "mosquitto" user, which cannot write our temp dir.
            lines.append("user root")
        if self.users:
            password_file = self.dir / "passwords"
            password_file.touch(mode=0o600)
            for name, password in self.users.items():
                subprocess.run(
                    [MOSQUITTO_PASSWD, "-b", str(password_file), name, password],
                    check=True,
                    capture_output=True,
                    timeout=10,
                )
            lines += [f"password_file {password_file}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        self.config_path.write_text("\n".join(lines) + "\n")

    # --- addresses ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Anonymous URL of the broker."""
        return f"mqtt://127.0.0.1:{self.port}"

    def url_for(self, user: str, password: str) -> str:
        """URL with credentials (percent-encoded)."""
        return f"mqtt://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.returncode is None

    def log_tail(self, lines: int = 20) -> str:
        """The end of the broker's log file, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _log_says_running(self, offset: int) -> bool:
        """Whether the log written since ``offset`` has the "mosquitto version X running" notice."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return b" running" in log.read()
        except OSError:
            return False

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the process and wait until the port accepts TCP connections."""
        if self.running:
            return
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        stderr_path = self.dir / "stderr.log"
        with stderr_path.open("ab") as stderr:  # a file, not a pipe nobody drains
            self._process = await asyncio.create_subprocess_exec(
                MOSQUITTO,
                "-c",
                str(self.config_path),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while loop.time() < deadline:
            if self._process.returncode is not None:
                raise BrokerError(
                    f"mosquitto exited with {self._process.returncode}: "
                    f"{stderr_path.read_text(errors='replace')}\n{self.log_tail()}"
                )
            if not self._log_says_running(log_offset):  # else the port might answer for another process
                await asyncio.sleep(0.02)
                continue
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            await writer.wait_closed()
            return
        self.kill()
        raise BrokerError(
            f"mosquitto did not listen on 127.0.0.1:{self.port} within {START_TIMEOUT} s\n{self.log_tail()}"
        )

    async def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 5 s)."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 5.0)
        except TimeoutError:
            process.kill()
            await process.wait()

    def kill(self) -> None:
        """SIGKILL without waiting (a crashed broker)."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()

    async def wait_dead(self) -> None:
        """Reap a killed process."""
        if self._process is not None:
            await self._process.wait()

    async def restart(self) -> None:
        """Stop and start again on the same port, keeping the persisted sessions."""
        await self.stop()
        await self.start()

    def cleanup(self) -> None:
        """Remove the temp dir (the broker must be stopped)."""
        shutil.rmtree(self.dir, ignore_errors=True)


def mosquitto_available() -> bool:
    """Whether the broker binary is installed (scripts/setup.sh installs it)."""
    return os.access(MOSQUITTO, os.X_OK)
