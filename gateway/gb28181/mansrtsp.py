"""MANSRTSP: the RTSP-like bodies of playback control INFOs (docs/gb28181.md §15.9).

Requests are ``PLAY`` (resume with ``Range: npt=now-``, seek with ``Range: npt=<s>-``,
speed with ``Scale``), ``PAUSE`` (``PauseTime: now``) and ``TEARDOWN``, each with a
``CSeq``. Implementations disagree on the version token: WVP and libgb send
``RTSP/1.0``, owl's model of the 2011 profile ``MANSRTSP/1.0``; both are accepted,
``RTSP/1.0`` is written. Answers (an optional body of the device's 200 OK to the INFO)
look like ``RTSP/1.0 200 OK`` plus headers. Anything else raises
:class:`MansrtspError` (a 400 when it came in an INFO).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from gateway.errors import SipError

__all__ = [
    "MAX_SCALE",
    "MIN_SCALE",
    "MansrtspError",
    "MansrtspMethod",
    "MansrtspRequest",
    "MansrtspResponse",
    "build_request",
    "parse_request",
    "parse_response",
    "pause",
    "resume",
    "seek",
    "set_scale",
    "teardown",
]

CONTENT_TYPE: Final = "Application/MANSRTSP"  # as WVP writes it (docs/gb28181.md §15.9)
VERSIONS: Final = ("RTSP/1.0", "MANSRTSP/1.0")
MIN_SCALE: Final = 0.25
MAX_SCALE: Final = 8.0
MAX_BODY: Final = 1024  # a control body is a few dozen bytes
MAX_NPT: Final = 7 * 86400.0 * 365  # far beyond any recording; keeps floats sane

_HEADER_RE: Final = re.compile(r"([A-Za-z][A-Za-z0-9-]*)\s*:\s*(.*)")
_NPT_RE: Final = re.compile(r"npt\s*=\s*(now|[0-9]+(?:\.[0-9]+)?)\s*-\s*([0-9]+(?:\.[0-9]+)?)?\s*", re.IGNORECASE)


class MansrtspError(SipError):
    """A MANSRTSP body we cannot act on (garbage, unknown method, out-of-range Scale/Range)."""

    status_hint = 400


class MansrtspMethod(StrEnum):
    """The playback control methods GB/T 28181 uses."""

    PLAY = "PLAY"
    PAUSE = "PAUSE"
    TEARDOWN = "TEARDOWN"


@dataclass(frozen=True, slots=True)
class MansrtspRequest:
    """One control request.

    ``range_start`` is the seek target in seconds from the start of the playback
    window, ``"now"`` for a plain resume, None without ``Range``. ``scale`` is None
    without ``Scale``. ``pause_time`` is the ``PauseTime`` value (``now``) of a PAUSE.
    """

    method: MansrtspMethod
    cseq: int
    scale: float | None = None
    range_start: float | str | None = None
    pause_time: str | None = None
    version: str = "RTSP/1.0"

    @property
    def is_seek(self) -> bool:
        """A PLAY with ``Range: npt=<seconds>-``."""
        return self.method is MansrtspMethod.PLAY and isinstance(self.range_start, float)


@dataclass(frozen=True, slots=True)
class MansrtspResponse:
    """A device's RTSP-style status body (``RTSP/1.0 200 OK`` + headers)."""

    status: int
    reason: str
    cseq: int | None
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        """The first header value named ``name`` (case-insensitive)."""
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), None)


# --- building --------------------------------------------------------------------------------


def _check_scale(scale: float) -> float:
    if not (math.isfinite(scale) and MIN_SCALE <= scale <= MAX_SCALE):
        raise MansrtspError(f"Scale {scale!r} outside {MIN_SCALE}..{MAX_SCALE}")
    return scale


def _check_npt(value: float) -> float:
    if not (math.isfinite(value) and 0 <= value <= MAX_NPT):
        raise MansrtspError(f"Range npt={value!r} out of range")
    return value


def _fmt_npt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}".rstrip("0")


def build_request(request: MansrtspRequest) -> bytes:
    """The INFO body: request line, CSeq, then Scale/Range/PauseTime; CRLF line ends."""
    if request.cseq < 0:
        raise MansrtspError("CSeq must not be negative")
    lines = [f"{request.method.value} {request.version}", f"CSeq: {request.cseq}"]
    if request.method is MansrtspMethod.PAUSE:
        lines.append(f"PauseTime: {request.pause_time or 'now'}")
    if request.scale is not None:
        lines.append(f"Scale: {_check_scale(request.scale):.6f}")
    if request.range_start is not None:
        start = request.range_start
        text = "now" if start == "now" else _fmt_npt(_check_npt(float(start)))
        lines.append(f"Range: npt={text}-")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def pause(cseq: int) -> bytes:
    """``PAUSE`` with ``PauseTime: now``."""
    return build_request(MansrtspRequest(MansrtspMethod.PAUSE, cseq, pause_time="now"))


