"""Kernels on RGB colours: packing, counting, and the exact nearest palette entry.

Colours are handled as integers throughout. A pixel ``(r, g, b)`` packs into the 24-bit key
``r << 16 | g << 8 | b``. Distances are squared Euclidean distances between the colours'
coordinates in a colour space (:data:`SPACES`): the uint8 triples themselves in ``"rgb"``,
which this module computes exactly (see :func:`nearest`), or in ``"oklab"`` six float64
coordinates blending RGB and OKLab (:mod:`pipeline.quantize.oklab`). The compiled kernels work on
points of any number of coordinates.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from numpy.typing import NDArray

from pipeline.quantize import oklab

#: Colour spaces a palette can be fitted and pixels labelled in, each with the unit of its
#: :func:`coordinates`: divided by it, colours span about [0, 1] (the scale of the dask-ml fit
#: on the sample and of its ``tol``).
SPACES: dict[str, float] = {"rgb": 255.0, "oklab": oklab.SCALE}


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


@numba.njit(nogil=True, cache=True)
def _squared_errors(keys, labels, palette):  # type: ignore[no-untyped-def]
    # squared_errors, one pass over the colours.
    errors = np.empty(keys.shape[0], dtype=np.int64)
    for n in range(keys.shape[0]):
        key, entry = np.int64(keys[n]), labels[n]
        red = ((key >> 16) & 255) - np.int64(palette[entry, 0])
        green = ((key >> 8) & 255) - np.int64(palette[entry, 1])
        blue = (key & 255) - np.int64(palette[entry, 2])
        errors[n] = red * red + green * green + blue * blue
    return errors


def squared_errors(
    keys: NDArray[np.uint32], labels: NDArray[np.integer], palette: NDArray[np.uint8]
) -> NDArray[np.int64]:
    """Squared RGB distance of each 24-bit colour of ``keys`` to its entry ``palette[labels]``.

    Exact integers: ``((unpack(keys) - palette[labels]) ** 2).sum(axis=1)``, in one compiled
    pass instead of five full-size temporaries (95,000 colours of a photo: 0.3 ms against 3).
    """
    return _squared_errors(keys, labels, palette)  # type: ignore[no-any-return]


def check_space(space: str) -> None:
    """Raise ``ValueError`` unless ``space`` is one of :data:`SPACES`."""
    if space not in SPACES:
        raise ValueError(f"unknown colour space {space!r}: expected one of {', '.join(SPACES)}")


def coordinates(colours: NDArray[np.uint8], space: str) -> NDArray[np.float64]:
    """Coordinates of uint8 RGB ``colours`` ``(..., 3)`` in ``space``, as float64.

    ``"rgb"``: the values themselves (0..255), ``(..., 3)``; ``"oklab"``:
    :func:`pipeline.quantize.oklab.coordinates`, ``(..., 6)``.
    """
    check_space(space)
    if space == "oklab":
        return oklab.coordinates(colours)
    return colours.astype(np.float64)


def to_uint8(points: NDArray[np.float64], space: str) -> NDArray[np.uint8]:
    """The uint8 colours ``(..., 3)`` of points ``(..., d)`` of ``space``, near each point.

    ``"rgb"``: each value clipped to 0..255 and rounded; ``"oklab"``: the nearest of a few
    candidate colours (:func:`pipeline.quantize.oklab.to_uint8`). Either way :func:`coordinates` of
    a colour give back that colour.
    """
    check_space(space)
    if space == "oklab":
        return oklab.to_uint8(points)
    return np.clip(np.rint(points), 0, 255).astype(np.uint8)


#: Cleared colour tables kept per entry type for reuse (see :func:`colour_table`).
KEEP_FREE_TABLES = 2
_FREE_TABLES: dict[np.dtype, list[NDArray[np.unsignedinteger]]] = {}
_FREE_LOCK = threading.Lock()


def colour_table(dtype: np.dtype) -> NDArray[np.unsignedinteger]:
    """A zeroed table with one entry per 24-bit colour (2**24 entries), reused when possible.

    Mapping 64 MiB afresh per image costs more in page faults than the work done with it, so
    tables handed back with :func:`recycle_table` are kept (up to ``KEEP_FREE_TABLES`` per type).
    """
    with _FREE_LOCK:
        free = _FREE_TABLES.get(np.dtype(dtype))
        if free:
            return free.pop()
    return np.zeros(1 << 24, dtype=dtype)


def recycle_table(table: NDArray[np.unsignedinteger], *used: NDArray[np.uint32]) -> None:
    """Zero the entries of ``table`` at the keys ``used`` and keep it for :func:`colour_table`."""
    for keys in used:
        table[keys] = 0
    with _FREE_LOCK:
        free = _FREE_TABLES.setdefault(table.dtype, [])
        if len(free) < KEEP_FREE_TABLES:
            free.append(table)


@numba.njit(inline="always", cache=True)
def pixel_key(block, i, j):  # type: ignore[no-untyped-def]
    """Compiled kernels' :func:`pack` of pixel ``(i, j)`` of an (h, w, 3) uint8 block."""
    return (
        (np.uint32(block[i, j, 0]) << np.uint32(16))
        | (np.uint32(block[i, j, 1]) << np.uint32(8))
        | np.uint32(block[i, j, 2])
    )


