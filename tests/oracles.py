"""Numpy references the pipeline is checked against."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def brute_force(pixels: NDArray[np.uint8], palette: NDArray[np.uint8]) -> NDArray[np.intp]:
    """Reference nearest entry: integer squared distances, ties to the lowest index."""
    p = pixels.reshape(-1, 3).astype(np.int64)
    c = palette.astype(np.int64)
    out = np.empty(len(p), dtype=np.intp)
    for start in range(0, len(p), 20_000):
        d = ((p[start : start + 20_000, None, :] - c[None]) ** 2).sum(axis=2)
        out[start : start + 20_000] = d.argmin(axis=1)
    return out.reshape(pixels.shape[:-1])


def oklab_brute_force(pixels: NDArray[np.uint8], palette: NDArray[np.uint8]) -> NDArray[np.intp]:
    """Reference ``"oklab"`` labels: the documented distance to every entry, ties to the lowest.

    The six coordinates of docs/store-format.md (``pipeline.quantize.oklab.coordinates``), the
    squared distance ``d0 * d0 + d1 * d1 + ... + d5 * d5`` added left to right, the first of equal
    minima.
    """
    from pipeline.quantize import oklab

    p = oklab.coordinates(pixels.reshape(-1, 3))
    c = oklab.coordinates(palette)
    out = np.empty(len(p), dtype=np.intp)
    for start in range(0, len(p), 10_000):
        diff = p[start : start + 10_000, None, :] - c[None]
        d = diff[..., 0] * diff[..., 0]
        for axis in range(1, 6):
            d = d + diff[..., axis] * diff[..., axis]
        out[start : start + 10_000] = d.argmin(axis=1)  # first of equal minima
    return out.reshape(pixels.shape[:-1])


def photo_psnr(image: NDArray[np.uint8], rebuilt: NDArray[np.uint8]) -> float:
    mse = np.mean((image.astype(np.float64) - rebuilt.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))
