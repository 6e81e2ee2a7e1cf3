"""Draw a seeded, uniform random sample of pixels across a whole image, chunk by chunk."""

from __future__ import annotations

import dask.array as da
import numpy as np
from dask import delayed
from dask.delayed import Delayed
from numpy.typing import NDArray


def sample_positions(
    shape: tuple[int, int], size: int, random_state: int
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Rows and columns of ``size`` distinct pixels drawn uniformly from an image of ``shape``.

    Depends only on ``shape``, ``size`` and ``random_state`` (not on chunking), and returns the
    positions in raster order. ``size`` larger than the image takes every pixel.
    """
    height, width = shape
    n = height * width
    rng = np.random.default_rng(random_state)
    flat = np.arange(n) if size >= n else np.sort(rng.choice(n, size=size, replace=False))
    rows, cols = np.divmod(flat, width)
    return rows.astype(np.intp), cols.astype(np.intp)


def _take(block: NDArray[np.uint8], rows: NDArray[np.intp], cols: NDArray[np.intp]) -> NDArray:
    return block[rows, cols]


def _gather(order: NDArray[np.intp], *parts: NDArray[np.uint8]) -> NDArray[np.uint8]:
    out = np.empty((len(order), 3), dtype=np.uint8)
    out[order] = np.concatenate(parts)
    return out


def sample_pixels(image: da.Array, size: int, random_state: int) -> Delayed:
    """Lazy (n, 3) uint8 array of the pixels at :func:`sample_positions`, in that order.

    Each chunk contributes its own pixels, so the image is never gathered in one place.
    """
    rows, cols = sample_positions(image.shape[:2], size, random_state)
    row_edges = np.cumsum((0, *image.chunks[0]))
    col_edges = np.cumsum((0, *image.chunks[1]))
    block_row = np.searchsorted(row_edges, rows, side="right") - 1
    block_col = np.searchsorted(col_edges, cols, side="right") - 1
    block = block_row * len(image.chunks[1]) + block_col
    order = np.argsort(block, kind="stable")  # samples grouped by block, raster order within
    starts = np.flatnonzero(np.diff(block[order], prepend=-1))
    blocks = image.to_delayed(optimize_graph=False)[:, :, 0]
    parts = []
    for here in np.split(order, starts[1:]):
        i, j = block_row[here[0]], block_col[here[0]]
        local = (rows[here] - row_edges[i], cols[here] - col_edges[j])
        parts.append(delayed(_take, pure=True)(blocks[i, j], *local))
    return delayed(_gather, pure=True)(order, *parts)
