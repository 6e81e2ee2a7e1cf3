"""Ordered dithering that gives the same labels whatever the chunking and the workers.

Quantizing a smooth gradient to a palette leaves visible contour bands. Error diffusion
(Floyd-Steinberg, pngquant's default) hides them but is sequential: a pixel's label depends on
every pixel before it. Here a pixel's label depends only on its own colour, its absolute
position in the image, the palette and the settings, so any chunk is dithered on its own and
the labels are byte-identical however the image is cut.

Each pixel is moved by an offset read from a threshold map tiled over the image, rounded,
clipped to uint8, and labelled with its exact nearest palette entry (in the colour space of
the labels); the error stored is that of the original pixel against the entry chosen. Channel
``c`` of pixel ``(row, col)`` moves by

    amplitude * ((rank[(row + dy_c) % n, (col + dx_c) % n] + 0.5) / n**2 - 0.5)

where ``rank`` is an n x n map holding each of 0 .. n**2 - 1 once: a Bayer matrix
(``"ordered"``) or a blue-noise mask made by the void-and-cluster algorithm (``"blue-noise"``).
The three channels read the map at different shifts ``(dy_c, dx_c)``, so the offsets move colours
in every direction (one offset for all three moves them along the grey axis only, and leaves the
bands of a gradient between two colours of equal brightness). The amplitude is ``strength``
times the palette's spacing (:func:`palette_spacing`): a pixel between two entries one spacing
apart then takes each in proportion to how close it is, so the average of a region keeps its
colour. Everything after the spacing (a correctly rounded square root) is integer arithmetic,
so every machine computes the same offsets.

Moved colours are mostly new to a lookup table of the image's colours (each colour of the
image times each offset), and a table pays for its exact search of each new colour, then for
adding it. For labels by RGB distance, the nearest entry of a moved pixel is searched instead
among the neighbours of its undithered label (which the table gives at once), exactly: ties go
to the lowest index, as in :func:`pipeline.quantize.colours.nearest`: 30 to 55 megapixels a second,
4 to 15 times the table's speed on a photo's first pass (labels without dithering: 250 to 450).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import numba
import numpy as np
from numpy.typing import NDArray
from scipy.spatial import KDTree

#: Dithering methods: a Bayer matrix, or a void-and-cluster blue-noise mask.
METHODS = ("ordered", "blue-noise")
#: Side of the Bayer matrix: 64 levels, every pattern repeating within 8 pixels.
BAYER_SIZE = 8
#: Side of the blue-noise mask, its seed and the half-width of its filter (a binomial
#: approximation of Ulichney's Gaussian of sigma 1.5: sigma sqrt(2), 9 x 9). They fix the
#: labels of every blue-noise dithered image: changing one changes the stored labels.
BLUE_NOISE_SIZE = 64
BLUE_NOISE_SEED = 0
BLUE_NOISE_FILTER = 4
#: Shift (rows, columns) of the map that each of R, G and B reads. In a Bayer matrix the lowest
#: bits of the position give the highest bits of the rank, so a shift of one pixel moves a
#: channel's thresholds by a quarter to a half; in a blue-noise mask, pixels half the mask apart
#: are unrelated.
CHANNEL_SHIFTS = {
    "ordered": ((0, 0), (0, 1), (1, 0)),
    "blue-noise": ((0, 0), (0, BLUE_NOISE_SIZE // 2), (BLUE_NOISE_SIZE // 2, 0)),
}
#: Strength used unless another is asked for. On photos (china, coffee, astronaut; 16 to 256
#: colours) its low-pass PSNR (both images blurred, sigma 1.5) is within 0.3 dB of the best
#: strength's, mostly within 0.1, and its plain PSNR 0.7 to 0.9 dB above strength 1's; on a
#: smooth gradient it gets 75 to 90% of the best low-pass gain (4.8 to 6.4 dB). And the largest
#: strength accepted: beyond about 2 the offsets only add noise.
DEFAULT_STRENGTH = 0.75
MAX_STRENGTH = 4.0
#: Fractional bits of the fixed-point amplitude.
FRACTION_BITS = 8


def bayer_matrix(size: int) -> NDArray[np.int64]:
    """The ``size`` x ``size`` Bayer matrix (``size`` a power of 2): ranks 0 .. size**2 - 1.

    Built by the recursion ``M(2n) = [[4 M, 4 M + 2], [4 M + 3, 4 M + 1]]``, so thresholding it
    at any multiple of 1/4, 1/16, ... gives a regular lattice of pixels.
    """
    if size < 1 or size & (size - 1):
        raise ValueError(f"the size of a Bayer matrix is a power of 2, got {size}")
    matrix = np.zeros((1, 1), dtype=np.int64)
    while len(matrix) < size:
        matrix = np.block([[4 * matrix, 4 * matrix + 2], [4 * matrix + 3, 4 * matrix + 1]])
    return matrix


def _splitmix64(values: NDArray[np.uint64]) -> NDArray[np.uint64]:
    # SplitMix64's output function: a fixed bijection of 64-bit integers, the same on every
    # machine and with every numpy version (unlike numpy's random generators' methods).
    with np.errstate(over="ignore"):
        z = values + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@numba.njit(nogil=True, cache=True)
def _stamp(energy, kernel, y, x, sign):  # type: ignore[no-untyped-def]
    # Adds (sign 1) or removes (-1) the filter centred on pixel (y, x) of the torus.
    n = energy.shape[0]
    half = kernel.shape[0] // 2
    for a in range(kernel.shape[0]):
        for b in range(kernel.shape[1]):
            energy[(y + a - half) % n, (x + b - half) % n] += sign * kernel[a, b]


@numba.njit(nogil=True, cache=True)
def _extreme(energy, pattern, ones):  # type: ignore[no-untyped-def]
    # Flat index of the tightest cluster (highest energy among the set pixels) when ``ones``,
    # else of the largest void (lowest energy among the others); ties to the first in raster
    # order.
    n = energy.shape[0]
    best = -1
    value = energy[0, 0]
    for y in range(n):
        for x in range(n):
            if pattern[y, x] == ones:
                e = energy[y, x]
                if best < 0 or (e > value if ones else e < value):
                    best, value = y * n + x, e
    return best


@numba.njit(nogil=True, cache=True)
def _flip(pattern, energy, kernel, at, value):  # type: ignore[no-untyped-def]
    n = pattern.shape[0]
    pattern[at // n, at % n] = value
    _stamp(energy, kernel, at // n, at % n, 1 if value else -1)


@numba.njit(nogil=True, cache=True)
def _void_and_cluster(initial, kernel):  # type: ignore[no-untyped-def]
    # Ulichney's void-and-cluster method on an n x n torus, with integer energies (exact, so
    # the same ranks on every machine). ``initial`` is a sparse binary pattern.
    n = initial.shape[0]
    pattern = initial.copy()
    energy = np.zeros((n, n), dtype=np.int64)
    for at in range(n * n):
        if pattern[at // n, at % n]:
            _stamp(energy, kernel, at // n, at % n, 1)
    # make the initial pattern even: move its tightest cluster into its largest void until the
    # two are the same pixel
    for _ in range(n * n):
        cluster = _extreme(energy, pattern, True)
        _flip(pattern, energy, kernel, cluster, False)
        void = _extreme(energy, pattern, False)
        _flip(pattern, energy, kernel, void, True)
        if void == cluster:
            break
    ones = 0
    for at in range(n * n):
        ones += pattern[at // n, at % n]
    ranks = np.empty((n, n), dtype=np.int64)
    # phase 1: remove the tightest clusters from a copy of the pattern, ranks ones-1 .. 0
    removing, left = pattern.copy(), energy.copy()
    for rank in range(ones - 1, -1, -1):
        cluster = _extreme(left, removing, True)
        _flip(removing, left, kernel, cluster, False)
        ranks[cluster // n, cluster % n] = rank
    # phases 2 and 3: fill the largest voids, ranks ones .. n*n-1 (phase 3's tightest cluster of
    # zeros is the largest void: the energies of the zeros and of the ones add up to a constant)
    for rank in range(ones, n * n):
        void = _extreme(energy, pattern, False)
        _flip(pattern, energy, kernel, void, True)
        ranks[void // n, void % n] = rank
    return ranks


@functools.cache
def blue_noise_mask(
    size: int = BLUE_NOISE_SIZE, seed: int = BLUE_NOISE_SEED, half_width: int = BLUE_NOISE_FILTER
) -> NDArray[np.int64]:
    """A ``size`` x ``size`` blue-noise mask: ranks 0 .. size**2 - 1, by void-and-cluster.

    Ulichney's algorithm (1993) on a torus, so the mask tiles without seams: an initial pattern
    of a tenth of the pixels (chosen by a fixed integer hash of ``seed``), made even, then ranked
    by removing its tightest clusters and filling the largest voids. The filter is the binomial
    kernel of ``2 * half_width + 1`` taps per axis (sigma ``sqrt(half_width / 2)``), in integers,
    so the mask is the same on every machine. Computed once per process (about 10 ms at 64).

    Returns
    -------
    ndarray of int64, shape (size, size)
        Read-only.
    """
    taps = np.array([math.comb(2 * half_width, i) for i in range(2 * half_width + 1)])
    pixels = np.arange(size * size, dtype=np.uint64) + np.uint64(seed * size * size)
    initial = np.zeros(size * size, dtype=np.bool_)
    initial[np.argsort(_splitmix64(pixels))[: size * size // 10]] = True
    mask: NDArray[np.int64] = _void_and_cluster(
        initial.reshape(size, size), np.outer(taps, taps).astype(np.int64)
    )
    mask.flags.writeable = False
    return mask


def threshold_ranks(method: str) -> NDArray[np.int64]:
    """The threshold map of ``method`` (one of :data:`METHODS`) as ranks 0 .. n**2 - 1.

    The threshold of a rank is ``(rank + 0.5) / n**2``: evenly spaced in (0, 1).
    """
    if method == "ordered":
        return bayer_matrix(BAYER_SIZE)
    if method == "blue-noise":
        return blue_noise_mask()
    raise ValueError(f"dither method must be one of {', '.join(METHODS)}, got {method!r}")


class Geometry(NamedTuple):
    """Where the entries of a palette lie relative to each other.

    Attributes
    ----------
    spacing : float
        Median distance from an entry to its nearest other entry (:func:`palette_spacing`).
    neighbours : ndarray of int32, shape (k, m)
        Each entry's ``m = min(k, NEIGHBOURS + 1)`` nearest entries (itself among them), nearest
        first.
    squared : ndarray of int32, shape (k, m)
        Their squared distances from the entry.
    bound : ndarray of int32, shape (k,)
        No entry left out of an entry's ``neighbours`` is nearer to it than the square root of
        this (the int32 maximum when none is left out).
    """

    spacing: float
    neighbours: NDArray[np.int32]
    squared: NDArray[np.int32]
    bound: NDArray[np.int32]


#: Neighbours listed per palette entry. A dithered pixel's nearest entry is searched among the
#: neighbours of its undithered one; the few pixels whose search cannot be proved complete
#: within them (0.1-0.8% at 256 to 1024 colours) are labelled by the caller's exact search.
NEIGHBOURS = 32


@functools.lru_cache(maxsize=8)
def _geometry(palette: bytes) -> Geometry:
    # Geometry of a palette given as bytes; cached, so that a large palette's tree is built
    # once per image rather than once per chunk.
    colours = np.frombuffer(palette, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
    listed = min(len(colours), NEIGHBOURS + 1)
    _, found = KDTree(colours).query(colours, k=listed)
    neighbours = found.reshape(len(colours), listed).astype(np.int32)
    squared = ((colours[neighbours] - colours[:, None, :]) ** 2).sum(axis=2, dtype=np.int32)
    spacing = float(np.median(np.sqrt(squared[:, 1]))) if listed > 1 else 0.0
    if listed == len(colours):
        bound = np.full(len(colours), np.iinfo(np.int32).max, dtype=np.int32)
    else:
        bound = squared[:, -1].copy()
    return Geometry(spacing, neighbours, squared, bound)


def palette_spacing(palette: NDArray[np.uint8]) -> float:
    """Typical distance between palette entries: the median distance from one to its nearest.

    0 for a palette of one entry. Distances between uint8 colours are square roots of integers,
    correctly rounded, so the spacing is the same on every machine.
    """
    return _geometry(np.ascontiguousarray(palette, dtype=np.uint8).tobytes()).spacing


@functools.lru_cache(maxsize=8)
def _offsets(method: str, amplitude: int) -> NDArray[np.int16]:
    # Offsets for a fixed-point amplitude (FRACTION_BITS fractional bits):
    # round(amplitude * ((rank + 0.5) / n**2 - 0.5)) in integers, halves rounded up.
    ranks = threshold_ranks(method)
    n = len(ranks)
    centred = np.stack(
        [
            np.roll(2 * ranks + 1 - n * n, (-dy, -dx), axis=(0, 1))
            for dy, dx in CHANNEL_SHIFTS[method]
        ],
        axis=-1,
    )
    shift = FRACTION_BITS + (2 * n * n).bit_length() - 1
    offsets = ((amplitude * centred + (1 << (shift - 1))) >> shift).astype(np.int16)
    offsets.flags.writeable = False
    return offsets


def dither_offsets(method: str, palette: NDArray[np.uint8], strength: float) -> NDArray[np.int16]:
    """What ``method`` adds to each channel of a pixel, by its position modulo the map's side n.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`.
    palette : ndarray of uint8, shape (k, 3)
    strength : float
        Amplitude of the offsets in palette spacings (:func:`palette_spacing`), 0 to
        :data:`MAX_STRENGTH`.

    Returns
    -------
    ndarray of int16, shape (n, n, 3)
        Read-only: pixel ``(row, col)`` of an image moves by ``offsets[row % n, col % n]``.
    """
    if not 0 <= strength <= MAX_STRENGTH:  # also refuses NaN
        raise ValueError(f"dither strength must be 0 to {MAX_STRENGTH}, got {strength!r}")
    amplitude = strength * palette_spacing(palette) * (1 << FRACTION_BITS)
    return _offsets(method, round(amplitude))


@numba.njit(nogil=True, cache=True)
def _move(block, offsets, row0, col0, moved):  # type: ignore[no-untyped-def]
    # moved = clip(block + the offsets at each pixel's absolute position, 0, 255)
    mask = offsets.shape[0] - 1  # the maps' sides are powers of 2
    height, width = block.shape[:2]
    for i in range(height):
        y = (row0 + i) & mask
        for j in range(width):
            x = (col0 + j) & mask
            for c in range(3):
                moved[i, j, c] = min(max(np.int32(block[i, j, c]) + offsets[y, x, c], 0), 255)


@numba.njit(nogil=True, cache=True)
def _search(moved, palette, start, near, squared, bound, labels, pending):  # type: ignore[no-untyped-def]
    # Labels each moved pixel q with its exact nearest entry (ties to the lowest index),
    # searched among the neighbours of ``start`` entry a: an entry e with |e - a| > 2 |q - a| is
    # farther from q than a is (triangle inequality), so the search stops at the first such
    # neighbour; squared, |e - a|**2 > 4 |q - a|**2, all in integers. A pixel whose list of
    # neighbours ends before that, with entries left out that may be as near as ``bound``, is
    # left unset and its flat position goes to ``pending``. Returns how many.
    height, width = labels.shape
    missing = 0
    for i in range(height):
        for j in range(width):
            q0, q1, q2 = (
                np.int32(moved[i, j, 0]),
                np.int32(moved[i, j, 1]),
                np.int32(moved[i, j, 2]),
            )
            a = np.int32(start[i, j])
            d0, d1, d2 = q0 - palette[a, 0], q1 - palette[a, 1], q2 - palette[a, 2]
            best, least = a, d0 * d0 + d1 * d1 + d2 * d2
            limit = 4 * least
            proved = bound[a] > limit
            for m in range(near.shape[1]):
                if squared[a, m] > limit:
                    proved = True
                    break
                e = near[a, m]
                d0, d1, d2 = q0 - palette[e, 0], q1 - palette[e, 1], q2 - palette[e, 2]
                d = d0 * d0 + d1 * d1 + d2 * d2
                if d < least or (d == least and e < best):
                    best, least = e, d
            if proved:
                labels[i, j] = best
            else:
                pending[missing] = i * width + j
                missing += 1
    return missing


@numba.njit(nogil=True, cache=True)
def _squared_error(block, palette, labels):  # type: ignore[no-untyped-def]
    # Sum over pixels and channels of (block - palette[labels])**2.
    error = np.uint64(0)
    height, width = labels.shape
    for i in range(height):
        for j in range(width):
            entry = labels[i, j]
            for c in range(3):
                d = np.int64(block[i, j, c]) - np.int64(palette[entry, c])
                error += np.uint64(d * d)
    return error


#: Gives the (h, w) labels of an (h, w, 3) uint8 block: each pixel's exact nearest palette entry.
Labeller = Callable[[NDArray[np.uint8]], NDArray[np.unsignedinteger]]


def _nearest_rgb(
    moved: NDArray[np.uint8],
    palette: NDArray[np.uint8],
    start: NDArray[np.unsignedinteger],
    label: Labeller,
) -> NDArray[np.unsignedinteger]:
    # Exact nearest RGB entries of the moved pixels, searched from the ``start`` labels; the
    # pixels that search leaves open are labelled by ``label``.
    near = _geometry(palette.tobytes())
    labels = np.empty_like(start)
    pending = np.empty(start.size, dtype=np.intp)
    missing = _search(
        moved, palette.astype(np.int32), start, near.neighbours, near.squared, near.bound,
        labels, pending,
    )  # fmt: skip
    if missing:
        where = pending[:missing]
        labels.reshape(-1)[where] = label(moved.reshape(-1, 1, 3)[where]).reshape(-1)
    return labels


def dither_block(
    block: NDArray[np.uint8],
    row0: int,
    col0: int,
    palette: NDArray[np.uint8],
    method: str,
    strength: float,
    label: Labeller,
    space: str = "rgb",
) -> tuple[NDArray[np.unsignedinteger], int]:
    """Dithered labels of one chunk, and the squared error of the original pixels.

    Each pixel moves by :func:`dither_offsets` at its absolute position, rounded and clipped to
    uint8, and is labelled with the nearest palette entry of its moved colour: the labels of
    the whole image, however it is cut into chunks.

    Parameters
    ----------
    block : ndarray of uint8, shape (h, w, 3)
        A chunk of the image, whose top-left pixel is at ``(row0, col0)`` in the image.
    row0, col0 : int
        Absolute position of the chunk.
    palette : ndarray of uint8, shape (k, 3)
    method : str
        One of :data:`METHODS`.
    strength : float
        Amplitude of the offsets in palette spacings, 0 to :data:`MAX_STRENGTH`
        (:data:`DEFAULT_STRENGTH` by default); 0 gives the undithered labels.
    label : callable
        Maps an (h, w, 3) uint8 block to its (h, w) labels, each the exact nearest entry of
        ``palette`` in ``space`` (:meth:`pipeline.quantize.assign.LookupTable.lookup`'s labels).
    space : str
        The colour space of ``label``'s distances. In ``"rgb"`` (squared distances between the
        uint8 values, ties to the lowest index) ``label`` labels the undithered chunk, from
        which a compiled search finds the moved pixels' entries, and the few moved pixels that
        search leaves open, as (n, 1, 3) blocks; in any other space, the moved chunk.

    Returns
    -------
    labels : ndarray, shape (h, w)
        Of the type ``label`` returns.
    error : int
        Sum over the pixels and channels of ``(block - palette[labels])**2`` (RGB values): the
        error of the image rebuilt from the labels.
    """
    offsets = dither_offsets(method, palette, strength)
    if offsets.any():
        moved = np.empty(block.shape, dtype=np.uint8)
        _move(block, offsets, row0, col0, moved)
        if space == "rgb":
            labels = _nearest_rgb(moved, palette, label(block), label)
        else:
            labels = label(moved)
    else:
        labels = label(block)
    return labels, int(_squared_error(block, palette, labels))
