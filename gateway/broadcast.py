"""Voice broadcast (喊话) service: one speaker per device, the GB flow, PCMA RTP to the device.

A staff member's microphone reaches :meth:`Broadcast.push` as A-law bytes (the WebRTC side,
:mod:`gateway.media.webrtc.microphone`, decodes and resamples it). :meth:`BroadcastService.start`
claims the device (a second speaker gets :class:`BroadcastBusy` naming who speaks), sends
``Notify/Broadcast`` through the command broker and awaits ``Response/Broadcast``; the
device's INVITE then reaches :class:`~gateway.gb28181.broadcast.BroadcastCalls` (this service
is a handler of the SIP router, before device access), a send transport is opened the way
the device's offer says (UDP, or TCP in either direction, :mod:`gateway.io.rtp_send_io`), and
after the ACK the broadcast is live. :meth:`BroadcastService.stop` (speaker let go, WebRTC
closed) sends BYE; a device BYE or a broken media connection ends it for the speaker.

Raw PCMA (RTP PT 8) is sent when the device offers it; a device that offers only
``PS/90000`` (many Hikvision/Dahua) gets the same A-law inside audio-only PS on the 90 kHz
clock with the payload type it gave (:class:`~gateway.media.audio.PsAudioPacketizer`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from gateway.command_broker import CommandFailed
from gateway.errors import GatewayError
from gateway.gb28181.access import CommandBody
from gateway.gb28181.broadcast import (
    AUDIO_OUT_TYPE,
    BROADCAST,
    AudioEnded,
    AudioRequested,
    AudioStarted,
    AudioTarget,
    BroadcastCalls,
    broadcast_body,
    broadcast_result,
)
from gateway.gb28181.manscdp import ManscdpMessage
from gateway.gb28181.sdp import MediaTransport, make_ssrc
from gateway.gb28181.sip.endpoint import SipEvent
from gateway.gb28181.sip.router import SipHandler
from gateway.io.rtp_io import MediaConnectError
from gateway.io.rtp_send_io import RtpSendTransport, TcpRtpSender, UdpRtpSender
from gateway.live import ChannelLocator, SipContext
from gateway.media.audio import PcmaPacketizer, PsAudioPacketizer

__all__ = ["Broadcast", "BroadcastBusy", "BroadcastError", "BroadcastService", "audio_output_finder"]

log = logging.getLogger("kgw.broadcast")

MEDIA_CONNECT_TIMEOUT = 5.0  # s for the TCP media connection after the ACK


class DeviceChannels(Protocol):
    """The channels of a device, as the directory knows them."""

    def channels_of_device(self, device_id: str) -> Sequence[HasId]: ...


class HasId(Protocol):
    """A channel (only its ID is read)."""

    @property
    def id(self) -> str: ...


def audio_output_finder(directory: DeviceChannels) -> Callable[[str, str], str]:
    """``(device, channel) -> TargetID``: the device's audio-out channel (type 137) if its catalog has one.

    Devices without one (most cameras with a speaker) take the camera channel itself.
    """

    def target(device_id: str, channel_id: str) -> str:
        outputs = sorted(c.id for c in directory.channels_of_device(device_id) if c.id[10:13] == AUDIO_OUT_TYPE)
        return outputs[0] if outputs else channel_id

    return target


class AudioPacketizer(Protocol):
    """A-law in, RTP packets out: raw PCMA or PCMA in PS, as the device's offer chose."""

    def push(self, alaw: bytes) -> list[bytes]: ...


class CommandRequester(Protocol):
    """What the service needs of the command broker."""

    async def request(
        self, device_id: str, cmd_type: str, body: CommandBody, timeout: float | None = None
    ) -> ManscdpMessage | CommandFailed | None: ...