@numba.njit(nogil=True, cache=True)
def _count(block, counts, distinct):  # type: ignore[no-untyped-def]
    # Counts each pixel's colour in ``counts`` (a colour table); colours met for the first time
    # go to ``distinct``. Returns how many there are.
    found = 0
    height, width = block.shape[:2]
    for i in range(height):
        for j in range(width):
            key = pixel_key(block, i, j)
            if counts[key] == 0:
                distinct[found] = key
                found += 1
            counts[key] += 1
    return found


def histogram(pixels: NDArray[np.uint8]) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
    """Distinct colours of ``(..., 3)`` uint8 pixels and how often each occurs.

    One compiled pass counts into a colour table, so only the distinct colours are sorted
    (several times faster than sorting every pixel's key).

    Returns
    -------
    keys : ndarray of uint32
        Sorted 24-bit keys of the distinct colours.
    counts : ndarray of int64
        Number of pixels of each colour.
    """
    block = pixels.reshape(-1, 1, 3) if pixels.ndim != 3 else pixels
    table = colour_table(
        np.dtype(np.uint32 if block.shape[0] * block.shape[1] < 1 << 32 else np.uint64)
    )
    distinct = np.empty(block.shape[0] * block.shape[1], dtype=np.uint32)
    keys = np.sort(distinct[: _count(block, table, distinct)])
    counts = table[keys].astype(np.int64)
    recycle_table(table, keys)
    return keys, counts


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


#: :func:`nearest_centre` compares every point with every centre when there are at most
#: ``FEW_CENTRES`` centres or fewer than ``GUIDED_FROM`` points per centre; otherwise it first
#: finds each centre's nearest others (k**2 distances) to skip most centres.
FEW_CENTRES = 8
GUIDED_FROM = 16
#: Relative margin of the guided search's triangle-inequality bound (see
#: :func:`_nearest_guided`): a million times the rounding error of float64 distances.
WIDEN = 1e-9
#: Nearest other centres the guided search keeps in order per centre: a point near its centre
#: looks at a few of them, and one whose scan would go past them is compared with every centre.
#: Ordering only these costs a fraction of sorting every centre's k - 1 others (0.57 ms per
#: search at k = 128), paid on each search of a Lloyd iteration.
NEIGHBOURS_KEPT = 16


def axes_of(points: NDArray[np.number]) -> tuple[int, ...]:
    """The ``axes`` argument of compiled kernels on ``points`` (n, d): a tuple of ``d`` zeros.

    Its type (a tuple of ``d`` items) tells numba the number of coordinates, so each kernel is
    compiled for that many and the loop over them unrolls: with ``points.shape[1]`` as the bound
    instead, the RGB kernels are 30% slower.
    """
    return (0,) * points.shape[1]


@numba.njit(inline="always", cache=True)
def squared_distance(points, i, centres, j, axes):  # type: ignore[no-untyped-def]
    """Compiled kernels' squared distance between ``points[i]`` and ``centres[j]``, in float64.

    The sum of ``diff * diff`` over the ``len(axes)`` coordinates (:func:`axes_of`), added in their
    order: ``d0 * d0 + d1 * d1 + d2 * d2 + ...``.
    """
    total = 0.0
    for c in range(len(axes)):
        diff = np.float64(points[i, c]) - np.float64(centres[j, c])
        total += diff * diff
    return total


