"""The recorded time burned into simulated playback video, machine-readable and human-readable.

Every frame a simulated NVR plays back (:mod:`simulators.playback`) carries the
**recorded time** it shows, so a test can decode a frame with PyAV and check that
a seek landed where it should, or that the pace follows the scale — no OCR.

Block code (all sizes from the frame size, so any profile works):

* ``cell = max(4, width // 40)`` pixels; the code is ``ROWS`` = 2 rows of
  ``COLUMNS`` = 28 square cells whose top-left corner is at ``(cell, cell)``,
  on a black plate reaching half a cell beyond the code on every side.
* 56 bits, row by row, left to right, most significant bit first; a white cell
  (luma 255) is 1, a black one (luma 0) is 0:
  ``MAGIC`` (8 bits, 0xA5) · epoch seconds (32 bits, Unix time of the recorded
  second) · frame index within that second (8 bits, 0..fps-1) · check (8 bits:
  XOR of the five data bytes, XOR 0x5A).
* Reading: the mean luma of the middle half of each cell, threshold 128;
  :func:`read_stamp` returns None when the magic or the check does not match
  (a frame without a stamp, or a broken one).

Below the code the same time is written for people: ``YYYY-MM-DD HH:MM:SS``
in the site's local time (UTC+8 by default) and ``#ff`` the frame index.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = ["COLUMNS", "MAGIC", "ROWS", "Stamp", "cell_size", "draw_stamp", "read_stamp", "stamp_bits"]

MAGIC = 0xA5
ROWS, COLUMNS = 2, 28
BITS = ROWS * COLUMNS  # 56


@dataclass(frozen=True, slots=True)
class Stamp:
    """What a frame says it shows: the recorded second (Unix epoch) and the frame within it."""

    epoch: int
    frame: int

    def time(self, fps: int) -> float:
        """The recorded time of this frame in epoch seconds (with the frame's fraction)."""
        return self.epoch + self.frame / fps


def cell_size(width: int) -> int:
    """Edge of one code cell for a frame ``width`` pixels wide."""
    return max(4, width // 40)


def stamp_bits(epoch: int, frame: int) -> list[int]:
    """The 56 bits of a stamp, most significant first."""
    data = [(epoch >> shift) & 0xFF for shift in (24, 16, 8, 0)] + [frame & 0xFF]
    check = 0x5A
    for byte in data:
        check ^= byte
    value = MAGIC
    for byte in [*data, check]:
        value = value << 8 | byte
    return [(value >> (BITS - 1 - i)) & 1 for i in range(BITS)]


def draw_stamp(img: NDArray[np.uint8], epoch: int, frame: int, *, utc_offset_hours: int = 8) -> None:
    """Burn the code and the readable time of ``(epoch, frame)`` into the BGR image ``img`` (in place)."""
    h, w = img.shape[:2]
    cell = cell_size(w)
    half = cell // 2
    x0 = y0 = cell
    img[y0 - half : y0 + ROWS * cell + half, x0 - half : x0 + COLUMNS * cell + half] = 0
    for i, bit in enumerate(stamp_bits(epoch, frame)):
        if bit:
            row, col = divmod(i, COLUMNS)
            y, x = y0 + row * cell, x0 + col * cell
            img[y : y + cell, x : x + cell] = 255
    local = datetime.fromtimestamp(epoch, timezone(timedelta(hours=utc_offset_hours)))
    text = f"{local:%Y-%m-%d %H:%M:%S} #{frame:02d}"
    scale = max(0.4, h / 400)
    thickness = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    ty = y0 + ROWS * cell + half + th + base + 2
    cv2.rectangle(img, (x0 - half, ty - th - base), (x0 - half + tw + cell, ty + base), (0, 0, 0), -1)
    cv2.putText(img, text, (x0, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def read_stamp(image: NDArray[np.uint8]) -> Stamp | None:
    """The stamp of a decoded frame: a luma plane (H x W, e.g. ``frame.to_ndarray(format="gray")``)
    or a BGR/RGB image (H x W x 3); None when there is no valid stamp."""
    gray = image if image.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2GRAY)
    h, w = gray.shape[:2]
    cell = cell_size(w)
    if cell * (COLUMNS + 2) > w or cell * (ROWS + 2) > h:
        return None
    quarter = max(1, cell // 4)
    value = 0
    for i in range(BITS):
        row, col = divmod(i, COLUMNS)
        y, x = cell + row * cell, cell + col * cell
        patch = gray[y + quarter : y + cell - quarter, x + quarter : x + cell - quarter]
        value = value << 1 | int(float(patch.mean()) >= 128)
    raw = value.to_bytes(BITS // 8, "big")
    if raw[0] != MAGIC:
        return None
    check = 0x5A
    for byte in raw[1:6]:
        check ^= byte
    if check != raw[6]:
        return None
    return Stamp(int.from_bytes(raw[1:5], "big"), raw[5])
