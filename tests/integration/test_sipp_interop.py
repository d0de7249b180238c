"""Interoperability with an independent SIP user agent: sipp plays a GB/T 28181 device.

Every other test drives kgw with our own simulators, which reuse the gateway's
SIP cores; a shared misreading of RFC 3261 or RFC 2617 would pass there
unnoticed. Here sipp (Debian package sip-tester) builds the messages and
computes the digest itself, from the scenarios in ``tests/integration/sipp/``:

* ``register_keepalive.xml`` (UDP and TCP): REGISTER, 401 challenge, REGISTER
  with sipp's own ``[authentication]``, 200, then a Keepalive MESSAGE
  (docs/gb28181.md §4.1) answered 200; the device must then be online in memory and in
  the HTTP API, reached back over the transport it used;
* ``register_wrong_password.xml``: the same with a wrong password must end in
  403 (not another 401), and the device must not be online.

sipp's own digest sends ``uri="sip:<gateway ip>:<port>"``, not the
Request-URI, so these runs also check that kgw hashes the ``uri`` parameter as
sent (docs/gb28181.md §3.3). sipp is a required test tool: if it is missing the tests
fail and say how to install it; they are never skipped.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.app import GatewayService
from gateway.gb28181.sip.transport import Transport
from tests.conftest import free_sip_port, http_json

SCENARIOS = Path(__file__).parent / "sipp"
DEVICE_ID = "12010100001320000077"  # Heping district (120101), type 132 IPC
DEVICE_DISTRICT = "120101"
SIPP_TIMEOUT = 20  # sipp's own -timeout, seconds
SIPP_RECV_TIMEOUT_MS = 5000  # a <recv> that waits longer fails the call
SIPP_DEADLINE = 25.0  # then we kill it: with a call still open, sipp outlives -timeout
SIPP_FLAG = {Transport.UDP: "u1", Transport.TCP: "t1"}
EXIT_ALL_CALLS_OK = 0
EXIT_BIND_FAILED = 254  # sipp exits -2 when it cannot bind its socket: the free port was taken meanwhile


@dataclass(frozen=True, slots=True)
class SippRun:
    """What one sipp run left behind."""

    returncode: int
    local_port: int
    stdout: str
    stderr: str
    errors: str  # -trace_err: unexpected messages, out-of-call notes
    messages: str  # -trace_msg: every message sent and received

    def explain(self) -> str:
        """A failure message with the evidence, tails only."""
        return (
            f"sipp exited {self.returncode} (0: all calls succeeded, 1: a call failed)\n"
            f"--- errors ---\n{self.errors[-2000:]}\n--- messages ---\n{self.messages[-4000:]}\n"
            f"--- stderr ---\n{self.stderr[-1000:]}"
        )


def sipp_binary() -> str:
    """Path of sipp; a missing sipp fails the test (in its body: a failure, not a setup error or a skip)."""
    path = shutil.which("sipp")
    if path is None:
        pytest.fail(
            "sipp is not installed (Debian package sip-tester); run scripts/setup.sh, "
            "which installs it, then run the tests again",
            pytrace=False,
        )
    return path


def sipp_args(
    sipp: str,
    service: GatewayService,
    scenario: str,
    tmp_path: Path,
    *,
    transport: Transport,
    device_id: str,
    password: str,
    local_port: int,
    tag: str,
) -> list[str]:
    """Command line for one call of ``scenario`` against ``service``."""
    gateway = service.config
    return [
        sipp,
        f"127.0.0.1:{service.sip_port}",
        "-sf",
        str(SCENARIOS / scenario),
        "-oocsf",
        str(SCENARIOS / "answer_queries_ooc.xml"),
        "-t",
        SIPP_FLAG[transport],
        "-i",
        "127.0.0.1",
        "-p",
        str(local_port),
        "-s",
        device_id,
        "-au",
        device_id,
        "-ap",
        password,
        "-key",
        "gw",
        gateway.id,
        "-key",
        "realm",
        gateway.domain,
        "-m",
        "1",
        "-timeout",
        f"{SIPP_TIMEOUT}s",
        "-recv_timeout",
        str(SIPP_RECV_TIMEOUT_MS),
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(tmp_path / f"{tag}_errors.log"),
        "-trace_msg",
        "-message_file",
        str(tmp_path / f"{tag}_messages.log"),
    ]


async def run_sipp(
    sipp: str,
    service: GatewayService,
    scenario: str,
    tmp_path: Path,
    *,
    transport: Transport,
    device_id: str = DEVICE_ID,
    password: str | None = None,
) -> SippRun:
    """Run one sipp call without blocking the loop (the gateway lives on it); always reap sipp."""
    tag = Path(scenario).stem
    for _ in range(3):
        local_port = free_sip_port()
        args = sipp_args(
            sipp,
            service,
            scenario,
            tmp_path,
            transport=transport,
            device_id=device_id,
            password=service.config.password if password is None else password,
            local_port=local_port,
            tag=tag,
        )
        proc = await asyncio.create_subprocess_exec(
            *args, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), SIPP_DEADLINE)
        except TimeoutError:
            stdout, stderr = b"", b"(killed by the test after %.0f s)" % SIPP_DEADLINE
        finally:
            if proc.returncode is None:  # timed out or cancelled: never leave sipp behind
                proc.kill()
                await proc.wait()
        if proc.returncode != EXIT_BIND_FAILED:
            break
    return SippRun(
        returncode=proc.returncode,
        local_port=local_port,
        stdout=stdout.decode(errors="replace"),
        stderr=stderr.decode(errors="replace"),
        errors=_read(tmp_path / f"{tag}_errors.log"),
        messages=_read(tmp_path / f"{tag}_messages.log"),
    )


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


async def api_device(service: GatewayService, device_id: str) -> dict | None:
    """The device as the HTTP API shows it after a flush, or None."""
    await service.writer.flush()
    status, page = await http_json(f"http://127.0.0.1:{service.http_port}/api/devices?limit=1000")
    assert status == 200, page
    return next((d for d in page["items"] if d["id"] == device_id), None)


def refused_messages(service: GatewayService) -> float:
    """MESSAGEs kgw answered with an error status, all statuses together."""
    return sum(
        sample.value
        for metric in service.metrics.collect()
        if metric.name == "kgw_messages_refused"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


@pytest.mark.parametrize("transport", [Transport.UDP, Transport.TCP])
async def test_sipp_device_registers_with_digest_and_keepalive_keeps_it_online(gateway_factory, tmp_path, transport):
    sipp = sipp_binary()
    service = await gateway_factory(sip_port=free_sip_port())  # a port sipp also needs to know

    run = await run_sipp(sipp, service, "register_keepalive.xml", tmp_path, transport=transport)

    assert run.returncode == EXIT_ALL_CALLS_OK, run.explain()
    digest_uri = f'uri="sip:127.0.0.1:{service.sip_port}"'  # sipp's default, unlike the Request-URI
    assert digest_uri in run.messages, run.explain()
    # kgw queries the new device at once (docs/gb28181.md §3.1); the queries must reach sipp
    # at its Contact, over the transport it registered with (on TCP: its connection).
    assert f"MESSAGE sip:{DEVICE_ID}@127.0.0.1:{run.local_port} SIP/2.0" in run.messages, run.explain()
    assert "<CmdType>DeviceInfo</CmdType>" in run.messages
    assert refused_messages(service) == 0, "the Keepalive MESSAGE was refused"

    assert service.directory.online_counts()[:2] == (1, 1)
    row = service.directory.devices[DEVICE_ID].row
    assert row.online and row.transport == transport.value and row.host == "127.0.0.1"
    assert row.expires == 3600 and row.user_agent == "sipp GB28181 device"
    assert row.last_seen is not None and row.registered_at is not None and row.last_seen >= row.registered_at

    device = await api_device(service, DEVICE_ID)
    assert device is not None, "registered device missing from /api/devices"
    assert device["online"] is True
    assert device["transport"] == transport.value
    assert device["device_type"] == 132 and device["district_code"] == DEVICE_DISTRICT
    if transport is Transport.UDP:  # on TCP the port is the connection's, which sipp does not choose
        assert (device["host"], device["port"]) == ("127.0.0.1", run.local_port)


@pytest.mark.parametrize("transport", [Transport.UDP, Transport.TCP])
async def test_sipp_device_with_wrong_password_gets_403_and_stays_offline(gateway_factory, tmp_path, transport):
    sipp = sipp_binary()
    service = await gateway_factory(sip_port=free_sip_port())  # a port sipp also needs to know

    run = await run_sipp(
        sipp,
        service,
        "register_wrong_password.xml",
        tmp_path,
        transport=transport,
        password=service.config.password + "x",
    )

    # The scenario accepts only a 403 after the credentials; a 200 or a second 401 fails the call.
    assert run.returncode == EXIT_ALL_CALLS_OK, run.explain()
    assert "SIP/2.0 403" in run.messages
    assert service.directory.online_counts()[1] == 0
    state = service.directory.devices.get(DEVICE_ID)
    assert state is None or not state.row.online
    bad = service.metrics.get_sample_value("kgw_registrations_total", {"result": "bad_password"})
    assert bad == 1
    device = await api_device(service, DEVICE_ID)
    assert device is None or device["online"] is False