@numba.njit(inline="always", cache=True)
def guided(n, k):  # type: ignore[no-untyped-def]
    """Whether :func:`nearest_search` takes the guided search for ``n`` points and ``k`` centres."""
    return k > FEW_CENTRES and n >= GUIDED_FROM * k


@numba.njit(inline="always", cache=True)
def nearest_of(points, i, centres, axes):  # type: ignore[no-untyped-def]
    """Compiled kernels' nearest of all ``centres`` to ``points[i]`` and its squared distance.

    The first of equal distances wins.
    """
    best = np.inf
    label = 0
    for j in range(centres.shape[0]):
        d = squared_distance(points, i, centres, j, axes)
        if d < best:
            best, label = d, j
    return label, best


@numba.njit(nogil=True, cache=True)
def _nearest_all(points, centres, axes):  # type: ignore[no-untyped-def]
    # Every point against every centre; the first of equal distances wins.
    n = points.shape[0]
    labels = np.empty(n, dtype=np.intp)
    dist = np.empty(n, dtype=np.float64)
    for i in range(n):
        labels[i], dist[i] = nearest_of(points, i, centres, axes)
    return labels, dist


@numba.njit(nogil=True, cache=True)
def _nearest_guided(points, centres, neighbours, spacing, guess, widen, axes):  # type: ignore[no-untyped-def]
    # For each point: start from a guessed centre g (``guess[i]``, or when negative the previous
    # point's answer), then scan the other centres in order of their distance from g. By the
    # triangle inequality a centre farther from g than |p - g| + |p - best| cannot be nearer
    # than the best so far, nor tie with it, so the scan stops there. ``widen`` (slightly above
    # 1) multiplies that bound to cover rounding: every computed distance and square root is
    # within a few units in the last place, i.e. a relative 1e-15, of the exact one whatever the
    # scale of the coordinates, so every centre whose computed distance ties with or beats the
    # best is examined. ``neighbours`` holds g's nearest others only (:func:`neighbour_table`):
    # a point whose scan would go past them is compared with every centre instead.
    n = points.shape[0]
    kept = neighbours.shape[1]
    labels = np.empty(n, dtype=np.intp)
    dist = np.empty(n, dtype=np.float64)
    previous = 0
    for i in range(n):
        g = guess[i] if guess[i] >= 0 else previous
        best = squared_distance(points, i, centres, g, axes)
        label = g
        radius = np.sqrt(best)
        reach = 2.0 * radius * widen
        within = False
        for m in range(kept):
            if spacing[g, m] > reach:
                within = True
                break
            j = neighbours[g, m]
            d = squared_distance(points, i, centres, j, axes)
            if d < best:
                best, label = d, j
                reach = (radius + np.sqrt(d)) * widen
            elif d == best and j < label:
                label = j
        if not within and kept < centres.shape[0] - 1:
            label, best = nearest_of(points, i, centres, axes)
        labels[i] = label
        dist[i] = best
        previous = label
    return labels, dist


@numba.njit(nogil=True, cache=True)
def neighbour_table(centres, kept, axes):  # type: ignore[no-untyped-def]
    """Each centre's ``kept`` nearest other centres, nearest first, and their distances.

    Two (k, kept) arrays, as the guided searches take them: the order a stable sort of each
    centre's distances to the others would give (equal distances: lower index first), cut.
    """
    k = centres.shape[0]
    neighbours = np.empty((k, kept), dtype=np.intp)
    spacing = np.empty((k, kept))
    for a in range(k):
        count = 0
        for b in range(k):
            if b == a:
                continue
            gap = np.sqrt(squared_distance(centres, a, centres, b, axes))
            if count == kept:
                if gap >= spacing[a, kept - 1]:
                    continue
                count -= 1  # the farthest kept makes way
            place = count
            while place > 0 and spacing[a, place - 1] > gap:
                spacing[a, place] = spacing[a, place - 1]
                neighbours[a, place] = neighbours[a, place - 1]
                place -= 1
            spacing[a, place] = gap
            neighbours[a, place] = b
            count += 1
    return neighbours, spacing


