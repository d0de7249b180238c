"""G.711 A-law coding against the standard library's reference, PCMA packets, and the microphone resampler."""

from __future__ import annotations

import fractions
import warnings

import av
import numpy as np

from gateway.media.audio import PcmaPacketizer, alaw_decode, alaw_encode
from gateway.media.rtp.packet import RtpPacket
from gateway.media.webrtc.microphone import MicrophoneEncoder
from simulators.audio_sink import analyse

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the CPython reference coder (removed in 3.13; 3.11 is the target)


def test_alaw_matches_the_reference_coder_for_every_sample() -> None:
    every = np.arange(-32768, 32768, dtype=np.int16)
    assert alaw_encode(every) == audioop.lin2alaw(every.tobytes(), 2)
    codes = bytes(range(256))
    assert alaw_decode(codes).tobytes() == audioop.alaw2lin(codes, 2)
    assert alaw_encode(np.zeros(4, dtype=np.int16)) == b"\xd5" * 4  # A-law silence


def test_packetizer_cuts_20ms_packets_on_an_8khz_clock() -> None:
    packetizer = PcmaPacketizer(200000001, initial_sequence=65535, initial_timestamp=1000)
    assert packetizer.push(b"\xd5" * 100) == []  # not 20 ms yet
    packets = [RtpPacket.parse(p) for p in packetizer.push(b"\xd5" * 300)]
    assert [len(p.payload) for p in packets] == [160, 160]
    assert [p.payload_type for p in packets] == [8, 8] and packets[0].ssrc == 200000001
    assert [p.sequence for p in packets] == [65535, 0]  # wraps
    assert [p.timestamp for p in packets] == [1000, 1160]
    assert [p.marker for p in packets] == [True, False]  # start of a talk spurt
    packetizer.silence(800)
    (after,) = [RtpPacket.parse(p) for p in packetizer.push(b"\xd5" * 140)]
    assert after.timestamp == 1320 + 800 and after.marker


def test_microphone_encoder_resamples_48k_stereo_to_8k_mono_alaw() -> None:
    encoder = MicrophoneEncoder()
    rate, hz, out = 48000, 700.0, bytearray()
    for n in range(50):  # one second of 20 ms frames, as a browser's Opus decoder gives them
        t = (np.arange(960) + n * 960) / rate
        wave = (0.5 * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(wave, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = rate, n * 960, fractions.Fraction(1, rate)
        out += encoder.encode(frame)
    assert 7800 <= len(out) <= 8000  # 8 kHz, one byte a sample (the resampler may hold a few back)
    report = analyse(alaw_decode(bytes(out)))
    assert abs(report["dominant_hz"] - hz) < 5 and 0.3 < report["rms"] < 0.4, report
