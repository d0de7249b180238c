"""Which simulated cameras stream H.265 (issue 11): a stable share of them, chosen by ID.

Many deployed cameras send H.265, which browsers cannot play; the gateway transcodes
them (gateway/transcoding.py). The simulators make a deterministic share of their
cameras H.265 — the same cameras in every run and in every process (a SHA-256 of the
channel ID, not ``hash()``) — so the demo shows both kinds and a test can name one.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from gateway.errors import ConfigError
from simulators.video import VideoProfile

__all__ = ["DEMO_HEVC_SHARE", "is_hevc_camera", "profile_for_camera"]

DEMO_HEVC_SHARE = 0.125  # `kgw demo`: one camera in eight (a 2-core host transcodes 4 at once by default)


def is_hevc_camera(channel_id: str, share: float) -> bool:
    """True when the camera `channel_id` streams H.265 in a fleet where `share` (0..1) of them do."""
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"the H.265 share must be within 0..1, not {share}")
    if share <= 0.0:
        return False
    digest = hashlib.sha256(channel_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") < share * (1 << 64)


def profile_for_camera(base: VideoProfile, channel_id: str, share: float) -> VideoProfile:
    """The camera's clip profile: `base`, in H.265 when it is one of the `share` that stream H.265."""
    return replace(base, codec="hevc") if is_hevc_camera(channel_id, share) else base