@numba.njit(nogil=True, cache=True)
def nearest_search(points, centres, guess, axes):  # type: ignore[no-untyped-def]
    """Compiled kernels' :func:`nearest_centre`: float64 ``centres``, a ``guess`` per point.

    ``guess`` is an intp array, negative where the previous point's answer is the guess;
    ``axes`` is :func:`axes_of` the points. The guided search's table (each centre's
    :data:`NEIGHBOURS_KEPT` nearest others and their distances) is built here.
    """
    k = centres.shape[0]
    if not guided(points.shape[0], k):
        return _nearest_all(points, centres, axes)
    neighbours, spacing = neighbour_table(centres, min(NEIGHBOURS_KEPT, k - 1), axes)
    return _nearest_guided(points, centres, neighbours, spacing, guess, 1.0 + WIDEN, axes)


def nearest_centre(
    points: NDArray[np.number],
    centres: NDArray[np.number],
    guess: NDArray[np.integer] | None = None,
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Nearest centre of each point (n, d) and its squared distance; ties to the lowest index.

    Centres are (k, d), of any number ``d`` of coordinates. Distances are computed in float64
    (:func:`squared_distance`), one point at a time in a compiled loop. With many centres
    and many points per centre, each point starts from a guessed centre and looks only at the
    centres close enough to it to possibly be nearer (triangle inequality); otherwise at every
    centre; either way the result is that of comparing every centre, whatever the scale of the
    coordinates. For uint8 colours every distance is an exact integer, so the result equals the
    integer brute force. ``guess`` (a centre index per point, e.g. its previous label) only
    changes the speed; without it, each point starts from the previous point's answer, which
    suits colours in sorted order.
    """
    points = np.ascontiguousarray(points)
    centres64 = np.ascontiguousarray(centres, dtype=np.float64).reshape(-1, points.shape[1])
    if guess is None:
        guess = np.full(len(points), -1, dtype=np.intp)
    guess = np.asarray(guess, dtype=np.intp)
    return nearest_search(points, centres64, guess, axes_of(points))  # type: ignore[no-any-return]


#: Cells per axis of the grid :func:`nearest_centre_scattered` visits points by.
SCATTERED_CELLS = 16


def nearest_centre_scattered(
    points: NDArray[np.number], centres: NDArray[np.number]
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """:func:`nearest_centre` of points in no particular order (a random sample), sooner.

    The same labels and distances. :func:`nearest_centre` starts each point from the previous
    point's answer, a poor guess when consecutive points are far apart; here the points are
    searched cell by cell of a grid of :data:`SCATTERED_CELLS` cells per axis over their first
    three coordinates, so that each starts from a near one's answer (a sample of 5,000 pixels of
    a photo against 128 centres: 1.5 ms against 2.4).
    """
    points = np.asarray(points)
    if not len(points):
        return nearest_centre(points, centres)
    low = points.min(axis=0)[:3]
    span = np.maximum(points.max(axis=0)[:3] - low, np.finfo(np.float64).tiny)
    cells = np.minimum((points[:, :3] - low) / span * SCATTERED_CELLS, SCATTERED_CELLS - 1)
    grid = cells.shape[1] * (SCATTERED_CELLS,)
    order = np.argsort(np.ravel_multi_index(cells.astype(np.intp).T, grid), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    labels, dist = nearest_centre(points[order], centres)
    return labels[rank], dist[rank]


def nearest(
    pixels: NDArray[np.uint8],
    palette: NDArray[np.uint8],
    guess: NDArray[np.integer] | None = None,
    space: str = "rgb",
) -> NDArray[np.intp]:
    """Index of the nearest palette entry for each pixel, exactly.

    The nearest entry minimises the squared Euclidean distance between the colours'
    :func:`coordinates` in ``space``; ties go to the lowest index. In ``"rgb"`` this equals the
    brute-force integer computation: :func:`nearest_centre` works in float64, where for uint8
    inputs every distance is an integer and therefore exact. In ``"oklab"`` it equals comparing
    the float64 distance ``d0 * d0 + d1 * d1 + ... + d5 * d5`` of the six coordinates to every
    entry.

    Parameters
    ----------
    pixels : ndarray of uint8, shape (n, 3)
    palette : ndarray of uint8, shape (k, 3)
    guess : ndarray of int, shape (n,), optional
        A likely answer per pixel (see :func:`nearest_centre`); only the speed depends on it.
    space : str
        One of :data:`SPACES`.

    Returns
    -------
    ndarray of intp, shape (n,)
    """
    if space == "rgb":  # the uint8 values themselves
        return nearest_centre(pixels, palette, guess)[0]
    return nearest_centre(coordinates(pixels, space), coordinates(palette, space), guess)[0]
