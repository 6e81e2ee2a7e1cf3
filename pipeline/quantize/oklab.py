"""Fit coordinates of uint8 sRGB colours (RGB and OKLab together), and back to uint8.

OKLab (Björn Ottosson, 2020, https://bottosson.github.io/posts/oklab/) is a perceptual colour
space: Euclidean distances in it follow perceived colour differences far better than distances
between sRGB values. The ``"oklab"`` space (:data:`pipeline.quantize.colours.SPACES`) blends the
two: a uint8 sRGB colour ``(R, G, B)`` gets six float64 coordinates by one formula,
:func:`coordinates`:

1. the first three are ``R * RGB_FACTOR``, ``G * RGB_FACTOR``, ``B * RGB_FACTOR``
   (:data:`RGB_FACTOR` = ``SCALE * sqrt(RGB_SHARE) / 255``);
2. for the last three, each channel is linearised by the sRGB transfer function,
   ``v = value / 255``, ``v / 12.92`` if ``v <= 0.04045`` else ``((v + 0.055) / 1.055) ** 2.4``
   (:data:`SRGB_TO_LINEAR`, a 256-entry table);
3. cone responses ``l, m, s = cbrt(M1 @ (r, g, b))`` (:data:`M1`);
4. the last three coordinates are ``W @ (l, m, s)`` with ``W = WEIGHTS[:, None] * M2``
   (:data:`SCALED_M2`), that is OKLab's ``(L, a, b) = M2 @ (l, m, s)`` (:data:`M2`, L from 0
   for black to 1 for white) times :data:`WEIGHTS`, ``SCALE * sqrt(1 - RGB_SHARE)`` times
   :data:`LAB_WEIGHTS`.

Each matrix product is written out as ``(M[i, 0] * x + M[i, 1] * y) + M[i, 2] * z``, in
float64, in that order, so the coordinates (and the labels that depend on them) are the same
wherever they are computed. The squared distance between two colours is then
``d0 * d0 + d1 * d1 + ... + d5 * d5``, added in that order, of the coordinates' differences
(:func:`pipeline.quantize.colours.squared_distance`): :data:`RGB_SHARE` of the squared RGB distance
(values over 255) plus the rest of the squared weighted OKLab distance, both times
``SCALE ** 2``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Float = NDArray[np.float64]

#: The linear-light value of each uint8 sRGB value (IEC 61966-2-1 transfer function).
SRGB_TO_LINEAR: Float = np.where(
    np.arange(256) <= 10,  # value / 255 <= 0.04045
    np.arange(256) / 255 / 12.92,
    ((np.arange(256) / 255 + 0.055) / 1.055) ** 2.4,
)

#: Linear sRGB to LMS cone responses (Ottosson's M1).
M1: Float = np.array(
    [
        [0.4122214708, 0.5363325363, 0.0514459929],
        [0.2119034982, 0.6806995451, 0.1073969566],
        [0.0883024619, 0.2817188376, 0.6299787005],
    ]
)
#: Cube roots of the cone responses to (L, a, b) (Ottosson's M2).
M2: Float = np.array(
    [
        [0.2104542553, 0.7936177850, -0.0040720468],
        [1.9779984951, -2.4285922050, 0.4505937099],
        [0.0259040371, 0.7827717662, -0.8086757660],
    ]
)
#: Inverses of :data:`M2` and :data:`M1` as Ottosson publishes them.
M2_INVERSE: Float = np.array(
    [
        [1.0, 0.3963377774, 0.2158037573],
        [1.0, -0.1055613458, -0.0638541728],
        [1.0, -0.0894841775, -1.2914855480],
    ]
)
M1_INVERSE: Float = np.array(
    [
        [4.0767416621, -3.3077115913, 0.2309699292],
        [-1.2684380046, 2.6097574011, -0.3413193965],
        [-0.0041960863, -0.7034186147, 1.7076147010],
    ]
)

#: Coordinates are scaled by ``SCALE``: sRGB values from 0 to 255 map to 0 to ``SCALE`` and
#: OKLab's lightness from 0 to 1 too, before the weights below (so that they are of the order of
#: CIELAB's).
SCALE = 100.0

#: Share of the squared RGB distance in the squared distance (the weighted OKLab distance has
#: the rest). At 128 colours, mean over eight photos (benchmarks/photo8.py; CIEDE2000 over every
#: pixel): weighted OKLab alone gives a mean CIEDE2000 error of 1.80 but 36.55 dB PSNR, 0.9 dB
#: below the RGB fit; this blend gives 1.86 and 37.38 dB (RGB: 2.03, 37.45 dB). More RGB raises
#: both (0.4: 1.90, 37.45 dB), less lowers both (0.25: 1.85, 37.32 dB).
RGB_SHARE = 0.3

#: Relative weights of (L, a, b) in the OKLab part: lightness weighs less than in plain OKLab
#: (the RGB part carries much of it) and the blue-yellow axis more. Lightness 0.75 gives 1.89
#: and 37.39 dB; blue-yellow 1.5, 1.85 and 37.31 dB.
LAB_WEIGHTS: Float = np.array([0.4, 1.0, 1.25])

#: Factor of the uint8 sRGB values in the first three coordinates.
RGB_FACTOR = SCALE * np.sqrt(RGB_SHARE) / 255

#: Weights of (L, a, b) in the last three coordinates.
WEIGHTS: Float = SCALE * np.sqrt(1.0 - RGB_SHARE) * LAB_WEIGHTS

#: :data:`M2` with each row scaled by its axis' weight.
SCALED_M2: Float = WEIGHTS[:, None] * M2

#: Steps from a candidate colour to its neighbours (every channel -1, 0 or +1), in the order
#: :func:`to_uint8` tries them.
STEPS: NDArray[np.int16] = np.array(
    [(r, g, b) for r in (-1, 0, 1) for g in (-1, 0, 1) for b in (-1, 0, 1)], dtype=np.int16
)


def _product(matrix: Float, x: Float, y: Float, z: Float) -> list[Float]:
    """``matrix @ (x, y, z)`` row by row, each as ``(m0 * x + m1 * y) + m2 * z``."""
    return [row[0] * x + row[1] * y + row[2] * z for row in matrix]


def lab(colours: NDArray[np.uint8]) -> Float:
    """Weighted OKLab ``W @ (l, m, s)`` of uint8 sRGB ``(..., 3)``: the last three coordinates.

    Returns
    -------
    ndarray of float64, shape (..., 3)
    """
    linear = [SRGB_TO_LINEAR[colours[..., c]] for c in range(3)]
    cone = [np.cbrt(v) for v in _product(M1, *linear)]
    return np.stack(_product(SCALED_M2, *cone), axis=-1)


def coordinates(colours: NDArray[np.uint8]) -> Float:
    """Fit coordinates (see the module's formula) of uint8 sRGB ``(..., 3)``.

    Returns
    -------
    ndarray of float64, shape (..., 6)
        ``RGB_FACTOR * (R, G, B)``, then :func:`lab`.
    """
    return np.concatenate([colours * RGB_FACTOR, lab(colours)], axis=-1)


def to_srgb(points: Float) -> Float:
    """The sRGB values (0..255, not rounded) of weighted OKLab points ``(..., 3)``, in the gamut.

    The inverse of :func:`lab` up to the precision of the published inverse matrices (about
    1e-9); points outside the sRGB gamut are clipped in linear light.
    """
    weighted = np.asarray(points, dtype=np.float64) / WEIGHTS
    cone = [v**3 for v in _product(M2_INVERSE, *(weighted[..., c] for c in range(3)))]
    linear = np.clip(np.stack(_product(M1_INVERSE, *cone), axis=-1), 0.0, 1.0)
    encoded = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.clip(encoded * 255, 0.0, 255.0)


def to_uint8(points: Float) -> NDArray[np.uint8]:
    """The uint8 sRGB colours nearest fit coordinates ``(..., 6)``, among a few candidates.

    A point's candidates are two colours and their 26 neighbours each (:data:`STEPS`): its
    first three coordinates divided by :data:`RGB_FACTOR`, and its last three back to sRGB
    (:func:`to_srgb`), each clipped to 0..255 and rounded. The nearest candidate by the squared
    distance of :func:`coordinates` wins, the first in that order on ties. Any point
    ``coordinates(colour)`` gives back ``colour``.

    Returns
    -------
    ndarray of uint8, shape (..., 3)
    """
    points = np.asarray(points, dtype=np.float64)
    flat = points.reshape(-1, points.shape[-1])
    guesses = [flat[:, :3] / RGB_FACTOR, to_srgb(flat[:, 3:])]
    bases = np.stack([np.rint(np.clip(g, 0.0, 255.0)) for g in guesses], axis=1)
    candidates = bases.astype(np.int16)[:, :, None, :] + STEPS  # (n, 2, 27, 3)
    candidates = np.clip(candidates, 0, 255).astype(np.uint8).reshape(len(flat), -1, 3)
    diff = coordinates(candidates) - flat[:, None, :]
    best = (diff * diff).sum(axis=2).argmin(axis=1)
    return candidates[np.arange(len(flat)), best].reshape(*points.shape[:-1], 3)
