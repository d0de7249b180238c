"""A-law inside audio-only PS for devices that offer PS/90000 (gateway/media/audio/ps_audio.py, PsMuxer(None, …))."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.media.audio import PsAudioPacketizer, alaw_decode, alaw_encode
from gateway.media.ps import PsDemuxer, PsDemuxError, PsMuxer, StreamType
from gateway.media.ps.headers import ProgramStreamMap, SystemHeader
from gateway.media.rtp.packet import RtpPacket


def _tone(seconds: float, hz: float = 1000.0) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return bytes(alaw_encode((0.5 * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)))


def test_packets_carry_ps_packs_on_the_90khz_clock() -> None:
    packetizer = PsAudioPacketizer(100000001, payload_type=96, initial_sequence=65535, initial_timestamp=1000)
    alaw = _tone(1.0)
    packets = [RtpPacket.parse(p) for p in packetizer.push(alaw[:1000]) + packetizer.push(alaw[1000:])]
    assert len(packets) == 50 and packetizer.samples == 8000  # 20 ms each, the remainder none
    assert {p.payload_type for p in packets} == {96} and {p.ssrc for p in packets} == {100000001}
    assert [p.sequence for p in packets[:3]] == [65535, 0, 1]
    assert [p.timestamp for p in packets[:3]] == [1000, 2800, 4600]  # 160 samples = 1800 ticks of 90 kHz
    assert all(p.marker for p in packets)  # each packet ends its frame
    ps = b"".join(p.payload for p in packets)
    # The first pack names the stream: system header with one audio stream, PSM with G.711A (0x90) only.
    first = packets[0].payload
    assert first[:4] == b"\x00\x00\x01\xba" and b"\x00\x00\x01\xbb" in first and b"\x00\x00\x01\xbc" in first
    psm = ProgramStreamMap.parse(first[first.index(b"\x00\x00\x01\xbc") :])
    assert [(e.stream_type, e.stream_id) for e in psm.entries] == [(StreamType.G711A, 0xC0)]
    system = SystemHeader.parse(first[first.index(b"\x00\x00\x01\xbb") :])
    assert (system.audio_bound, system.video_bound) == (1, 0)
    assert b"\x00\x00\x01\xe0" not in ps  # no video at all
    demuxer = PsDemuxer()
    units = demuxer.feed(ps) + demuxer.flush()
    assert [u.stream_type for u in units] == [StreamType.G711A] * 50
    assert [u.pts for u in units[:3]] == [0, 1800, 3600]
    assert b"".join(u.data for u in units) == alaw  # every sample, in order, untouched
    decoded = alaw_decode(b"".join(u.data for u in units)).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(decoded * np.hanning(len(decoded))))
    assert abs(int(np.argmax(spectrum[1:])) + 1 - 1000) <= 2  # 1 Hz bins over one second


def test_silence_moves_the_clock() -> None:
    packetizer = PsAudioPacketizer(7)
    first = RtpPacket.parse(packetizer.push(_tone(0.02))[0])
    packetizer.silence(800)  # 100 ms nothing from the speaker
    second = RtpPacket.parse(packetizer.push(_tone(0.02))[0])
    assert second.timestamp - first.timestamp == 1800 + 9000


def test_audio_only_muxer_refuses_video_and_nothing() -> None:
    with pytest.raises(PsDemuxError):
        PsMuxer(None)
    with pytest.raises(PsDemuxError):
        PsMuxer(None, StreamType.H264)
    muxer = PsMuxer(None, StreamType.G711A)

    class Video:
        data, pts, dts, keyframe, is_video = b"\x00\x00\x00\x01\x65", 0, 0, True, True

    with pytest.raises(PsDemuxError):
        muxer.mux(Video())
