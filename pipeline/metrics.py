"""Quality figures of a compressed image."""

from __future__ import annotations

import math


def psnr(mse: float) -> float | None:
    """Peak signal-to-noise ratio in dB of 8-bit values with mean squared error ``mse``.

    Returns None when lossless (``mse`` is 0).
    """
    if mse == 0:
        return None
    return 10 * math.log10(255**2 / mse)
