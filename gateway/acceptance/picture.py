"""Decoding a snapshot and measuring it: what :func:`gateway.acceptance.rules.judge_picture` judges.

OpenCV decodes the JPEG (the gateway's snapshots are JPEGs of the camera's key
frame); the statistics are over the grey levels of a downscaled copy, so a
4K picture costs as little as a CIF one. CPU work: run it in a thread.
"""

from __future__ import annotations

import cv2
import numpy as np

from gateway.acceptance.rules import PictureStats

__all__ = ["MEASURE_WIDTH", "measure_jpeg"]

MEASURE_WIDTH = 320  # px the picture is scaled to before measuring


def measure_jpeg(jpeg: bytes) -> PictureStats | None:
    """The picture's size and grey-level mean and spread; None when it does not decode."""
    if not jpeg:
        return None
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None or image.size == 0:
        return None
    height, width = image.shape[:2]
    if width > MEASURE_WIDTH:
        image = cv2.resize(
            image, (MEASURE_WIDTH, max(1, height * MEASURE_WIDTH // width)), interpolation=cv2.INTER_AREA
        )
    mean, std = cv2.meanStdDev(image)
    return PictureStats(int(width), int(height), float(mean[0][0]), float(std[0][0]))
