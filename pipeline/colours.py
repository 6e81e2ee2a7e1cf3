"""Pure numpy kernels on RGB colours: packing, counting, and the exact nearest palette entry.

Colours are handled as integers throughout. A pixel ``(r, g, b)`` packs into the 24-bit key
``r << 16 | g << 8 | b``; distances are squared Euclidean distances between uint8 triples, which
this module computes exactly (see :func:`nearest`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

#: Distances per strip in :func:`nearest_centre`: bounds the (strip, k) float32 matrix to 2 MiB,
#: which stays in cache; OpenBLAS is several times slower on taller strips of this 3-column product.
STRIP_VALUES = 1 << 19
#: Up to this many centres, :func:`nearest_centre` takes differences instead of a matrix product.
FEW_CENTRES = 4


def pack(pixels: NDArray[np.uint8]) -> NDArray[np.uint32]:
    """Pack ``(..., 3)`` uint8 RGB values into 24-bit integer keys of shape ``(...)``."""
    keys: NDArray[np.uint32] = pixels[..., 0].astype(np.uint32)
    keys <<= 8  # in place, channel by channel: no (..., 3) uint32 copy (3x faster)
    keys |= pixels[..., 1]
    keys <<= 8
    keys |= pixels[..., 2]
    return keys


def unpack(keys: NDArray[np.integer]) -> NDArray[np.uint8]:
    """Inverse of :func:`pack`: 24-bit keys ``(...)`` to uint8 RGB ``(..., 3)``."""
    k = np.asarray(keys, dtype=np.uint32)
    return np.stack([(k >> 16) & 255, (k >> 8) & 255, k & 255], axis=-1).astype(np.uint8)


def histogram(pixels: NDArray[np.uint8]) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
    """Distinct colours of ``(..., 3)`` uint8 pixels and how often each occurs.

    Returns
    -------
    keys : ndarray of uint32
        Sorted 24-bit keys of the distinct colours.
    counts : ndarray of int64
        Number of pixels of each colour.
    """
    keys, counts = np.unique(pack(pixels).ravel(), return_counts=True)
    return keys, counts.astype(np.int64)


def merge_histograms(
    *parts: tuple[NDArray[np.uint32], NDArray[np.int64]],
) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
    """Merge several ``(keys, counts)`` histograms into one (sorted keys, summed counts)."""
    if len(parts) == 1:
        return parts[0]
    keys = np.concatenate([k for k, _ in parts])
    counts = np.concatenate([c for _, c in parts])
    merged, inverse = np.unique(keys, return_inverse=True)
    return merged, np.bincount(inverse, weights=counts, minlength=len(merged)).astype(np.int64)


def nearest_centre(
    points: NDArray[np.float32], centres: NDArray[np.float32]
) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
    """Nearest centre of each point and its squared distance, in float32; ties to the lowest index.

    Distances are ``|c|^2 - 2 p.c`` from a matrix product over strips of rows (plus ``|p|^2`` for
    the returned distance), or direct differences for a handful of centres.
    """
    if len(centres) <= FEW_CENTRES:
        dist = np.full(len(points), np.inf, dtype=np.float32)
        labels = np.zeros(len(points), dtype=np.intp)
        for j, c in enumerate(centres):
            d = ((points - c) ** 2).sum(axis=1)
            closer = d < dist
            dist[closer] = d[closer]
            labels[closer] = j
        return labels, dist
    cc = (centres * centres).sum(axis=1)
    minus_2c = -2.0 * centres.T
    labels = np.empty(len(points), dtype=np.intp)
    dist = np.empty(len(points), dtype=np.float32)
    step = max(1, STRIP_VALUES // len(centres))
    for start in range(0, len(points), step):
        p = points[start : start + step]
        d = p @ minus_2c
        d += cc
        j = d.argmin(axis=1)
        labels[start : start + step] = j
        dist[start : start + step] = np.maximum(d[np.arange(len(p)), j] + (p * p).sum(axis=1), 0)
    return labels, dist


def nearest(pixels: NDArray[np.uint8], palette: NDArray[np.uint8]) -> NDArray[np.intp]:
    """Index of the nearest palette entry for each pixel, exactly.

    The nearest entry minimises the squared Euclidean distance between uint8 RGB triples; ties go
    to the lowest index. This equals the brute-force integer computation: :func:`nearest_centre`
    works in float32, where for uint8 inputs every operand and every partial sum is an integer
    below 2**24 and therefore exact.

    Parameters
    ----------
    pixels : ndarray of uint8, shape (n, 3)
    palette : ndarray of uint8, shape (k, 3)

    Returns
    -------
    ndarray of intp, shape (n,)
    """
    return nearest_centre(pixels.astype(np.float32), palette.astype(np.float32))[0]
