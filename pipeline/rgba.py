"""Images with transparency: an RGBA palette, fitted and assigned on premultiplied colours.

A pixel ``(r, g, b, a)`` is compared with others through its premultiplied form
``(r a, g a, b a, 255 a)``, integers on 0..65025: what the pixel adds over any background. All
fully transparent pixels are then the same point (whatever colour they hide), and for opaque
pixels distances are 255**2 times the plain RGB distances. Labels are the exact nearest palette
entry by the squared Euclidean distance between these integer vectors (computed in int64,
exactly), ties to the lowest index. The palette is stored as straight (not premultiplied) uint8
RGBA; an entry of alpha 0 is ``(0, 0, 0, 0)``.

Colours are counted with a sort (32-bit keys ``r << 24 | g << 16 | b << 8 | a``), not the
24-bit colour table of opaque images: images with transparency are mostly icons, logos and
graphics, with few colours.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

#: Scale of premultiplied values (255 * 255); squared distances are FULL times those of the
#: premultiplied colours on the 0..255 scale.
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


def premultiplied(rgba: NDArray[np.uint8]) -> NDArray[np.int64]:
    """``(n, 4)`` integer premultiplied colours ``(r a, g a, b a, 255 a)`` of uint8 RGBA."""
    values = rgba.astype(np.int64)
    alpha = values[:, 3:4]
    return np.concatenate([values[:, :3] * alpha, alpha * 255], axis=1)


def straight(centres: NDArray[np.float64]) -> NDArray[np.uint8]:
    """uint8 RGBA palette nearest to ``(k, 4)`` premultiplied centres (0..65025 scale)."""
    alpha = np.clip(np.rint(centres[:, 3] / 255), 0, 255)
    shown = alpha > 0
    rgb = np.zeros((len(centres), 3))
    rgb[shown] = centres[shown, :3] / alpha[shown, None]
    palette = np.concatenate([np.clip(np.rint(rgb), 0, 255), alpha[:, None]], axis=1)
    palette[~shown] = 0
    return palette.astype(np.uint8)


@numba.njit(nogil=True, cache=True)
def _nearest(points, centres):  # type: ignore[no-untyped-def]
    # Every point against every centre, in the arrays' own type (int64: exact); the first of
    # equal distances wins.
    n, k, d = points.shape[0], centres.shape[0], points.shape[1]
    labels = np.empty(n, dtype=np.intp)
    dist = np.empty(n, dtype=points.dtype)
    for i in range(n):
        best = centres.dtype.type(0)
        label = -1
        for j in range(k):
            total = centres.dtype.type(0)
            for c in range(d):
                diff = points[i, c] - centres[j, c]
                total += diff * diff
            if label < 0 or total < best:
                best, label = total, j
        labels[i] = label
        dist[i] = best
    return labels, dist


def nearest(
    colours: NDArray[np.uint8], palette: NDArray[np.uint8]
) -> tuple[NDArray[np.intp], NDArray[np.int64]]:
    """Exact nearest palette entry of each RGBA colour, and its squared premultiplied distance.

    Both in the integer premultiplied space (see the module docstring); ties to the lowest
    index.
    """
    return _nearest(premultiplied(colours), premultiplied(palette))


def _lloyd(
    points: NDArray[np.float64],
    weights: NDArray[np.float64],
    centres: NDArray[np.float64],
    max_iter: int,
) -> NDArray[np.float64]:
    """Weighted Lloyd iterations on premultiplied points; an emptied centre keeps its place."""
    k = len(centres)
    for _ in range(max_iter):
        labels, _ = _nearest(points, centres)
        mass = np.bincount(labels, weights=weights, minlength=k)
        sums = np.stack(
            [np.bincount(labels, weights=weights * points[:, c], minlength=k) for c in range(4)],
            axis=1,
        )
        full = mass > 0
        new = centres.copy()
        new[full] = sums[full] / mass[full, None]
        if np.array_equal(new, centres):
            break
        centres = new
    return centres


def _polish(
    colours: NDArray[np.uint8],
    counts: NDArray[np.int64],
    palette: NDArray[np.uint8],
    max_iter: int,
) -> tuple[NDArray[np.uint8], NDArray[np.intp], int]:
    """Lloyd iterations on the uint8 palette: exact labels, means rounded to straight RGBA.

    Returns the palette of least error seen, its labels and that error (premultiplied units).
    """
    points = premultiplied(colours).astype(np.float64)
    labels, dist = nearest(colours, palette)
    best = (palette, labels, int((dist * counts).sum()))
    for _ in range(max_iter):
        centres = _lloyd(
            points, counts.astype(np.float64), premultiplied(palette).astype(np.float64), 1
        )
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

    Colours adding most error become entries of their own (as :func:`pipeline.fit.fill`).
    """
    labels, dist = nearest(colours, palette)
    palette = palette[np.unique(labels)]
    short = min(k, len(colours)) - len(palette)
    if short > 0:
        labels, dist = nearest(colours, palette)
        error = dist * counts
        worst = np.argsort(-error, kind="stable")[:short]
        worst = np.sort(worst[error[worst] > 0])
        palette = np.concatenate([palette, colours[worst]])
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

    k-means++ seeds on the sample's premultiplied colours (scikit-learn's
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
    from sklearn.cluster import kmeans_plusplus

    colours = unpack(keys)
    if len(colours) <= k:
        palette = colours
        method = "distinct colours"
    else:
        lloyd, polish_iter = EFFORT[effort]
        points = canonical(sample)
        seeds, _ = kmeans_plusplus(
            premultiplied(points).astype(np.float64), k, random_state=random_state
        )
        centres = _lloyd(
            premultiplied(colours).astype(np.float64), counts.astype(np.float64), seeds, lloyd
        )
        palette, _, _ = _polish(colours, counts, straight(centres), polish_iter)
        for _ in range(2):
            palette = _fill(colours, counts, palette, k)
            palette, _, _ = _polish(colours, counts, palette, polish_iter)
        palette = _fill(colours, counts, palette, k)
        method = "k-means on premultiplied RGBA (k-means++ seeds on the sample)"
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
        "mse": float((dist * counts).sum() / FULL / (4 * counts.sum())),
    }
    return palette, labels, info


def label_rgba(
    block: NDArray[np.uint8], palette: NDArray[np.uint8], dtype: np.dtype
) -> tuple[NDArray[np.unsignedinteger], int]:
    """Labels (h, w) of an (h, w, 4) RGBA block, and their summed squared premultiplied error.

    The error is in premultiplied units: divided by :data:`FULL`, it is the squared error of
    the premultiplied colours on the 0..255 scale (for opaque pixels, the plain RGB error).
    """
    keys, inverse = np.unique(pack(canonical(block)).ravel(), return_inverse=True)
    labels, dist = nearest(unpack(keys), palette)
    error = int((dist * np.bincount(inverse.ravel(), minlength=len(keys))).sum())
    return labels[inverse].reshape(block.shape[:2]).astype(dtype), error
