"""OKLab coordinates of uint8 sRGB colours, and back, for fitting and labelling in OKLab.

OKLab (Björn Ottosson, 2020, https://bottosson.github.io/posts/oklab/) is a perceptual colour
space: Euclidean distances in it follow perceived colour differences far better than distances
between sRGB values. A uint8 sRGB colour ``(R, G, B)`` gets its coordinates in float64 by one
formula, :func:`coordinates`:

1. each channel is linearised by the sRGB transfer function, ``v = value / 255``,
   ``v / 12.92`` if ``v <= 0.04045`` else ``((v + 0.055) / 1.055) ** 2.4``
   (:data:`SRGB_TO_LINEAR`, a 256-entry table);
2. cone responses ``l, m, s = cbrt(M1 @ (r, g, b))`` (:data:`M1`);
3. ``(L, a, b) = M2 @ (l, m, s)`` (:data:`M2`), L from 0 (black) to 1 (white);
4. the fit's coordinates are ``(L, a, b)`` times :data:`WEIGHTS` (75, 100 and 125), that is
   ``W @ (l, m, s)`` with ``W = WEIGHTS[:, None] * M2`` (:data:`SCALED_M2`).

Each matrix product is written out as ``(M[i, 0] * x + M[i, 1] * y) + M[i, 2] * z``, in
float64, in that order, so the coordinates (and the labels that depend on them) are the same
wherever they are computed. Squared distances between two colours are then
``d0 * d0 + d1 * d1 + d2 * d2`` (in that order) of the coordinates' differences.

:data:`WEIGHTS` scale OKLab by 100 (:data:`SCALE`, so that coordinates are of the order of
CIELAB's) and weigh lightness less and the blue-yellow axis more than plain OKLab (see its note).
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

#: OKLab is multiplied by ``SCALE`` (L then runs from 0 to 100, like CIELAB's L*), then weighted.
SCALE = 100.0

#: Weights of (L, a, b) in the fit's coordinates, times :data:`SCALE`. Lightness weighs less
#: than in plain OKLab and the blue-yellow axis more: at 128 colours, mean over eight photos,
#: this lowers both the CIEDE2000 error (1.92 to 1.80) and the RGB error (36.26 to 36.55 dB
#: PSNR) of plain OKLab; a larger lightness weight worsens both (weight 2: 2.28, 35.07 dB).
WEIGHTS: Float = SCALE * np.array([0.75, 1.0, 1.25])

#: :data:`M2` with each row scaled by its axis' weight.
SCALED_M2: Float = WEIGHTS[:, None] * M2


def _product(matrix: Float, x: Float, y: Float, z: Float) -> list[Float]:
    """``matrix @ (x, y, z)`` row by row, each as ``(m0 * x + m1 * y) + m2 * z``."""
    return [row[0] * x + row[1] * y + row[2] * z for row in matrix]


def coordinates(colours: NDArray[np.uint8]) -> Float:
    """Fit coordinates (weighted OKLab, see the module's formula) of uint8 sRGB ``(..., 3)``.

    Returns
    -------
    ndarray of float64, shape (..., 3)
    """
    linear = [SRGB_TO_LINEAR[colours[..., c]] for c in range(3)]
    cone = [np.cbrt(v) for v in _product(M1, *linear)]
    return np.stack(_product(SCALED_M2, *cone), axis=-1)


def to_srgb(points: Float) -> Float:
    """The sRGB values (0..255, not rounded) of fit coordinates ``(..., 3)``, in the gamut.

    The inverse of :func:`coordinates` up to the precision of the published inverse matrices
    (about 1e-9); points outside the sRGB gamut are clipped in linear light.
    """
    lab = np.asarray(points, dtype=np.float64) / WEIGHTS
    cone = [v**3 for v in _product(M2_INVERSE, *(lab[..., c] for c in range(3)))]
    linear = np.clip(np.stack(_product(M1_INVERSE, *cone), axis=-1), 0.0, 1.0)
    encoded = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.clip(encoded * 255, 0.0, 255.0)


def to_uint8(points: Float) -> NDArray[np.uint8]:
    """The uint8 sRGB colours of fit coordinates ``(..., 3)``: :func:`to_srgb`, rounded."""
    return np.rint(to_srgb(points)).astype(np.uint8)
