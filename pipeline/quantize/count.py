"""Count the distinct colours of an image chunk by chunk (input of the whole-image refinement).

Images up to a limit of pixels have every pixel counted. Larger ones have a regular grid of
pixels counted, every ``stride``-th row and column with ``stride`` the smallest that keeps the
count within the limit: a histogram of millions of pixels estimates the colour distribution as
well as one of all of them, at a fraction of the cost of sorting every pixel's colour.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from pipeline.quantize.colours import histogram

#: Partial histograms merged per task when combining chunk counts.
FAN_IN = 8


def grid_stride(shape: tuple[int, int], limit: int) -> int:
    """Smallest stride whose grid (every stride-th row and column) has at most ``limit`` pixels."""
    height, width = shape
    stride = max(1, math.isqrt(max(0, height * width // max(limit, 1) - 1)))
    while math.ceil(height / stride) * math.ceil(width / stride) > limit:
        stride += 1
    return stride


def grid_histogram(
    block: NDArray[np.uint8], row: int, col: int, stride: int
) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
    """Histogram of the pixels of ``block`` that lie on its image's grid.

    ``block`` starts at ``row``, ``col`` of the image; the grid is every ``stride``-th row and
    column of the image from (0, 0).
    """
    return histogram(block[-row % stride :: stride, -col % stride :: stride])
