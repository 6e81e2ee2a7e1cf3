"""Choose the palette size from a target: pngquant's quality (0-100), or PSNR in dB.

``--quality MIN-MAX`` works as pngquant's option of that name: the image gets the smallest
palette (up to ``--colors``) whose quality reaches MAX; if even ``--colors`` colours stay below
MIN, the image fails. Between MIN and MAX, ``--colors`` colours are used. ``--psnr MIN-MAX`` is
the same search with PSNR in dB as the measure.

The quality is libimagequant's (version 2.17, pngquant 2.17's library; ``quality_to_mse`` and
``mse_to_quality`` in its ``libimagequant.c``), computed from the same error:

- each colour channel ``v`` (0..255) becomes ``(v / 255) ** (0.5499 / 0.45455)``: 0..1, from
  the sRGB-like gamma libimagequant assumes (1 / 2.2) to its internal gamma 0.5499, then
  multiplied by the alpha ``a / 255`` (premultiplied);
- the error of a pixel is the sum over R, G and B of the squared differences of those values,
  unweighted (a channel of a pixel with transparency counts the larger of its differences seen
  over black and over white, as libimagequant's ``colordifference``);
- the image's error ``E`` is its mean over pixels, and its quality the largest whole ``Q`` in
  1..100 with ``E <= quality_to_mse(Q) + 1e-6`` (0 if none), where ``quality_to_mse(100) = 0``
  and otherwise ``quality_to_mse(Q) = max(0, 0.016 / (0.001 + Q) - 0.001)
  + 2.5 / (210 + Q) ** 1.2 * (100.1 - Q) / 100``.

pngquant prints ``E * 65536 / 6`` as its ``MSE`` (``pngquant -v``). Quality 80 is an error
``E`` of 0.00056 (pngquant's MSE 6.1), 65 of 0.00104 (MSE 11.3), 90 of 0.00027 (MSE 2.9): spread
evenly over the three channels, a PSNR of 37.3, 34.6 and 40.5 dB on those 0..1 values.
libimagequant 4 (pngquant 3) weighs the channels (R 0.5, G 1, B 0.45; internal gamma 0.57) and
scales the mapping to match, so its figures are close but not the same.

The measure of a candidate palette is taken over the image's counted colours (every pixel of
an image up to ``count_pixels``, else a regular grid), before any dithering, as libimagequant
measures its palette before remapping; so no pixel is labelled until the size is chosen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.errors import ImageProblem
from pipeline.quantize import colours, rgba
from pipeline.quantize.fit import Fit
from pipeline.quantize.metrics import psnr

#: libimagequant's internal gamma, and the gamma it gives an image that does not say (sRGB's
#: approximation, 1 / 2.2).
INTERNAL_GAMMA, IMAGE_GAMMA = 0.5499, 0.45455
#: A uint8 channel's value in libimagequant's colour space (before premultiplying by alpha).
GAMMA_VALUES = (np.arange(256) / 255.0) ** (INTERNAL_GAMMA / IMAGE_GAMMA)
#: libimagequant's factor from its error to the ``MSE`` pngquant prints.
PRINTED_MSE = 65536.0 / 6.0


class QualityNotReached(ImageProblem):
    """Even the largest palette allowed misses the lowest quality accepted."""


def quality_to_mse(quality: int) -> float:
    """The largest error of a quality 0..100, libimagequant's (see the module's text)."""
    if quality == 0:
        return math.inf  # libimagequant's MAX_DIFF: any error
    if quality == 100:
        return 0.0
    fudge = max(0.0, 0.016 / (0.001 + quality) - 0.001)  # for really low numbers of colours
    return fudge + 2.5 / (210.0 + quality) ** 1.2 * (100.1 - quality) / 100.0


def mse_to_quality(error: float) -> int:
    """The quality 0..100 of an error, libimagequant's (see the module's text)."""
    for quality in range(100, 0, -1):
        if error <= quality_to_mse(quality) + 1e-6:  # libimagequant's epsilon
            return quality
    return 0


def liq_error(
    original: NDArray[np.uint8], rebuilt: NDArray[np.uint8], weights: NDArray[Any] | None = None
) -> float:
    """The error between colours ``(n, 3)`` or ``(n, 4)`` (RGBA) uint8, libimagequant's.

    The mean over the colours (weighted by ``weights``, pixel counts, if given) of the sum over
    R, G, B of squared differences of gamma-adjusted, premultiplied 0..1 values, each the
    larger seen over black and over white (see the module's text).
    """
    alpha_x, alpha_y = (
        (original[:, 3:] / 255.0, rebuilt[:, 3:] / 255.0)
        if original.shape[1] == 4
        else (np.ones((len(original), 1)), np.ones((len(rebuilt), 1)))
    )
    x = GAMMA_VALUES[original[:, :3]] * alpha_x
    y = GAMMA_VALUES[rebuilt[:, :3]] * alpha_y
    over_black = x - y
    over_white = over_black + (alpha_y - alpha_x)
    per_colour = np.maximum(over_black**2, over_white**2).sum(axis=1)
    return float(np.average(per_colour, weights=weights))


@dataclass(frozen=True)
class Target:
    """What the palette size is chosen for.

    ``measure`` (``"quality"`` or ``"psnr"``) from ``low`` (the least accepted) to ``high``
    (reached with as few colours as possible); ``given`` is the setting's text, for messages
    (``65-80``).
    """

    measure: str
    low: float
    high: float
    given: str

    def reached(self, fit: Fit, counts: NDArray[np.int64]) -> float:
        """The figure of ``fit`` over its counted colours (``counts`` per ``fit.keys``).

        Quality 0..100, or PSNR in dB (100 when lossless).
        """
        if self.measure == "psnr":
            value = psnr(fit.info["mse"])
            return 100.0 if value is None else value
        unpack = rgba.unpack if fit.palette.shape[1] == 4 else colours.unpack
        original = unpack(fit.keys)
        return mse_to_quality(liq_error(original, fit.palette[fit.labels], counts))

    def text(self, value: float) -> str:
        """``value`` as the target's messages say it: ``quality 58``, ``38.21 dB``."""
        return f"quality {value:.0f}" if self.measure == "quality" else f"{value:.2f} dB"

    def record(self, tried: dict[int, float]) -> dict[str, Any]:
        """What the store records of a search (``fit.quality``), saying the scale."""
        if self.measure == "quality":
            return {
                "target": "quality",
                "scale": "pngquant 0-100 (libimagequant 2.17)",
                "min": self.low,
                "max": self.high,
                "tried": [{"colors": k, "quality": int(v)} for k, v in tried.items()],
            }
        return {
            "target": "psnr",
            "scale": "dB",
            "min_db": self.low,
            "max_db": self.high,
            "tried": [{"colors": k, "psnr_db": round(v, 4)} for k, v in tried.items()],
        }


def search_colours(
    fit_with: Callable[[int], Fit], most: int, target: Target, counts: NDArray[np.int64]
) -> Fit:
    """The fit of the fewest colours (1 to ``most``) whose figure reaches ``target.high``.

    Binary search over the palette size, assuming more colours never lower the figure (what
    the fit aims at; a size that breaks it only makes the search settle on a larger palette).
    The search is recorded in the fit's ``info["quality"]`` (:meth:`Target.record`).

    Parameters
    ----------
    fit_with : callable
        Fits a palette of the given number of colours over the counted colours.
    most : int
        Largest palette allowed.
    target : Target
    counts : ndarray
        Pixels of each of the fits' ``keys``.

    Raises
    ------
    QualityNotReached
        If the fit of ``most`` colours is below ``target.low``.
    """
    tried: dict[int, float] = {}

    def attempt(k: int) -> Fit:
        fit = fit_with(k)
        tried[k] = target.reached(fit, counts)
        return fit

    best = attempt(most)
    if tried[most] < target.low:
        option = "--quality" if target.measure == "quality" else "--psnr"
        raise QualityNotReached(
            f"{target.text(tried[most])} reached with {most} colours, below the "
            f"{target.low:g}{'' if target.measure == 'quality' else ' dB'} asked "
            f"({option} {target.given}"
            f"{'; --colors 256 allows more colours' if most < 256 else ''})"
        )
    if tried[most] >= target.high:
        lo, hi = 1, most  # the answer is in lo..hi, and hi reaches high
        while lo < hi:
            mid = (lo + hi) // 2
            fit = attempt(mid)
            if tried[mid] >= target.high:
                hi, best = mid, fit
            else:
                lo = mid + 1
    best.info["quality"] = target.record(tried)
    return best
