"""Choose the palette size from a quality target: the fewest colours whose PSNR reaches it.

``--quality MIN-MAX`` works like pngquant's option of that name, with PSNR in dB as the measure:
the image gets the smallest palette (up to ``--colors``) whose PSNR reaches MAX; if even
``--colors`` colours stay below MIN, the image fails. Between MIN and MAX, ``--colors`` colours
are used. The PSNR of a candidate palette is that of its fit over the image's counted colours
(every pixel of an image up to ``count_pixels``, else a regular grid), so no pixel is labelled
until the size is chosen; the stored PSNR, over every pixel, can differ slightly for images
counted on a grid.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.errors import ImageProblem
from pipeline.quantize.fit import Fit
from pipeline.quantize.metrics import psnr


class QualityNotReached(ImageProblem):
    """Even the largest palette allowed misses the lowest quality accepted."""


def fit_psnr(fit: Fit) -> float:
    """PSNR (dB) of a fit over the colours it counted; 100 when lossless."""
    value = psnr(fit.info["mse"])
    return 100.0 if value is None else value


def search_colours(fit_with: Callable[[int], Fit], most: int, low: float, high: float) -> Fit:
    """The fit of the fewest colours (1 to ``most``) whose PSNR reaches ``high`` dB.

    Binary search over the palette size, assuming more colours never lower the PSNR (what the
    fit aims at; a size that breaks it only makes the search settle on a larger palette).
    The search is recorded in the fit's ``info["quality"]``: the target and each size tried
    with its PSNR.

    Parameters
    ----------
    fit_with : callable
        Fits a palette of the given number of colours.
    most : int
        Largest palette allowed.
    low, high : float
        PSNR in dB: the lowest accepted, and the one to reach with as few colours as possible.

    Raises
    ------
    QualityNotReached
        If the fit of ``most`` colours is below ``low``.
    """
    tried: dict[int, float] = {}

    def attempt(k: int) -> Fit:
        fit = fit_with(k)
        tried[k] = fit_psnr(fit)
        return fit

    best = attempt(most)
    if tried[most] < low:
        raise QualityNotReached(
            f"quality not reached: {tried[most]:.2f} dB with {most} colours, "
            f"below the {low:g} dB asked for (raise --colors or lower --quality)"
        )
    if tried[most] >= high:
        lo, hi = 1, most  # the answer is in lo..hi, and hi reaches high
        while lo < hi:
            mid = (lo + hi) // 2
            fit = attempt(mid)
            if tried[mid] >= high:
                hi, best = mid, fit
            else:
                lo = mid + 1
    best.info["quality"] = {
        "min_db": low,
        "max_db": high,
        "tried": [{"colors": k, "psnr_db": round(v, 4)} for k, v in tried.items()],
    }
    return best
