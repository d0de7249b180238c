"""Voice broadcast over real sockets: an aiortc "browser" speaks a 1 kHz tone to a simulated device.

Gateway (``kgw gateway`` composition) and simulated fleet on 127.0.0.1: the HTTP route
answers the WebRTC offer after the GB flow (Notify/Broadcast, Response, the device's INVITE,
our 200, ACK); the device's speaker (simulators/audio_sink.py) decodes the PCMA it receives
and reports the dominant frequency. Also: a second speaker gets 409 naming the first, the
police may not broadcast, a forged INVITE from another socket is refused, a device BYE
ends the broadcast, the TCP media mode, and a device that offers only PS (the A-law then
goes inside an audio-only program stream, which ffprobe reads back as G.711 A-law).
"""

from __future__ import annotations

import asyncio
import fractions
import json
import socket
import subprocess
from typing import Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from gateway.security.principal import Principal, Role
from tests.conftest import TEST_TOKEN_GRANT, http_json, http_text, wait_for
from tests.scope_principals import call, grants

TONE_HZ = 1000.0
PRINCIPALS = {
    "li": Principal("li", Role.CITY_ADMIN),
    "police": Principal("police", Role.POLICE),
}


class ToneTrack(AudioStreamTrack):
    """A microphone that hears a sine tone: 48 kHz stereo, 20 ms frames, paced in real time."""

    def __init__(self, hz: float = TONE_HZ) -> None:
        super().__init__()
        self.hz = hz
        self.sent = 0

    async def recv(self) -> av.AudioFrame:
        await super().recv()  # keeps the pace: one 20 ms frame per 20 ms
        rate = 48000
        n = rate // 50
        t = (np.arange(n) + self.sent) / rate
        wave = (0.5 * 32767 * np.sin(2 * np.pi * self.hz * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(wave, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = rate, self.sent, fractions.Fraction(1, rate)
        self.sent += n
        return frame


async def _speaker() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(ToneTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def _setup(
    gateway_factory: Any, fleet_factory: Any, query_timeout: float = 10.0, **fleet_options: Any
) -> tuple[Any, Any, str, str, str]:
    service = await gateway_factory(api_tokens=(TEST_TOKEN_GRANT, *grants(PRINCIPALS)), query_timeout=query_timeout)
    fleet = await fleet_factory(service, kindergartens=1, cameras=(2, 2), **fleet_options)
    channel_id, device_id = next(
        (c.device_id, a.profile.device_id)
        for a in fleet.agents.values()
        for c in a.profile.channels
        if c.device_id[10:13] == "131"
    )

    def online() -> bool:
        channel = service.directory.channels.get(channel_id)
        return channel is not None and channel.online

    assert await wait_for(online, timeout=60)
    return service, fleet, f"http://127.0.0.1:{service.http_port}", channel_id, device_id


async def _hear_tone(fleet: Any, device_id: str, seconds: float = 1.0) -> dict[str, Any]:
    def heard_enough() -> bool:
        report = fleet.heard(device_id)
        return report is not None and report.get("duration", 0) >= seconds

    assert await wait_for(heard_enough, timeout=30), fleet.heard(device_id)
    report: dict[str, Any] = fleet.heard(device_id)
    return report


async def test_browser_tone_reaches_the_device_and_second_speaker_is_busy(
    gateway_factory: Any, fleet_factory: Any
) -> None:
    service, fleet, api, channel_id, device_id = await _setup(gateway_factory, fleet_factory)
    pc, offer = await _speaker()
    try:
        status, body = await http_json(f"{api}/api/channels/{channel_id}/broadcast", {"sdp": offer})
        assert status == 200, body
        assert body["speaker"] == "tests" and "a=recvonly" in body["sdp"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))

        report = await _hear_tone(fleet, device_id, 1.5)
        assert report["active"] and report["transport"] == "udp"
        assert abs(report["dominant_hz"] - TONE_HZ) < 15, report
        assert report["rms"] > 0.15, report  # a 0.5 full-scale sine has RMS 0.35; Opus and A-law keep most
        assert report["lost"] == 0 or report["lost"] < report["packets"] // 20

        # A second speaker (another city admin) is told who is speaking; police may not broadcast at all.
        other, other_offer = await _speaker()
        try:
            status, busy = await call(f"{api}/api/channels/{channel_id}/broadcast", "li", {"sdp": other_offer})
            assert status == 409 and "正在喊话" in busy["error"] and busy["speaker"] == "tests", busy
            status, _ = await call(f"{api}/api/channels/{channel_id}/broadcast", "police", {"sdp": other_offer})
            assert status in (403, 404)
            status, _ = await call(f"{api}/api/channels/{channel_id}/broadcast", "li", method="DELETE")
            assert status == 409  # only the speaker ends their broadcast
        finally:
            await other.close()
        status, state = await http_json(f"{api}/api/channels/{channel_id}/broadcast")
        assert status == 200 and state["speaker"] == "tests" and state["live"] and state["packets"] > 50

        status, ended = await http_json(f"{api}/api/channels/{channel_id}/broadcast", method="DELETE")
        assert status == 200 and ended["state"] == "ended"
        assert await wait_for(lambda: fleet.heard(device_id)["ended"] == "platform_bye", timeout=20)
        assert await wait_for(lambda: pc.connectionState == "closed", timeout=20)  # the gateway closed our peer
        assert not service.broadcasts.active

        # Audited from start to end (with its duration), and counted in /metrics.
        records: list[Any] = []

        async def read_audit() -> bool:
            status, page = await http_json(f"{api}/api/audit?action=broadcast&target={channel_id}")
            records[:] = page["items"] if status == 200 else []
            return {"started", "ended"} <= {r["outcome"] for r in records}

        for _ in range(100):
            if await read_audit():
                break
            await asyncio.sleep(0.1)
        assert {"started", "ended"} <= {r["outcome"] for r in records}, records
        assert all(r["actor"] == "tests" for r in records if r["outcome"] in ("started", "ended"))
        metrics = await http_text(f"{api}/metrics")
        assert 'kgw_broadcasts_total{outcome="started"} 1.0' in metrics and "kgw_broadcasts_active 0.0" in metrics
        assert 'kgw_broadcasts_total{outcome="busy"} 1.0' in metrics
    finally:
        await pc.close()


async def test_tcp_media_and_device_bye(gateway_factory: Any, fleet_factory: Any) -> None:
    service, fleet, api, channel_id, device_id = await _setup(gateway_factory, fleet_factory, audio_tcp=True)
    pc, offer = await _speaker()
    try:
        status, body = await http_json(f"{api}/api/channels/{channel_id}/broadcast", {"sdp": offer})
        assert status == 200, body
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
        report = await _hear_tone(fleet, device_id, 1.0)
        assert report["transport"] == "tcp" and abs(report["dominant_hz"] - TONE_HZ) < 15, report

        assert fleet.end_broadcast(device_id) == 1  # the device hangs up: BYE to the gateway
        assert await wait_for(lambda: not service.broadcasts.active, timeout=20)
        assert await wait_for(lambda: pc.connectionState == "closed", timeout=20)
        status, state = await http_json(f"{api}/api/channels/{channel_id}/broadcast")
        assert status == 200 and state["speaker"] is None
    finally:
        await pc.close()


def _sip_exchange(port: int, data: bytes) -> list[int]:
    """Send one datagram from a fresh socket; the status codes answered within 5 s."""
    statuses: list[int] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5.0)
        text = data.decode().replace("{port}", str(sock.getsockname()[1]))
        sock.sendto(text.encode(), ("127.0.0.1", port))
        try:
            while not statuses or statuses[-1] < 200:
                reply = sock.recv(65535).decode(errors="replace")
                statuses.append(int(reply.split()[1]))
        except TimeoutError:
            pass
    return statuses


def _invite(gateway_id: str, caller: str, target: str, call_id: str) -> bytes:
    body = (
        "v=0\r\no=x 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=recvonly\r\ny=0100000077\r\n"
    )
    return (
        f"INVITE sip:{gateway_id}@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{{port}};rport;branch=z9hG4bK{call_id}\r\n"
        f"From: <sip:{caller}@{gateway_id[:10]}>;tag=evil\r\nTo: <sip:{gateway_id}@{gateway_id[:10]}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:{caller}@127.0.0.1:{{port}}>\r\nSubject: {target}:0100000077,{gateway_id}:0\r\n"
        f"Content-Type: APPLICATION/SDP\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


async def test_forged_invite_is_refused(gateway_factory: Any, fleet_factory: Any) -> None:
    service, fleet, api, channel_id, device_id = await _setup(gateway_factory, fleet_factory, query_timeout=2.0)
    port, gateway_id = service.sip_port, service.config.id
    # No broadcast asked: an INVITE naming the registered device from another socket is 481.
    statuses = await asyncio.to_thread(_sip_exchange, port, _invite(gateway_id, device_id, channel_id, "forged-a"))
    assert statuses[-1:] == [481], statuses

    # While a real broadcast is pending and running, the same forgery is 403 (wrong address).
    for agent in fleet.agents.values():
        agent.features.clear()  # the device stays silent: the broadcast waits for its INVITE
    pc, offer = await _speaker()
    pending = asyncio.create_task(http_json(f"{api}/api/channels/{channel_id}/broadcast", {"sdp": offer}))
    try:
        assert await wait_for(lambda: bool(service.broadcasts.active), timeout=20)
        statuses = await asyncio.to_thread(_sip_exchange, port, _invite(gateway_id, device_id, channel_id, "forged-b"))
        assert statuses[-1:] == [403], statuses
        assert service.broadcasts.calls.refused == {481: 1, 403: 1}
        status, body = await pending
        assert status == 504 and "未应答" in body["error"], body  # the device itself never sent an INVITE
        assert not service.broadcasts.active
    finally:
        pending.cancel()
        await pc.close()


async def test_device_offering_ps_gets_alaw_inside_ps(gateway_factory: Any, fleet_factory: Any, tmp_path: Any) -> None:
    # The devices offer only "m=audio <port> RTP/AVP 96" + "a=rtpmap:96 PS/90000" (Hikvision/Dahua).
    service, fleet, api, channel_id, device_id = await _setup(gateway_factory, fleet_factory, audio_ps=True)
    pc, offer = await _speaker()
    try:
        status, body = await http_json(f"{api}/api/channels/{channel_id}/broadcast", {"sdp": offer})
        assert status == 200, body  # before: the device's PS-only INVITE was refused 488
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
        report = await _hear_tone(fleet, device_id, 3.0)
        assert report["payload"] == "ps" and report["bad_packets"] == 0, report
        assert abs(report["dominant_hz"] - TONE_HZ) < 15 and report["rms"] > 0.15, report
        assert service.broadcasts.calls.refused == {}

        # What we sent, written as a .ps file: ffprobe reads G.711 A-law, 8 kHz mono, for as long as heard.
        # FFmpeg 5.1 ignores the PSM's stream type 0x90 and calls 0xC0 MPEG audio unless the file has
        # Hikvision's 40-byte "IMKH" file header (its mpeg demuxer then takes 0xC0 as A-law): add one.
        sent = fleet.audio.ps_payload(device_id)
        assert sent[:4] == b"\x00\x00\x01\xba", sent[:16]
        path = tmp_path / "broadcast.ps"
        path.write_bytes(b"IMKH" + bytes(36) + sent)
        probe = await asyncio.to_thread(
            subprocess.run,
            ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        streams = json.loads(probe.stdout)["streams"]
        assert [(s["codec_name"], s["sample_rate"], s["channels"]) for s in streams] == [("pcm_alaw", "8000", 1)], (
            probe.stdout,
            probe.stderr,
        )
        assert float(streams[0]["duration"]) >= 2.5, streams

        status, ended = await http_json(f"{api}/api/channels/{channel_id}/broadcast", method="DELETE")
        assert status == 200 and ended["state"] == "ended"
        assert await wait_for(lambda: fleet.heard(device_id)["ended"] == "platform_bye", timeout=20)
    finally:
        await pc.close()
