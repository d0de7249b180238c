"""A real PostgreSQL server in a temporary folder on a loopback port (tests, benchmarks, ``kgw demo``).

Debian's ``postgresql`` package ships ``initdb``/``pg_ctl`` under
``/usr/lib/postgresql/<major>/bin`` (not on ``PATH``); :func:`find_bin_dir`
finds them. Like the Mosquitto helper this runs the real server, not a fake:
``initdb`` into a fresh folder, ``pg_ctl start`` on a free port with its socket
in that folder, trust authentication for loopback (the folder is private).
PostgreSQL refuses to run as root, so under root the server runs as the
``postgres`` user the Debian package creates.

Synchronous on purpose: fixtures, benchmarks and the demo start it before
their event loops do anything with it, and ``pg_ctl -w`` waits for readiness.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PostgresError", "PostgresServer", "find_bin_dir", "postgres_available"]

START_TIMEOUT = 60


class PostgresError(RuntimeError):
    """The server could not be set up, started or stopped."""


def find_bin_dir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres`` (newest major version), if installed."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def postgres_available() -> bool:
    """Whether a PostgreSQL server can be started here (scripts/setup.sh installs it)."""
    return find_bin_dir() is not None


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in its own temp folder; ``url`` names its ``kgw`` database."""

    def __init__(self, *, port: int | None = None, database: str = "kgw", user: str = "kgw") -> None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise PostgresError("PostgreSQL is not installed: run scripts/setup.sh (Debian package postgresql)")
        self.bin_dir = bin_dir
        self.port = port or _free_tcp_port()
        self.database = database
        self.user = user
        self.dir = Path(tempfile.mkdtemp(prefix="kgw-postgres-"))
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self._run_as: pwd.struct_passwd | None = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if self._run_as is not None:
            os.chown(self.dir, self._run_as.pw_uid, self._run_as.pw_gid)
        self._started = False

    # --- addresses -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``postgresql://`` URL of the ``kgw`` database over loopback TCP."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """URL of another database on this server."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server log, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # --- lifecycle -----------------------------------------------------------------------

    def _run(self, *args: str, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / args[0]), *args[1:]]
        kwargs: dict[str, object] = {}
        if self._run_as is not None:
            uid, gid = self._run_as.pw_uid, self._run_as.pw_gid
            kwargs = {"user": uid, "group": gid, "extra_groups": []}
        result = subprocess.run(  # noqa: PLW1510 (checked below with the output in the message)
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.dir,
            **kwargs,  # type: ignore[call-overload]
        )
        if result.returncode != 0:
            raise PostgresError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip()}\n{self.log_tail()}")
        return result

    def start(self) -> None:
        """``initdb`` (first time), start on ``port`` and create the ``kgw`` role and database."""
        if self._started:
            return
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c max_connections=400 "
            "-c shared_buffers=128MB -c fsync=on -c synchronous_commit=on"
        )
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-o", options, "-w", "start")
        self._started = True
        self.sql(
            "postgres",
            f"DO $$BEGIN CREATE ROLE {self.user} LOGIN SUPERUSER; EXCEPTION WHEN duplicate_object THEN NULL; END$$",
        )
        if not self.sql("postgres", f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"):
            self.create_database(self.database)

    def sql(self, database: str, statement: str) -> str:
        """Run one statement with ``psql`` as the superuser; its unaligned output."""
        result = self._run(
            "psql", "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", "-d", database,
            "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", statement, timeout=30,
        )  # fmt: skip
        return result.stdout.strip()

    def create_database(self, name: str) -> str:
        """A new empty database owned by the ``kgw`` role; its URL."""
        self.sql("postgres", f'CREATE DATABASE "{name}" OWNER {self.user}')
        return self.url_for(name)

    def stop(self, *, mode: str = "fast") -> None:
        """Shut down (``fast``: committed data is kept; the folder stays until :meth:`cleanup`).

        ``immediate`` skips the shutdown checkpoint, like a crash: what was committed is
        still recovered at the next start, but nothing waits for dirty pages to be written.
        """
        if self._started:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")
            self._started = False

    def cleanup(self) -> None:
        """Stop if running and remove the folder (no shutdown checkpoint: the data is being thrown away)."""
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()
