"""WebRTC to browsers (issue 3): the only package that imports aiortc (docs/design.md §4).

:class:`FanoutVideoTrack` relays a fanout consumer's H.264 access units as ``av.Packet``
(no re-encoding); :func:`answer_offer` answers a viewer's offer with H.264-only codecs.
"""

from __future__ import annotations

from gateway.media.webrtc.passthrough import (
    FanoutVideoTrack,
    WakeEvent,
    WebRtcError,
    answer_offer,
    h264_codec_preferences,
)

__all__ = ["FanoutVideoTrack", "WakeEvent", "WebRtcError", "answer_offer", "h264_codec_preferences"]
