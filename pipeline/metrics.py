"""Quality and size figures of a compressed image."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
from numpy.typing import NDArray


def squared_error_block(
    block: NDArray[np.uint8], labels: NDArray[np.integer], palette: NDArray[np.uint8]
) -> NDArray[np.float64]:
    """Sum of squared RGB differences between a block and its rebuild, as a (1, 1) array."""
    diff = block.astype(np.int32) - palette[labels].astype(np.int32)
    return np.array([[float(np.einsum("ijc,ijc->", diff, diff, dtype=np.int64))]])


def squared_error(image: da.Array, labels: da.Array, palette: object) -> da.Array:
    """Lazy total squared error (a 0-d array) between ``image`` and ``palette[labels]``."""
    per_block = da.blockwise(
        squared_error_block,
        "ij",
        image,
        "ijc",
        labels,
        "ij",
        palette,
        None,
        dtype=np.float64,
        adjust_chunks={"i": 1, "j": 1},
        concatenate=True,
        meta=np.empty((0, 0), dtype=np.float64),
    )
    return per_block.sum()


def psnr(sse: float, n_values: int) -> float | None:
    """Peak signal-to-noise ratio in dB over ``n_values`` 8-bit values; None when lossless."""
    if sse == 0:
        return None
    return 10 * math.log10(255**2 * n_values / sse)