def resume(cseq: int) -> bytes:
    """``PLAY`` with ``Range: npt=now-``."""
    return build_request(MansrtspRequest(MansrtspMethod.PLAY, cseq, range_start="now"))


def seek(cseq: int, seconds: float) -> bytes:
    """``PLAY`` with ``Range: npt=<seconds>-`` (seconds from the start of the playback window)."""
    return build_request(MansrtspRequest(MansrtspMethod.PLAY, cseq, range_start=float(seconds)))


def set_scale(cseq: int, scale: float) -> bytes:
    """``PLAY`` with ``Scale: <x>`` (0.25–8)."""
    return build_request(MansrtspRequest(MansrtspMethod.PLAY, cseq, scale=float(scale)))


def teardown(cseq: int) -> bytes:
    """``TEARDOWN``."""
    return build_request(MansrtspRequest(MansrtspMethod.TEARDOWN, cseq))


# --- parsing ---------------------------------------------------------------------------------


def _lines(body: bytes) -> list[str]:
    if len(body) > MAX_BODY:
        raise MansrtspError(f"MANSRTSP body of {len(body)} bytes is too large")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise MansrtspError("MANSRTSP body is not ASCII") from None
    lines = [line.strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    lines = [line for line in lines if line]
    if not lines:
        raise MansrtspError("empty MANSRTSP body")
    return lines


def _headers(lines: list[str]) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for line in lines:
        match = _HEADER_RE.fullmatch(line)
        if match is None:
            raise MansrtspError(f"not a header line: {line[:40]!r}")
        headers.append((match.group(1), match.group(2).strip()))
    return headers


def _find(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((value for key, value in headers if key.lower() == name), None)


def _cseq(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or len(value) > 10:
        raise MansrtspError(f"CSeq {value[:20]!r} is not a number")
    return int(value)


def parse_request(body: bytes) -> MansrtspRequest:
    """Parse an INFO body; raises :class:`MansrtspError` for anything we would not act on."""
    lines = _lines(body)
    parts = lines[0].split()
    if len(parts) != 2:
        raise MansrtspError(f"bad request line {lines[0][:40]!r}")
    method_text, version = parts[0].upper(), parts[1].upper()
    if version not in VERSIONS:
        raise MansrtspError(f"unknown version {parts[1][:20]!r}")
    try:
        method = MansrtspMethod(method_text)
    except ValueError:
        raise MansrtspError(f"unknown method {parts[0][:20]!r}") from None
    headers = _headers(lines[1:])
    cseq = _cseq(_find(headers, "cseq"))
    if cseq is None:
        raise MansrtspError("CSeq missing")
    scale: float | None = None
    scale_text = _find(headers, "scale")
    if scale_text is not None:
        try:
            scale = float(scale_text)
        except ValueError:
            raise MansrtspError(f"Scale {scale_text[:20]!r} is not a number") from None
        _check_scale(scale)
    range_start: float | str | None = None
    range_text = _find(headers, "range")
    if range_text is not None:
        match = _NPT_RE.fullmatch(range_text)
        if match is None:
            raise MansrtspError(f"Range {range_text[:40]!r} is not npt=<start>-")
        start = match.group(1).lower()
        range_start = "now" if start == "now" else _check_npt(float(start))
    pause_time = _find(headers, "pausetime")
    if method is not MansrtspMethod.PLAY and (scale is not None or range_start is not None):
        raise MansrtspError(f"{method.value} carries Scale/Range")
    return MansrtspRequest(method, cseq, scale, range_start, pause_time, version)


def parse_response(body: bytes) -> MansrtspResponse:
    """Parse a status body (``RTSP/1.0 200 OK`` / ``MANSRTSP/1.0 200 OK`` + headers)."""
    lines = _lines(body)
    parts = lines[0].split(maxsplit=2)
    if len(parts) < 2 or parts[0].upper() not in VERSIONS or not parts[1].isdigit() or len(parts[1]) != 3:
        raise MansrtspError(f"bad status line {lines[0][:40]!r}")
    headers = _headers(lines[1:])
    return MansrtspResponse(
        int(parts[1]), parts[2] if len(parts) > 2 else "", _cseq(_find(headers, "cseq")), tuple(headers)
    )
