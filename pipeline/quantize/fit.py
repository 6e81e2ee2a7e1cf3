"""Fit a palette: dask-ml KMeans on a pixel sample, refined on the whole image's colour counts.

The fit runs in three stages, each a plain function:

1. :func:`seed` - k-means++ starting centres on the sample (scikit-learn's greedy variant,
   compiled; dask-ml's own ``k-means++`` is broken against current scikit-learn and its
   ``k-means||`` under-seeds).
2. :func:`~pipeline.quantize.lloyd.lloyd_sample` - ``dask_ml.cluster.KMeans`` Lloyd iterations
   on the sample, as float32 in [0, 1], with empty clusters re-seeded instead of collapsing to
   black; several images' samples can share one dask-ml call
   (:func:`~pipeline.quantize.lloyd.lloyd_samples`), each image's centres the same as alone.
3. :func:`refine` - weighted k-means over every pixel of the image, using its distinct colours
   and their counts (exact, since k-means only needs each colour once with its weight): Lloyd
   iterations and split-merge moves on coarse colour cells, then Lloyd iterations on the exact
   colours; then :func:`polish` - the same on the rounded uint8 palette, so the stored palette
   is a local optimum of the error actually stored.

:func:`fit_palette` chains them; images with at most ``k`` distinct colours get those colours as
their palette (lossless) without any fitting.

Every stage works on the colours' coordinates in the fit's colour space
(:func:`pipeline.quantize.colours.coordinates`): their uint8 RGB values by default, or with
``space="oklab"`` six coordinates blending RGB and weighted OKLab (:mod:`pipeline.quantize.oklab`),
where distances follow perceived differences much better; the palette is uint8 sRGB either way, and
the labels are exact in the fit's space.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.quantize.colours import (
    SPACES,
    check_space,
    coordinates,
    nearest,
    nearest_centre,
    squared_errors,
    to_uint8,
    unpack,
)
from pipeline.quantize.kmeans import (
    Clusters,
    cell_index,
    neediest,
    per_cluster,
    plusplus,
    split_merge,
    update,
)
from pipeline.quantize.levels import best_levels, is_gray
from pipeline.quantize.lloyd import lloyd_sample, thread_limit
from pipeline.quantize.order import CHAIN_MOST, colour_chain


@dataclass(frozen=True)
class Stage:
    """One step of the refinement over every pixel.

    Attributes
    ----------
    bits : int
        Colour resolution: 8 is the exact colours; fewer bits group colours into cells of
        2**(8 - bits) values per channel, each at the mean of its pixels and weighted by their
        number (same optimum to within the cell size, far fewer points).
    lloyd : int
        Lloyd iterations at most (fewer once no point changes cluster).
    search : int
        Split-merge tries after them (see :func:`pipeline.quantize.kmeans.split_merge`).
    """

    bits: int
    lloyd: int
    search: int = 0


#: What each effort level does after the dask-ml fit on the sample: refinement stages, then
#: polish iterations on the uint8 palette. Effort 1, the default, is sized to cost about 25 ms
#: more than effort 0 per small photo (benchmarks/README.md, "photo8").
EFFORT: dict[int, tuple[tuple[Stage, ...], int]] = {
    0: ((), 2),
    1: ((Stage(5, 10, 5), Stage(6, 3)), 3),
    2: ((Stage(6, 30, 10), Stage(8, 3)), 5),
    3: ((Stage(6, 50, 40), Stage(8, 20)), 10),
}


#: Fewest bits per channel of the refinement's colour cells (:class:`Stage`), per colour space.
#: In ``"oklab"`` 5-bit cells cost effort 1 0.06 dB of PSNR and 0.025 of mean CIEDE2000 at
#: 128 colours (eight photos): its uint8 palette is not the per-channel rounding of the centres,
#: so :func:`polish` recovers less of what coarse cells lose than in ``"rgb"``.
FEWEST_BITS: dict[str, int] = {"rgb": 1, "oklab": 6}


#: Images with at most this many distinct colours (graphics, scans, logos) are refined on their
#: exact colours at every stage: cheap for so few, and coarse cells would merge colours that
#: deserve entries of their own (on scikit-image's logo at k = 256, 58.4 dB against 54.0).
EXACT_COLOURS = 16_384

#: Rounds of :func:`fill` then :func:`polish` while polishing leaves palette entries unused; a
#: last :func:`fill` ensures the palette ends full.
FILL_ROUNDS = 2


@dataclass(frozen=True)
class Fit:
    """A fitted palette and the exact label of every distinct colour of the image it was fitted on.

    Attributes
    ----------
    palette : ndarray of uint8, shape (m, 3)
        The palette, m <= the number of colours asked for.
    keys : ndarray of uint32
        Sorted 24-bit keys of the image's distinct colours (see
        :func:`pipeline.quantize.colours.pack`).
    labels : ndarray of uint16
        Exact nearest palette index of each of ``keys``.
    info : dict
        How the fit went: iterations per stage, sample size, distinct colours, mean squared error.
    space : str
        Colour space of the fit and of its labels (see :data:`pipeline.quantize.colours.SPACES`).
    """

    palette: NDArray[np.uint8]
    keys: NDArray[np.uint32]
    labels: NDArray[np.uint16]
    info: dict[str, Any] = field(default_factory=dict)
    space: str = "rgb"


def seed(sample: NDArray[np.float32], k: int, random_state: int) -> NDArray[np.float32]:
    """k-means++ starting centres for ``k`` clusters of ``sample`` (n, d) float32.

    See :func:`pipeline.quantize.kmeans.plusplus`.
    """
    return sample[plusplus(sample, k, random_state)]


def sample_points(sample: NDArray[np.uint8], space: str) -> NDArray[np.float32]:
    """The sample's coordinates as the dask-ml fit takes them: float32, divided by the space's unit.

    See :data:`pipeline.quantize.colours.SPACES`.
    """
    return (coordinates(sample, space) / SPACES[space]).astype(np.float32)


def fits_sample(keys: NDArray[np.uint32], k: int) -> bool:
    """Whether :func:`fit_palette` fits the image's sample with dask-ml.

    It does unless the image has at most ``k`` distinct colours (its ``keys``) or is gray.
    """
    return len(keys) > k and not is_gray(unpack(keys))


def polish(
    colours: NDArray[np.uint8],
    counts: NDArray[np.int64],
    palette: NDArray[np.uint8],
    *,
    max_iter: int,
    space: str = "rgb",
    points: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.uint8], NDArray[np.intp], int]:
    """Lloyd iterations on the uint8 palette itself: exact labels, then rounded weighted means.

    Labels are the exact nearest entries in ``space`` (:func:`pipeline.quantize.colours.nearest`),
    each entry moves to its colours' weighted mean there, back to uint8 (clipped and rounded in
    sRGB: :func:`pipeline.quantize.colours.to_uint8`). In ``"rgb"`` that rounded mean is the best
    uint8 value per channel for fixed labels, and exact relabelling never increases the error, so
    the error never grows; in ``"oklab"`` rounding can make it grow, so the palette of least error
    seen is kept. Ends when the palette is stable.

    Parameters
    ----------
    colours : ndarray of uint8, shape (n, 3)
    counts : ndarray of int64, shape (n,)
        The image's distinct colours and their pixel counts.
    palette : ndarray of uint8, shape (k, 3)
        Starting palette.
    max_iter : int
        Iterations at most.
    space : str
        Colour space of the labels and means (see :data:`pipeline.quantize.colours.SPACES`).
    points : ndarray of float64, shape (n, d), optional
        ``coordinates(colours, space)``, when already computed.

    Returns
    -------
    palette : ndarray of uint8, shape (k, 3)
    labels : ndarray of intp
        Exact nearest entry of each colour for the returned palette.
    n_iter : int
    """
    if points is None:
        points = coordinates(colours, space)
    weights = counts.astype(np.float64)
    centres = coordinates(palette, space)
    labels, dist = nearest_centre(points, centres)
    best = palette, labels, float((dist * weights).sum())
    for it in range(1, max_iter + 1):
        new = to_uint8(update(points, weights, labels, centres), space)
        if np.array_equal(new, palette):
            return best[0], best[1], it
        palette, centres = new, coordinates(new, space)
        labels, dist = nearest_centre(points, centres, guess=labels)
        error = float((dist * weights).sum())
        if error <= best[2]:
            best = palette, labels, error
    return best[0], best[1], max_iter


def _drop_unused(
    palette: NDArray[np.uint8], labels: NDArray[np.intp]
) -> tuple[NDArray[np.uint8], NDArray[np.intp]]:
    """Remove entries no colour uses (duplicates included) and renumber the labels."""
    used = np.zeros(len(palette), dtype=bool)
    used[labels] = True
    if used.all():
        return palette, labels
    renumber = np.cumsum(used) - 1
    return palette[used], renumber[labels]


def fill(
    colours: NDArray[np.uint8],
    counts: NDArray[np.int64],
    palette: NDArray[np.uint8],
    labels: NDArray[np.intp],
    k: int,
    *,
    space: str = "rgb",
    points: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.uint8], NDArray[np.intp]]:
    """Grow a palette with no unused entry to ``min(k, len(colours))`` entries, if it is short.

    The colours adding most error (pixel count times squared distance in ``space``; ``points``
    are their coordinates, when already computed) become new entries, each then the exact
    nearest entry of its own pixels: the error strictly drops and every entry stays in use.
    Colours already matched exactly are never added, so a palette stays short only when every
    colour is matched exactly (lossless): then no larger palette does better.
    """
    short = min(k, len(colours)) - len(palette)
    if short <= 0:
        return palette, labels
    if points is None:
        points = coordinates(colours, space)
    diff = points - coordinates(palette, space)[labels]
    worst = neediest((diff * diff).sum(axis=1) * counts, short)
    if not len(worst):
        return palette, labels
    palette = np.concatenate([palette, colours[worst]])
    return palette, nearest_centre(points, coordinates(palette, space), guess=labels)[0]


def cells(
    colours: NDArray[np.uint8],
    points: NDArray[np.float64],
    counts: NDArray[np.int64],
    bits: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean point and pixel count of each occupied cell of ``bits`` bits per RGB channel.

    ``points`` are the coordinates of ``colours`` in the fit's colour space; the cells are those
    of the RGB cube.

    Images of at most :data:`EXACT_COLOURS` colours keep their exact colours at any ``bits``.
    """
    weights = counts.astype(np.float64)
    if bits >= 8 or len(colours) <= EXACT_COLOURS:
        return points, weights
    inverse, n = cell_index(colours, bits)
    mass = per_cluster(inverse, weights, n)
    return per_cluster(inverse, weights[:, None] * points, n) / mass[:, None], mass


