"""An upper platform's voice broadcast through the gateway (cascade, docs/gb28181.md §15.10, §16).

To its upper platform the gateway is a device: the upper sends ``Notify/Broadcast`` for a
channel it was shared, the gateway answers ``Response/Broadcast`` and INVITEs the upper for
the audio like a device does. Only then does the upper send PCMA RTP; the gateway hands it
to the device through its own broadcast (:class:`~gateway.broadcast.BroadcastService`: the
device's Notify, INVITE, ACK), re-cutting the payload into 20 ms packets without decoding.

Who may: the channel must be in the upper's sharing policy, and the police platform may not
broadcast at all (the same rule as for the 公安 role); otherwise ``Result ERROR``. The device
being busy (someone speaks already) or not answering ends the upper's call with BYE. Audio
is taken only with the SSRC of our offer and from the upper's signalling host.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.broadcast import Broadcast, BroadcastError, BroadcastService
from gateway.cascade.policy import PolicyLevel, SharePolicy
from gateway.cascade.upper import UpperLink
from gateway.errors import GatewayError
from gateway.gb28181.broadcast import broadcast_response, parse_broadcast_notify
from gateway.gb28181.device_broadcast import DeviceBroadcast, HeardCall
from gateway.gb28181.manscdp import ManscdpMessage
from gateway.gb28181.sdp import MediaTransport
from gateway.io.rtp_io import Addr, UdpRtpReceiverTransport
from gateway.live import SipIdentity
from gateway.media.audio import PCMA_PAYLOAD_TYPE
from gateway.media.rtp.packet import RtpPacket
from gateway.registry.model import Channel

__all__ = ["UpperBroadcastRelay"]

log = logging.getLogger("kgw.cascade.broadcast")
UPPER_AUDIO_TIMEOUT = 30.0  # s without audio from the upper before the relay hangs up


@dataclass(eq=False)
class _Relayed:
    upper: str
    upper_host: str
    broadcast: Broadcast
    receiver: UdpRtpReceiverTransport
    call: HeardCall | None = None
    ssrc: int | None = None
    packets: int = 0
    foreign: int = 0
    done: bool = field(default=False)


class UpperBroadcastRelay:
    """Relays the uppers' broadcasts to devices; the upper-facing calls are a :class:`DeviceBroadcast`."""

    def __init__(
        self,
        broadcasts: BroadcastService,
        sip: SipIdentity,
        channels: Mapping[str, Channel],
        policies: Mapping[str, SharePolicy],
        *,
        media_host: str,
        media_ports: tuple[int, int] | None = None,
    ) -> None:
        self.broadcasts = broadcasts
        self.sip = sip
        self.channels = channels
        self.policies = policies
        self.host = media_host
        self.media_ports: tuple[int, int] | int = media_ports or 0
        self.calls = DeviceBroadcast(sip.endpoint, self, transport=MediaTransport.UDP)
        self.relayed: dict[int, _Relayed] = {}  # by the SSRC of our offer to the upper
        self.refused = 0
        self._port = 0
        self._opening: _Relayed | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        broadcasts.upward = self.calls  # answers to our INVITEs, the uppers' BYEs, routed before device access

    def attach(self, link: UpperLink) -> None:
        """Take ``link``'s ``Notify/Broadcast`` (one of the link's :class:`UpperCommands` handlers)."""
        link.commands.append(self)

    # --- the upper's command (UpperCommands) ----------------------------------------------------------

    def status(self, link: UpperLink, message: ManscdpMessage) -> int | None:
        """None: a Broadcast is answered 200 and refused, if it must be, by its Result ERROR (§15.10)."""
        return None

    def relay(self, link: UpperLink, message: ManscdpMessage, now: float) -> bool:
        """``Notify/Broadcast`` from ``link``'s upper: Result OK and the relay, or Result ERROR."""
        notify = parse_broadcast_notify(message)
        if notify is None:
            return False
        channel = self.channels.get(notify.target_id)
        policy = self.policies.get(link.name)
        ok = (
            channel is not None
            and policy is not None
            and policy.level is not PolicyLevel.POLICE  # police may not broadcast (as the 公安 role)
            and policy.allows_channel(channel)
            and self.broadcasts.speaker_of(notify.target_id) is None  # someone speaks already: busy
        )
        link.client.reply(broadcast_response(notify.sn, link.local_id, ok), now)
        if not ok:
            self.refused += 1
            log.warning("upper %s may not broadcast to %s: Result ERROR", link.name, notify.target_id[:20])
            return True
        task = asyncio.get_running_loop().create_task(self._relay(link, notify.source_id, notify.target_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _relay(self, link: UpperLink, upper_id: str, target: str) -> None:
        try:
            broadcast = self.broadcasts.claim(target, f"上级平台 {link.name}")
            await self.broadcasts.open(broadcast)
        except BroadcastError as exc:  # busy, offline, no answer: the upper gets no INVITE
            log.warning("broadcast of upper %s to %s not relayed: %s", link.name, target, exc)
            return
        try:
            receiver = await UdpRtpReceiverTransport.open(
                _UpperAudio(self), host=self.host, ports=self.media_ports, rtp_timeout=UPPER_AUDIO_TIMEOUT
            )
        except (OSError, GatewayError) as exc:
            log.warning("broadcast of upper %s: no media port: %s", link.name, exc)
            self.broadcasts.stop(broadcast, "no media port for the upper's audio")
            return
        relayed = _Relayed(link.name, link.peer.host, broadcast, receiver)
        receiver.sink = _UpperAudio(self, relayed)
        self._port, self._opening = receiver.port, relayed
        try:
            relayed.call = self.calls.invite(
                local_id=link.local_id,
                platform_id=upper_id,
                target=target,
                domain=link.config.domain,
                server_peer=link.peer,
                now=asyncio.get_running_loop().time(),
            )
        finally:
            self._opening = None
        broadcast.on_end.append(lambda reason: self._broadcast_ended(relayed, reason))
        log.info("broadcast of upper %s to %s relayed (audio on port %d)", link.name, target, receiver.port)

    # --- the AudioSink protocol of DeviceBroadcast ----------------------------------------------------

    def port_for(self, transport: MediaTransport) -> int:
        """Where we receive the upper's audio (UDP only)."""
        return self._port

    def expect(self, ssrc: int, device_id: str, target: str) -> None:
        """Our INVITE to the upper offers ``ssrc``: its audio is the relayed broadcast."""
        if self._opening is not None:
            self._opening.ssrc = ssrc
            self.relayed[ssrc] = self._opening

    def ended(self, ssrc: int, reason: str) -> None:
        """The upper's call ended (its BYE, a refusal, or ours): end the device's broadcast."""
        relayed = self.relayed.pop(ssrc, None)
        if relayed is not None:
            self._close(relayed, f"upper {reason}")

    # --- media ------------------------------------------------------------------------------------------

    def feed(self, relayed: _Relayed, data: bytes, source: Addr) -> None:
        """One RTP packet at the relay's port: PCMA with our SSRC from the upper's host goes to the device."""
        try:
            packet = RtpPacket.parse(data)
        except GatewayError:
            relayed.foreign += 1
            return
        if packet.ssrc != relayed.ssrc or packet.payload_type != PCMA_PAYLOAD_TYPE or source[0] != relayed.upper_host:
            relayed.foreign += 1
            return
        relayed.packets += 1
        relayed.broadcast.push(packet.payload)

    def _broadcast_ended(self, relayed: _Relayed, reason: str) -> None:
        """The device's side ended (device BYE, timeout): hang up the upper's call too."""
        if relayed.call is not None and relayed.ssrc in self.relayed:
            self.relayed.pop(relayed.ssrc, None)
            self.calls.hang_up_call(relayed.call.call_id, asyncio.get_running_loop().time())
        self._close(relayed, reason)

    def _close(self, relayed: _Relayed, reason: str) -> None:
        if relayed.done:
            return
        relayed.done = True
        relayed.receiver.close()
        self.broadcasts.stop(relayed.broadcast, reason)


class _UpperAudio:
    """The media sink of one relayed broadcast (see :meth:`UpperBroadcastRelay.feed`)."""

    def __init__(self, relay: UpperBroadcastRelay, relayed: _Relayed | None = None) -> None:
        self.relay = relay
        self.relayed = relayed

    def feed(self, data: bytes, source: Addr) -> None:
        if self.relayed is not None:
            self.relay.feed(self.relayed, data, source)

    def on_closed(self, reason: str) -> None:
        if self.relayed is not None and not self.relayed.done:
            if self.relayed.ssrc is not None:
                self.relay.relayed.pop(self.relayed.ssrc, None)
            if self.relayed.call is not None:
                self.relay.calls.hang_up_call(self.relayed.call.call_id, asyncio.get_running_loop().time())
            self.relay._close(self.relayed, f"upper audio {reason}")
