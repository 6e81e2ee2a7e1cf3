"""The exact best palette of a gray image: 1-D k-means by dynamic programming over 256 levels.

On a gray image (every counted colour has R = G = B) the error of a palette is three times a
one-dimensional error over the image's gray levels, and the best uint8 RGB palette is gray: for a
fixed cluster the best value of each channel is the rounded mean, the same on all three. In one
dimension the clusters of a best palette are runs of consecutive levels (each level goes to its
nearest entry), so the best palette of ``k`` entries is found exactly by dynamic programming
over where the runs split: with ``n`` distinct levels (at most 256) it costs O(k n^2), a few
milliseconds. No heuristic fit can do better; general fits tend to do worse on such images,
whose colours all lie on one line.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def is_gray(colours: NDArray[np.uint8]) -> bool:
    """Whether every one of ``colours`` (n, 3) has equal R, G and B."""
    red, green, blue = colours.T
    return bool(np.array_equal(red, green) and np.array_equal(green, blue))


#: The identity coordinate of each of the 256 levels (plain RGB distances).
LINEAR = np.arange(256, dtype=np.float64)


def nearest_level(value: NDArray[np.float64], coordinate: NDArray[np.float64]) -> NDArray[np.intp]:
    """The level (0..255) whose ``coordinate`` (increasing) is nearest to each ``value``.

    Of two equally near levels, the lower.
    """
    above = np.clip(np.searchsorted(coordinate, value), 1, 255)
    below = above - 1
    lower = value - coordinate[below] <= coordinate[above] - value
    return np.where(lower, below, above)


def run_costs(
    levels: NDArray[np.integer],
    counts: NDArray[np.integer],
    coordinate: NDArray[np.float64] = LINEAR,
) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """Error and best uint8 centre of every run of consecutive ``levels`` (sorted, distinct).

    Distances are measured between the ``coordinate`` of each level (a strictly increasing
    table of 256 values: the levels themselves, or e.g. their lightness in a perceptual space).

    Returns
    -------
    cost : ndarray (n, n)
        ``cost[i, j]`` for ``i <= j``: sum over levels ``i..j`` of
        ``count * (coordinate[level] - coordinate[c])**2``, with ``c`` the run's best level:
        the one whose coordinate is nearest the run's weighted mean coordinate (which minimises
        that sum); ``inf`` below the diagonal.
    centre : ndarray of intp (n, n)
        That ``c``.
    """
    x = coordinate[levels]
    w = counts.astype(np.float64)
    prefix = [np.concatenate(([0.0], np.cumsum(v))) for v in (w, w * x, w * x * x)]
    n = len(x)
    i, j = np.triu_indices(n)
    mass, total, squares = (p[j + 1] - p[i] for p in prefix)
    centre = nearest_level(total / mass, coordinate)
    c = coordinate[centre]
    cost = np.full((n, n), np.inf)
    cost[i, j] = np.maximum(squares - 2 * c * total + c * c * mass, 0.0)
    centres = np.zeros((n, n), dtype=np.intp)
    centres[i, j] = centre
    return cost, centres


def best_levels(
    levels: NDArray[np.integer],
    counts: NDArray[np.integer],
    k: int,
    coordinate: NDArray[np.float64] = LINEAR,
) -> tuple[NDArray[np.uint8], float]:
    """The best ``k`` uint8 values for 1-D data: ``levels`` (sorted, distinct) with ``counts``.

    Minimises the weighted sum of squared differences (between ``coordinate`` values, see
    :func:`run_costs`) between each level and its nearest value, exactly, by dynamic programming
    over runs of consecutive levels.

    Returns
    -------
    values : ndarray of uint8
        ``min(k, len(levels))`` distinct values, ascending.
    error : float
        Their weighted sum of squared errors.
    """
    n = len(levels)
    k = min(k, n)
    cost, centres = run_costs(levels, counts, coordinate)
    # best[m][j]: least error of levels 0..j in m + 1 runs; start[m][j]: where the last run starts
    best = cost[0].copy()
    starts = [np.zeros(n, dtype=np.intp)]
    for _ in range(1, k):
        # candidate[i, j]: runs up to level i - 1, then one run i..j (inf where i > j or i == 0)
        candidate = np.full((n, n), np.inf)
        candidate[1:] = best[:-1, None] + cost[1:]
        start = candidate.argmin(axis=0)
        best = candidate[start, np.arange(n)]
        starts.append(start)
    values = []
    end = n - 1
    for start in reversed(starts):
        first = int(start[end])
        values.append(centres[first, end])
        end = first - 1
    return np.array(values[::-1], dtype=np.uint8), float(best[n - 1])
