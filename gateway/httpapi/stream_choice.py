"""The ``stream`` of a live request (main, sub, auto), what was served, and the uplink's refusal (issue 11).

Shared by ``POST /api/channels/{id}/live`` and ``POST /api/channels/{id}/webrtc``: the body's
``"stream"`` (or ``?stream=``) picks the stream, main by default. The answer says what the
viewer got (``"stream"``) and why it differs from what was asked (``"downgraded"``,
``"note"``): the sub-stream because main would exceed the kindergarten's uplink budget, or
main because the camera has no sub-stream. A request that fits no stream gets 503 with the
message naming what uses the uplink, in zh-CN and English, and the usage itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.httpapi.common import json_error
from gateway.httpapi.uplink_routes import OTHER, redact_sessions
from gateway.live import LiveStream, LiveUplinkExceeded
from gateway.substreams import StreamChoice, parse_choice

__all__ = ["stream_answer", "stream_choice", "watch_error"]


async def stream_choice(request: web.Request) -> StreamChoice:
    """The request's stream choice (400 for anything but main/sub/auto)."""
    raw: Any = request.query.get("stream")
    body = await request.read()
    if body.strip():
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise json_error(web.HTTPBadRequest, "request body must be JSON") from exc
        if isinstance(data, dict) and data.get("stream") is not None:
            raw = data["stream"]
    if raw is None:
        return StreamChoice.MAIN
    try:
        return parse_choice(raw)
    except ValueError as exc:
        raise json_error(web.HTTPBadRequest, f"{exc} (码流须为 main、sub 或 auto)") from exc


def stream_answer(choice: StreamChoice, stream: LiveStream) -> dict[str, Any]:
    """The answer's fields about the stream served."""
    served = "main" if stream.stream_number == 0 else "sub"
    answer: dict[str, Any] = {"stream": served, "requested_stream": choice.value, "downgraded": False}
    if choice is StreamChoice.MAIN and served == "sub":
        answer["downgraded"] = True
        answer["note"] = (
            "主码流会超出幼儿园上行带宽预算, 已改用子码流 (the main stream would exceed the kindergarten's "
            "uplink budget: serving the sub-stream)"
        )
    elif choice is StreamChoice.SUB and served == "main":
        answer["note"] = "该摄像机无子码流或子码流不可用, 使用主码流 (no sub-stream available: serving the main stream)"
    return answer


def watch_error(
    channel_id: str, exc: BaseException, visible: Callable[[str], bool] = lambda channel_id: True
) -> web.HTTPException:
    """503 naming what uses the uplink, or the unknown channel's 404 (as before) for other failures.

    Sessions of channels the caller may not see (``visible``) are named only by their rate.
    """
    if isinstance(exc, LiveUplinkExceeded):
        hidden = [s for s in exc.users if s.get("channel_id") and not visible(s["channel_id"])]
        text = str(exc)
        for session in hidden:
            text = text.replace(str(session["what"]), OTHER)
        body = {
            "error": f"cannot open {channel_id}: {text}",
            "uplink": {
                "kindergarten_id": exc.kindergarten_id,
                "budget_kbps": exc.budget_kbps,
                "used_kbps": exc.used_kbps,
                "wanted_kbps": exc.wanted_kbps,
                "sessions": redact_sessions(exc.users, visible),
            },
        }
        return web.HTTPServiceUnavailable(text=json.dumps(body, ensure_ascii=False), content_type="application/json")
    return json_error(web.HTTPNotFound, f"cannot open {channel_id}: {exc}")
