"""Draw a seeded, uniform random sample of pixels across a whole image, chunk by chunk.

The graph that gathers the sample from an image's chunks is
:func:`pipeline.job.graph.sample_pixels`.
"""

from __future__ import annotations

import numpy as np
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


def take_pixels(
    block: NDArray[np.uint8], rows: NDArray[np.intp], cols: NDArray[np.intp]
) -> NDArray[np.uint8]:
    """The (n, 3) pixels of a chunk at its local ``rows`` and ``cols``."""
    return block[rows, cols]


def gather_pixels(order: NDArray[np.intp], *parts: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """The chunks' ``parts`` of a sample, put back in sample order (``order[i]``: i's place)."""
    out = np.empty((len(order), 3), dtype=np.uint8)
    out[order] = np.concatenate(parts)
    return out