class BroadcastError(GatewayError):
    """The broadcast could not start; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status


class BroadcastBusy(BroadcastError):
    """Someone already speaks to this device."""

    def __init__(self, channel_id: str, speaker: str) -> None:
        super().__init__(f"{speaker} 正在喊话 ({speaker} is speaking to {channel_id})", 409)
        self.speaker = speaker


@dataclass(eq=False)
class Broadcast:
    """One speaker talking to one device."""

    key: str
    channel_id: str
    device_id: str
    target: str
    speaker: str
    opened_at: float
    live: asyncio.Future[None]
    ended: asyncio.Future[str]
    sender: RtpSendTransport | None = None
    packetizer: AudioPacketizer | None = None
    on_end: list[Callable[[str], None]] = field(default_factory=list)
    samples_in: int = 0

    def push(self, alaw: bytes) -> None:
        """A-law samples from the speaker; sent in 20 ms packets once the call is live."""
        self.samples_in += len(alaw)
        if self.packetizer is None or self.sender is None or self.ended.done():
            return
        packets = self.packetizer.push(alaw)
        if packets:
            self.sender.send(packets)

    @property
    def packets_sent(self) -> int:
        """RTP packets that left for the device."""
        return self.sender.stats.packets if self.sender is not None else 0


class BroadcastService:
    """Broadcasts of the node's devices; a handler of the SIP router (the devices' INVITEs)."""

    def __init__(
        self,
        sip: SipContext,
        channels: ChannelLocator,
        commands: CommandRequester,
        *,
        audio_target_of: Callable[[str, str], str] = lambda device_id, channel_id: channel_id,
        media_host: str = "127.0.0.1",
        media_ports: tuple[int, int] | None = None,
        answer_timeout: float = 10.0,
        invite_timeout: float = 10.0,
    ) -> None:
        self.sip = sip
        self.channels = channels
        self.commands = commands
        self.audio_target_of = audio_target_of
        self.media_host = media_host
        self.media_ports: tuple[int, int] | int = media_ports or 0
        self.answer_timeout = answer_timeout
        self.loop = asyncio.get_running_loop()
        self.calls = BroadcastCalls(sip.endpoint, sip.local_id, invite_timeout=invite_timeout)
        self.active: dict[str, Broadcast] = {}  # device -> its one broadcast
        self._by_key: dict[Hashable, Broadcast] = {}
        self._seq = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.totals = {"started": 0, "busy": 0, "failed": 0, "packets": 0}
        self.upward: SipHandler | None = None  # the cascade's relay of an upper's broadcast (its calls to the upper)

    # --- metrics -----------------------------------------------------------------------------

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """``kgw_broadcasts_active`` and counters of started/busy/failed broadcasts."""
        yield GaugeMetricFamily("kgw_broadcasts_active", "Voice broadcasts running now", value=len(self.active))
        counter = CounterMetricFamily("kgw_broadcasts", "Voice broadcasts by outcome", labels=["outcome"])
        for outcome in ("started", "busy", "failed"):
            counter.add_metric([outcome], self.totals[outcome])
        yield counter

    # --- the speaker's side ------------------------------------------------------------------------

    def speaker_of(self, channel_id: str) -> str | None:
        """Who speaks to the device of ``channel_id`` now, or None."""
        device_id = self.channels.device_of(channel_id)
        broadcast = self.active.get(device_id) if device_id is not None else None
        return broadcast.speaker if broadcast is not None else None

    def of_channel(self, channel_id: str) -> Broadcast | None:
        """The running broadcast to the device of ``channel_id``."""
        device_id = self.channels.device_of(channel_id)
        return self.active.get(device_id) if device_id is not None else None

    def claim(self, channel_id: str, speaker: str) -> Broadcast:
        """Reserve the device for ``speaker`` at once (no await): :class:`BroadcastBusy` when taken."""
        device_id = self.channels.device_of(channel_id)
        if device_id is None:
            raise BroadcastError(f"unknown channel {channel_id}", 404)
        current = self.active.get(device_id)
        if current is not None:
            self.totals["busy"] += 1
            raise BroadcastBusy(channel_id, current.speaker)
        if self.sip.peer_of(device_id) is None:
            raise BroadcastError(f"设备离线 (device {device_id} of {channel_id} is offline)", 409)
        broadcast = Broadcast(
            key=f"bc-{next(self._seq)}",
            channel_id=channel_id,
            device_id=device_id,
            target=self.audio_target_of(device_id, channel_id),
            speaker=speaker,
            opened_at=self.loop.time(),
            live=self.loop.create_future(),
            ended=self.loop.create_future(),
        )
        self.active[device_id] = broadcast
        self._by_key[broadcast.key] = broadcast
        return broadcast

    async def open(self, broadcast: Broadcast) -> None:
        """Ask the device, await its INVITE, answer, wait for the ACK and the media path.

        Raises :class:`BroadcastError` (and ends the broadcast) when the device refuses,
        does not answer or its call fails.
        """
        try:
            async with asyncio.timeout(self.answer_timeout + self.calls.invite_timeout + MEDIA_CONNECT_TIMEOUT):
                await self._open(broadcast)
        except TimeoutError:
            self.totals["failed"] += 1
            self.stop(broadcast, "timeout")
            raise BroadcastError(
                f"设备未应答 (device {broadcast.device_id} did not start the broadcast)", 504
            ) from None
        except BroadcastError as exc:
            self.totals["failed"] += 1
            self.stop(broadcast, str(exc))
            raise
        except BaseException:
            self.stop(broadcast, "cancelled")
            raise

    async def _open(self, broadcast: Broadcast) -> None:
        peer = self.sip.peer_of(broadcast.device_id)
        if peer is None:
            raise BroadcastError(f"设备离线 (device {broadcast.device_id} is offline)", 409)
        # Expect the INVITE before asking: the device may send it right after its answer.
        self.calls.expect(broadcast.key, broadcast.device_id, broadcast.target, peer, self.loop.time())
        self._rearm()
        body = broadcast_body(self.sip.local_id, broadcast.target)
        answer = await self.commands.request(broadcast.device_id, BROADCAST, body, self.answer_timeout)
        if answer is None:
            if broadcast.live.done():  # the INVITE came even though the Response was lost
                return
            raise BroadcastError(f"设备未应答 (device {broadcast.device_id} did not answer Broadcast)", 504)
        if isinstance(answer, CommandFailed):
            raise BroadcastError(f"设备拒绝喊话 (Broadcast MESSAGE failed: {answer.reason})", 502)
        if broadcast_result(answer) is False:
            raise BroadcastError(f"设备拒绝喊话 (device {broadcast.device_id} answered Result ERROR)", 502)
        ended = asyncio.ensure_future(asyncio.shield(broadcast.ended))
        try:
            waiting: list[asyncio.Future[Any]] = [broadcast.live, ended]
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if broadcast.live.done() and not broadcast.live.cancelled() and broadcast.live.exception() is None:
            return
        reason = broadcast.ended.result() if broadcast.ended.done() else "failed"
        raise BroadcastError(f"喊话未建立 (the device's audio call failed: {reason})", 502)

    def stop(self, broadcast: Broadcast, reason: str = "stopped") -> None:
        """End a broadcast: BYE (or refuse/forget its pending INVITE), close the media, free the device."""
        if self.active.get(broadcast.device_id) is broadcast:
            del self.active[broadcast.device_id]
        self._by_key.pop(broadcast.key, None)
        self.calls.hang_up(broadcast.key, self.loop.time())
        self._rearm()
        self._finish(broadcast, reason)

    def stop_all(self, reason: str = "gateway stopping") -> None:
        """End every broadcast (shutdown)."""
        for broadcast in list(self.active.values()):
            self.stop(broadcast, reason)

    def _finish(self, broadcast: Broadcast, reason: str) -> None:
        if broadcast.sender is not None:
            self.totals["packets"] += broadcast.sender.stats.packets
            broadcast.sender.close()
        if not broadcast.live.done():
            broadcast.live.set_exception(BroadcastError(f"broadcast ended: {reason}"))
            broadcast.live.exception()  # retrieved: nobody may be waiting any more
        if broadcast.ended.done():
            return
        broadcast.ended.set_result(reason)
        log.info("broadcast %s to %s by %s ended: %s", broadcast.key, broadcast.channel_id, broadcast.speaker, reason)
        for callback in broadcast.on_end:
            try:
                callback(reason)
            except Exception:
                log.exception("broadcast end callback failed")

    # --- SIP router handler --------------------------------------------------------------------------

    def route(self, event: SipEvent, now: float) -> bool:
        """The devices' broadcast INVITEs and their dialogs (forged ones are refused here)."""
        if self.upward is not None and self.upward.route(event, now):
            return True
        handled = self.calls.route(event, now)
        if handled:
            self._drain()
        return handled

    def get_timer(self) -> float | None:
        """None: the calls' timer runs on the loop."""
        return None

    def handle_timer(self, now: float) -> None:
        """Nothing: see :meth:`get_timer`."""

    def _rearm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.calls.get_timer()
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.calls.handle_timer(self.loop.time())
        self._drain()

    def _drain(self) -> None:
        while (event := self.calls.next_event()) is not None:
            broadcast = self._by_key.get(event.key)
            if broadcast is None:
                if isinstance(event, AudioRequested):
                    self.calls.reject(event.key, 481, self.loop.time())
                continue
            if isinstance(event, AudioRequested):
                self._spawn(self._prepare(broadcast, event.target))
            elif isinstance(event, AudioStarted):
                self._spawn(self._go_live(broadcast))
            elif isinstance(event, AudioEnded):
                if self.active.get(broadcast.device_id) is broadcast:
                    del self.active[broadcast.device_id]
                self._by_key.pop(broadcast.key, None)
                self._finish(broadcast, event.reason)
        self._rearm()

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = self.loop.create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _prepare(self, broadcast: Broadcast, target: AudioTarget) -> None:
        """Open the send transport the offer asks for, then answer 200 with its port."""
        on_closed = lambda reason: self.stop(broadcast, f"media {reason}")  # noqa: E731
        try:
            sender: RtpSendTransport
            if target.transport is MediaTransport.UDP:
                sender = await UdpRtpSender.open(
                    self.media_host, (target.host, target.port), ports=self.media_ports, on_closed=on_closed
                )
            elif target.transport is MediaTransport.TCP_PASSIVE:  # the device listens: we connect after the ACK
                sender = await TcpRtpSender.bind(
                    self.media_host, (target.host, target.port), ports=self.media_ports, on_closed=on_closed
                )
            else:  # the device connects to us: only from its registered host
                peer = self.sip.peer_of(broadcast.device_id)
                sender = await TcpRtpSender.listen(
                    self.media_host,
                    ports=self.media_ports,
                    allowed_host=peer.host if peer is not None else target.host,
                    on_closed=on_closed,
                )
        except (OSError, GatewayError) as exc:
            log.warning("broadcast %s: no media port: %s", broadcast.key, exc)
            self.calls.reject(broadcast.key, 503, self.loop.time())
            self._drain()
            return
        if broadcast.ended.done():
            sender.close()
            return
        ssrc = target.ssrc or make_ssrc(self.sip.domain, next(self._seq))
        broadcast.sender = sender
        broadcast.packetizer = (
            PsAudioPacketizer(int(ssrc), payload_type=target.payload_type) if target.ps else PcmaPacketizer(int(ssrc))
        )
        self.calls.accept(broadcast.key, self.media_host, sender.port, ssrc, self.loop.time())
        self._rearm()

    async def _go_live(self, broadcast: Broadcast) -> None:
        sender = broadcast.sender
        if sender is None:
            return
        try:
            await sender.start(MEDIA_CONNECT_TIMEOUT)
        except MediaConnectError as exc:
            log.warning("broadcast %s: media connection failed: %s", broadcast.key, exc)
            self.stop(broadcast, "media_connect_failed")
            return
        if not broadcast.live.done():
            self.totals["started"] += 1
            broadcast.live.set_result(None)
            log.info(
                "broadcast %s to %s by %s live (%s)", broadcast.key, broadcast.channel_id, broadcast.speaker, sender
            )