def refine(
    colours: NDArray[np.uint8],
    points: NDArray[np.float64],
    counts: NDArray[np.int64],
    centres: NDArray[np.float64],
    stages: tuple[Stage, ...],
) -> tuple[NDArray[np.float64], dict[str, int]]:
    """Weighted k-means over every pixel, from ``centres``, stage by stage.

    ``points`` are the coordinates of ``colours`` in the fit's colour space
    (:func:`pipeline.quantize.colours.coordinates`), ``centres`` too.

    Each :class:`Stage` runs Lloyd iterations, then split-merge moves, on the image's colours
    at its resolution (:func:`cells`); coarse stages are cheap and do most of the work, a last
    exact stage settles the centres on the true colours.

    Returns
    -------
    centres : ndarray (k, d)
    info : dict
        Lloyd iterations run and split-merge moves kept, over all stages.
    """
    info = {"refine_iter": 0, "search_kept": 0}
    for stage in stages:
        state = Clusters(*cells(colours, points, counts, stage.bits), centres)
        info["refine_iter"] += state.lloyd(stage.lloyd)
        if stage.search:
            info["search_kept"] += split_merge(state, tries=stage.search, max_iter=stage.lloyd)
        centres = state.centres
    return centres, info


def fit_palette(
    sample: NDArray[np.uint8],
    keys: NDArray[np.uint32],
    counts: NDArray[np.int64],
    k: int,
    *,
    random_state: int,
    max_iter: int = 1,
    tol: float = 1e-4,
    effort: int = 1,
    space: str = "rgb",
    fitted: tuple[NDArray[np.float32], int] | None = None,
) -> Fit:
    """Fit a palette of at most ``k`` colours.

    Parameters
    ----------
    sample : ndarray of uint8, shape (n, 3)
        Pixels drawn at random from the image (see :mod:`pipeline.quantize.sample`).
    keys, counts : ndarray
        The image's colour histogram (see :func:`pipeline.quantize.colours.histogram`).
    k : int
        Colours asked for.
    random_state : int
        Seed of the k-means++ seeding and of dask-ml.
    max_iter, tol : int, float
        Lloyd iterations and tolerance (absolute centre shift, coordinates divided by the
        space's unit: RGB scaled to [0, 1], ``"oklab"`` to [-0.33, 0.55]) of the dask-ml fit on
        the sample.
    effort : int
        0 to 3: how much work :func:`refine` and :func:`polish` put in after the sample fit
        (see :data:`EFFORT`); 0 only rounds and polishes the sample fit.
    space : str
        Colour space every stage works in and the labels are exact in: ``"rgb"`` (uint8 values)
        or ``"oklab"`` (:mod:`pipeline.quantize.oklab`); see
        :data:`pipeline.quantize.colours.SPACES`. The palette is uint8 sRGB either way, and
        ``info["mse"]`` is the RGB error. A gray image keeps its exact RGB optimum (on the camera
        photo it also has a lower CIEDE2000 error than the optimum of OKLab lightness), labelled in
        ``space``.
    fitted : tuple, optional
        The dask-ml fit of the sample, when done already: centres (in :func:`sample_points`'s
        coordinates, empty clusters re-seeded) and Lloyd iterations, from the seeds
        ``seed(sample_points(sample, space), k, random_state)``, as :func:`lloyd_sample` gives
        them (or :func:`pipeline.quantize.lloyd.lloyd_samples`, fitting several images' samples
        in one dask-ml call: the same centres). Used only when :func:`fits_sample`.

    Returns
    -------
    Fit
    """
    check_space(space)
    colours = unpack(keys)
    info: dict[str, Any] = {
        "distinct_colors": len(keys),
        "counted_pixels": int(counts.sum()),
        "sample_size": len(sample),
    }
    with thread_limit():
        if len(keys) <= k:
            palette = colours
            labels = np.arange(len(keys), dtype=np.intp)
            info.update(method="distinct colours")  # lossless when every pixel was counted
        elif is_gray(colours):
            values, _ = best_levels(colours[:, 0], counts, k)
            palette = np.repeat(values[:, None], 3, axis=1)
            labels = nearest(colours, palette, space=space)
            info.update(method="exact optimum of a gray image (dynamic programming over levels)")
        else:
            unit = SPACES[space]
            if fitted is None:
                x = sample_points(sample, space)
                fitted = lloyd_sample(
                    x,
                    seed(x, k, random_state),
                    max_iter=max_iter,
                    tol=tol,
                    random_state=random_state,
                )
            centres, n_iter = fitted
            stages, polish_iter = EFFORT[effort]
            stages = tuple(
                replace(stage, bits=max(stage.bits, FEWEST_BITS[space])) for stage in stages
            )
            points = coordinates(colours, space)
            centres64, refined = refine(
                colours, points, counts, centres.astype(np.float64) * unit, stages
            )
            palette, labels, polished = polish(
                colours,
                counts,
                to_uint8(centres64, space),
                max_iter=polish_iter,
                space=space,
                points=points,
            )
            for _ in range(FILL_ROUNDS):
                # polishing can leave entries unused or equal: fill and polish again
                palette, labels = _drop_unused(palette, labels)
                if len(palette) == k:
                    break
                palette, labels = fill(
                    colours, counts, palette, labels, k, space=space, points=points
                )
                palette, labels, more = polish(
                    colours, counts, palette, max_iter=polish_iter, space=space, points=points
                )
                polished += more
            palette, labels = fill(
                colours, counts, *_drop_unused(palette, labels), k, space=space, points=points
            )
            info.update(
                method="dask-ml KMeans on sample (k-means++ seeds), refined over all pixels",
                lloyd_iter=n_iter,
                **refined,
                polish_iter=polished,
            )
        palette, labels = _drop_unused(palette, labels)
        if len(palette) <= CHAIN_MOST:  # stored in an order LZMA and PNG filters gain from,
            order = colour_chain(palette)  # labels exact in it (ties: lowest), each searched
            place = np.empty_like(order)  # from its entry's new place
            place[order] = np.arange(len(order))
            palette = palette[order]
            guess = place[labels]
            palette, labels = _drop_unused(palette, nearest(colours, palette, guess, space))
        err = squared_errors(keys, labels, palette).astype(np.float64)  # exact integers
    info["mse"] = float((err * counts).sum() / (3 * counts.sum()))
    return Fit(palette=palette, keys=keys, labels=labels.astype(np.uint16), info=info, space=space)
