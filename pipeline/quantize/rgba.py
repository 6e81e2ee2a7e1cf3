"""Images with transparency: an RGBA palette, fitted and assigned on how the colours look.

A pixel ``(r, g, b, a)`` is compared with others by how it looks over black and over white:
its composites ``(c a)`` and ``(c a + 255 (255 - a))`` for each channel c, six integers on
0..65025 (255 times the 8-bit composites). The distance between two pixels is the squared
Euclidean distance between these vectors: the error seen over black plus the error seen over
white. So all fully transparent pixels are the same point (whatever colour they hide), a
difference in alpha counts as much as it shows (a colour over white), and for opaque pixels
distances are twice 255**2 times the plain RGB distances (same labels). pngquant compares
colours over black and white alike, taking the larger of the two errors; a sum keeps the
distance Euclidean, so that k-means centres are plain means. Labels are the exact nearest
palette entry by this distance (computed in int64, exactly), ties to the lowest index. The
palette is stored as straight (not premultiplied) uint8 RGBA; an entry of alpha 0 is
``(0, 0, 0, 0)``, and an image with fully transparent pixels always has that entry (the
first), so that they stay fully transparent. PSNR is that of the composites over black and
white together (for opaque images, the RGB PSNR).

Colours are counted with a sort (32-bit keys ``r << 24 | g << 16 | b << 8 | a``), not the
24-bit colour table of opaque images: images with transparency are mostly icons, logos and
graphics, with few colours.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.quantize.colours import nearest_centre
from pipeline.quantize.kmeans import neediest, update
from pipeline.quantize.lloyd import dask_ml_k_means

#: Scale of the composites (255 * 255); squared distances are FULL times the squared errors
#: of the 8-bit composites over black and over white, summed.
FULL = 255 * 255


def opaque(pixels: NDArray[np.uint8]) -> bool:
    """Whether every pixel of ``(..., 4)`` RGBA ``pixels`` is fully opaque."""
    return bool((pixels[..., 3] == 255).all())


def canonical(pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """``(..., 4)`` RGBA pixels with the hidden colour of fully transparent ones set to 0."""
    out = np.array(pixels, dtype=np.uint8, copy=True)
    out[out[..., 3] == 0] = 0
    return out


def pack(pixels: NDArray[np.uint8]) -> NDArray[np.uint32]:
    """32-bit keys of ``(..., 4)`` uint8 RGBA values."""
    return np.ascontiguousarray(pixels, dtype=np.uint8).view(">u4")[..., 0].astype(np.uint32)


def unpack(keys: NDArray[np.integer]) -> NDArray[np.uint8]:
    """Inverse of :func:`pack`: ``(...)`` keys to ``(..., 4)`` uint8 RGBA."""
    k = np.asarray(keys, dtype=np.uint32)
    return np.stack([(k >> 24) & 255, (k >> 16) & 255, (k >> 8) & 255, k & 255], -1).astype(
        np.uint8
    )


def histogram(pixels: NDArray[np.uint8]) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
    """Distinct (canonical) RGBA colours of ``(..., 4)`` pixels, sorted, and their counts."""
    keys, counts = np.unique(pack(canonical(pixels)).ravel(), return_counts=True)
    return keys.astype(np.uint32), counts.astype(np.int64)


def seen(rgba: NDArray[np.uint8]) -> NDArray[np.int64]:
    """``(n, 6)`` composites over black and over white of uint8 RGBA colours, times 255."""
    values = rgba.astype(np.int64)
    alpha = values[:, 3:4]
    black = values[:, :3] * alpha
    return np.concatenate([black, black + 255 * (255 - alpha)], axis=1)


def straight(centres: NDArray[np.float64]) -> NDArray[np.uint8]:
    """uint8 RGBA palette nearest to ``(k, 6)`` centres of :func:`seen` vectors."""
    hidden = (centres[:, 3:] - centres[:, :3]).mean(axis=1) / 255  # 255 - alpha
    alpha = np.clip(np.rint(255 - hidden), 0, 255)
    shown = alpha > 0
    rgb = np.zeros((len(centres), 3))
    rgb[shown] = centres[shown, :3] / alpha[shown, None]
    palette = np.concatenate([np.clip(np.rint(rgb), 0, 255), alpha[:, None]], axis=1)
    palette[~shown] = 0
    return palette.astype(np.uint8)


def nearest(
    colours: NDArray[np.uint8], palette: NDArray[np.uint8]
) -> tuple[NDArray[np.intp], NDArray[np.int64]]:
    """Exact nearest palette entry of each RGBA colour, and its squared distance.

    Between integer :func:`seen` vectors (see the module docstring); ties to the lowest index.
    :func:`pipeline.quantize.colours.nearest_centre` computes in float64, where every such distance
    (an integer below 2**35) is exact.
    """
    labels, dist = nearest_centre(seen(colours).astype(np.float64), seen(palette))
    return labels, dist.astype(np.int64)


def _lloyd(
    points: NDArray[np.float64],
    weights: NDArray[np.float64],
    centres: NDArray[np.float64],
    max_iter: int,
    pinned: int = 0,
) -> NDArray[np.float64]:
    """Weighted Lloyd iterations on :func:`seen` points; an emptied centre keeps its place.

    The first ``pinned`` centres never move.
    """
    for _ in range(max_iter):
        new = update(points, weights, nearest_centre(points, centres)[0], centres)
        new[:pinned] = centres[:pinned]
        if np.array_equal(new, centres):
            break
        centres = new
    return centres


def _polish(
    colours: NDArray[np.uint8],
    counts: NDArray[np.int64],
    palette: NDArray[np.uint8],
    max_iter: int,
    pinned: int,
) -> tuple[NDArray[np.uint8], NDArray[np.intp], int]:
    """Lloyd iterations on the uint8 palette: exact labels, means rounded to straight RGBA.

    The first ``pinned`` entries stay. Returns the palette of least error met, its labels and
    that error (see :func:`nearest`).
    """
    points = seen(colours).astype(np.float64)
    labels, dist = nearest(colours, palette)
    best = (palette, labels, int((dist * counts).sum()))
    for _ in range(max_iter):
        start = seen(palette).astype(np.float64)
        centres = _lloyd(points, counts.astype(np.float64), start, 1, pinned)
        new = straight(centres)
        if np.array_equal(new, palette):
            break
        palette = new
        labels, dist = nearest(colours, palette)
        error = int((dist * counts).sum())
        if error < best[2]:
            best = (palette, labels, error)
    return best


def _fill(
    colours: NDArray[np.uint8],
    counts: NDArray[np.int64],
    palette: NDArray[np.uint8],
    k: int,
) -> NDArray[np.uint8]:
    """The palette without unused or repeated entries, grown to ``min(k, colours)`` entries.

    Colours adding most error become entries of their own (as :func:`pipeline.quantize.fit.fill`).
    """
    labels, dist = nearest(colours, palette)
    palette = palette[np.unique(labels)]  # every colour keeps its entry, and its distance
    short = min(k, len(colours)) - len(palette)
    if short > 0:
        palette = np.concatenate([palette, colours[neediest(dist * counts, short)]])
    return palette


#: Lloyd iterations over the distinct colours, and polish iterations, per effort level.
EFFORT = {0: (0, 2), 1: (10, 3), 2: (30, 5), 3: (60, 10)}


def fit_rgba(
    sample: NDArray[np.uint8],
    keys: NDArray[np.uint32],
    counts: NDArray[np.int64],
    k: int,
    *,
    random_state: int,
    effort: int = 1,
) -> tuple[NDArray[np.uint8], NDArray[np.intp], dict[str, Any]]:
    """Fit an RGBA palette of at most ``k`` entries to an image with transparency.

    k-means++ seeds on the sample's :func:`seen` colours (scikit-learn's
    ``kmeans_plusplus``), weighted Lloyd iterations over the image's distinct colours, then
    polishing on the uint8 palette and filling unused entries, as for opaque images.

    Parameters
    ----------
    sample : ndarray of uint8, shape (n, 4)
        Pixels drawn at random from the image.
    keys, counts : ndarray
        The image's colour histogram (:func:`histogram`).
    k : int
    random_state : int
    effort : int
        0 to 3, as for opaque images.

    Returns
    -------
    palette : ndarray of uint8, shape (m, 4)
    labels : ndarray of intp
        Exact nearest entry of each of ``keys``.
    info : dict
    """
    dask_ml_k_means()  # scikit-learn is imported with it, by one thread
    from sklearn.cluster import kmeans_plusplus

    colours = unpack(keys)
    if len(colours) <= k:
        palette = colours
        method = "distinct colours"
    else:
        lloyd, polish_iter = EFFORT[effort]
        # fully transparent pixels (key 0, first) get an entry of their own, exact, that stays
        pin = colours[:1] if keys[0] == 0 else colours[:0]
        points = seen(canonical(sample)).astype(np.float64)
        seeds, _ = kmeans_plusplus(points, k - len(pin), random_state=random_state)
        centres = _lloyd(
            seen(colours).astype(np.float64),
            counts.astype(np.float64),
            np.concatenate([seen(pin), seeds]),
            lloyd,
            len(pin),
        )
        palette, _, _ = _polish(colours, counts, straight(centres), polish_iter, len(pin))
        for _ in range(2):
            palette = _fill(colours, counts, palette, k)
            palette, _, _ = _polish(colours, counts, palette, polish_iter, len(pin))
        palette = _fill(colours, counts, palette, k)
        method = "k-means on RGBA seen over black and white (k-means++ seeds on the sample)"
    labels, dist = nearest(colours, palette)
    used = np.unique(labels)
    if len(used) < len(palette):
        palette = palette[used]
        labels, dist = nearest(colours, palette)
    info = {
        "method": method,
        "distinct_colors": len(keys),
        "counted_pixels": int(counts.sum()),
        "sample_size": len(sample),
        "mse": float((dist * counts).sum() / FULL / (6 * counts.sum())),
    }
    return palette, labels, info


def label_rgba(
    block: NDArray[np.uint8], palette: NDArray[np.uint8], dtype: np.dtype
) -> tuple[NDArray[np.unsignedinteger], int]:
    """Labels (h, w) of an (h, w, 4) RGBA block, and their summed squared error.

    The error is :func:`nearest`'s: divided by :data:`FULL`, it is the squared error of the
    8-bit composites over black and over white, summed (for opaque pixels, twice the RGB
    error).
    """
    keys, inverse = np.unique(pack(canonical(block)).ravel(), return_inverse=True)
    labels, dist = nearest(unpack(keys), palette)
    error = int((dist * np.bincount(inverse.ravel(), minlength=len(keys))).sum())
    return labels[inverse].reshape(block.shape[:2]).astype(dtype), error
