"""Quality figures of a compressed image: PSNR over every pixel, CIEDE2000 over a fixed sample.

PSNR comes from the squared error of every pixel, summed while labelling. The perceptual figure
is the mean CIEDE2000 colour difference between original and rebuilt pixels (sRGB, D65 white,
the CIE 1976 L*a*b* of scikit-image's ``rgb2lab``, and the CIEDE2000 formula of Sharma, Wu and
Dalal 2005 with kL = kC = kH = 1), averaged over :data:`DE_PIXELS` pixels drawn uniformly from
the image with a fixed seed (every pixel of a smaller image): the same pixels whatever the
settings, the chunking or the workers, so figures of one image compare across runs. Its
standard error on photos is about 0.01. Pixels of an image with transparency are compared as
they look over black and over white (the mean of both differences), and its PSNR is that of
both composites (see :mod:`pipeline.quantize.rgba`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.typing import NDArray

from pipeline.quantize.oklab import SRGB_TO_LINEAR
from pipeline.quantize.sample import sample_positions

#: Pixels of an image whose CIEDE2000 is averaged.
DE_PIXELS = 20_000
#: Resolution of the summed differences (see :func:`colour_error`).
DE_UNIT = 1e-9
#: Seed that draws them (fixed: not the job's seed, so figures compare across settings).
DE_SEED = 0

# scikit-image's sRGB -> XYZ matrix and D65 reference white (skimage.color.rgb2lab)
_XYZ_FROM_RGB = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
_WHITE = np.array([0.95047, 1.0, 1.08883])


def psnr(mse: float) -> float | None:
    """Peak signal-to-noise ratio in dB of 8-bit values with mean squared error ``mse``.

    Returns None when lossless (``mse`` is 0).
    """
    if mse == 0:
        return None
    return 10 * math.log10(255**2 / mse)


def lab(rgb: NDArray[np.uint8]) -> NDArray[np.float64]:
    """CIE L*a*b* (D65) of uint8 sRGB colours ``(..., 3)``, as scikit-image's ``rgb2lab``."""
    xyz = SRGB_TO_LINEAR[rgb] @ _XYZ_FROM_RGB.T / _WHITE
    fx, fy, fz = np.moveaxis(np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116), -1, 0)
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def ciede2000(lab1: NDArray[np.float64], lab2: NDArray[np.float64]) -> NDArray[np.float64]:
    """CIEDE2000 colour difference between L*a*b* colours ``(..., 3)`` (kL = kC = kH = 1)."""
    l1, a1, b1 = np.moveaxis(lab1, -1, 0)
    l2, a2, b2 = np.moveaxis(lab2, -1, 0)
    c_mean7 = ((np.hypot(a1, b1) + np.hypot(a2, b2)) / 2) ** 7
    g = 0.5 * (1 - np.sqrt(c_mean7 / (c_mean7 + 25.0**7)))
    a1, a2 = a1 * (1 + g), a2 * (1 + g)
    c1, c2 = np.hypot(a1, b1), np.hypot(a2, b2)
    h1 = np.arctan2(b1, a1) % (2 * np.pi)
    h2 = np.arctan2(b2, a2) % (2 * np.pi)
    chroma = c1 * c2 != 0
    dh = h2 - h1
    dh = np.where(dh > np.pi, dh - 2 * np.pi, np.where(dh < -np.pi, dh + 2 * np.pi, dh))
    dh = np.where(chroma, dh, 0.0)
    d_big_h = 2 * np.sqrt(c1 * c2) * np.sin(dh / 2)
    h_sum = h1 + h2
    h_mean = np.where(
        np.abs(h1 - h2) <= np.pi,
        h_sum / 2,
        np.where(h_sum < 2 * np.pi, (h_sum + 2 * np.pi) / 2, (h_sum - 2 * np.pi) / 2),
    )
    h_mean = np.where(chroma, h_mean, h_sum)
    l_mean = (l1 + l2) / 2
    c_mean = (c1 + c2) / 2
    t = (
        1
        - 0.17 * np.cos(h_mean - np.deg2rad(30))
        + 0.24 * np.cos(2 * h_mean)
        + 0.32 * np.cos(3 * h_mean + np.deg2rad(6))
        - 0.20 * np.cos(4 * h_mean - np.deg2rad(63))
    )
    rotation = np.deg2rad(30) * np.exp(-(((np.rad2deg(h_mean) - 275) / 25) ** 2))
    c7 = c_mean**7
    r_t = -2 * np.sqrt(c7 / (c7 + 25.0**7)) * np.sin(2 * rotation)
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
    s_c = 1 + 0.045 * c_mean
    s_h = 1 + 0.015 * c_mean * t
    dl, dc, dh_term = (l2 - l1) / s_l, (c2 - c1) / s_c, d_big_h / s_h
    return np.sqrt(np.maximum(dl**2 + dc**2 + dh_term**2 + r_t * dc * dh_term, 0.0))


def _backgrounds(pixels: NDArray[np.uint8]) -> list[NDArray[np.uint8]]:
    """``(n, 3)`` RGB pixels as they are; ``(n, 4)`` RGBA ones composited on black and on white.

    Composites are rounded to uint8.
    """
    if pixels.shape[1] == 3:
        return [pixels]
    alpha = pixels[:, 3:].astype(np.uint32)
    black = pixels[:, :3] * alpha
    return [((v + 127) // 255).astype(np.uint8) for v in (black, black + 255 * (255 - alpha))]


@functools.lru_cache(maxsize=16)
def measured_positions(shape: tuple[int, int]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Rows and columns (raster order) of the pixels whose CIEDE2000 is averaged."""
    return sample_positions(shape, DE_PIXELS, DE_SEED)


def colour_error(
    block: NDArray[np.uint8],
    labels: NDArray[np.integer],
    palette: NDArray[np.uint8],
    origin: tuple[int, int],
    shape: tuple[int, int],
) -> tuple[int, int]:
    """Summed CIEDE2000 of the measured pixels (:func:`measured_positions`) inside a block.

    Parameters
    ----------
    block : ndarray of uint8, shape (h, w, 3)
        Original pixels of the block, which starts at ``origin`` (row, column) of an image of
        ``shape`` (height, width).
    labels : ndarray, shape (h, w)
        The block's stored labels, rebuilt as ``palette[labels]``.
    palette : ndarray of uint8, shape (k, 3)

    Returns
    -------
    total : int
        Sum of the CIEDE2000 differences of the measured pixels in the block, each rounded to
        a multiple of :data:`DE_UNIT`, in those units: integer sums of blocks add up to the
        same total whatever the chunking.
    count : int
        How many there are.
    """
    rows, cols = measured_positions(shape)
    top, left = origin
    height, width = labels.shape
    first, last = np.searchsorted(rows, [top, top + height])
    r, c = rows[first:last] - top, cols[first:last] - left
    inside = (c >= 0) & (c < width)
    r, c = r[inside], c[inside]
    if not len(r):
        return 0, 0
    seen = zip(
        _backgrounds(block[r, c]),
        _backgrounds(palette[labels[r, c].astype(np.intp)]),
        strict=True,
    )
    differences = np.mean([ciede2000(lab(a), lab(b)) for a, b in seen], axis=0)
    units = np.rint(differences / DE_UNIT).astype(np.int64)
    return int(units.sum()), len(r)
