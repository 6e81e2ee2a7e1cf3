"""Draw a seeded, uniform random sample of pixels across a whole image, chunk by chunk."""

from __future__ import annotations

import dask.array as da
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


def sample_pixels(image: da.Array, size: int, random_state: int) -> da.Array:
    """Lazy (n, 3) uint8 array of the pixels at :func:`sample_positions`.

    Each chunk of ``image`` contributes its own pixels (dask's pointwise ``vindex``), so the image
    is never gathered in one place for sampling.
    """
    rows, cols = sample_positions(image.shape[:2], size, random_state)
    return image.vindex[rows, cols]
