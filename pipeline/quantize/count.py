"""Count the distinct colours of an image chunk by chunk (input of the whole-image refinement).

Images up to a limit of pixels have every pixel counted. Larger ones have a regular grid of
pixels counted, every ``stride``-th row and column with ``stride`` the smallest that keeps the
count within the limit: a histogram of millions of pixels estimates the colour distribution as
well as one of all of them, at a fraction of the cost of sorting every pixel's colour.
"""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
from dask import delayed
from dask.delayed import Delayed
from numpy.typing import NDArray

from pipeline.quantize.colours import histogram, merge_histograms

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


def colour_counts(image: da.Array, limit: int) -> Delayed:
    """Lazy ``(keys, counts)`` histogram of an (H, W, 3) uint8 dask image.

    Counts every pixel of an image of at most ``limit`` pixels, else the pixels of a regular
    grid (:func:`grid_stride`). Each chunk is counted on its own; the partial histograms are
    merged in a tree, ``FAN_IN`` at a time, so no task sees more than a chunk of pixels. Sorted
    keys and a grid fixed to the image make the result independent of the chunking.
    """
    stride = grid_stride(image.shape[:2], limit)
    row_starts = np.cumsum((0, *image.chunks[0][:-1]))
    col_starts = np.cumsum((0, *image.chunks[1][:-1]))
    blocks = image.to_delayed(optimize_graph=False)[:, :, 0]  # keep keys shared with the job
    count = delayed(grid_histogram, pure=True)
    parts = [
        count(blocks[i, j], int(row), int(col), stride)
        for i, row in enumerate(row_starts)
        for j, col in enumerate(col_starts)
    ]
    while len(parts) > 1:
        parts = [
            delayed(merge_histograms, pure=True)(*parts[i : i + FAN_IN])
            for i in range(0, len(parts), FAN_IN)
        ]
    return parts[0]
