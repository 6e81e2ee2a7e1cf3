"""dask-ml Lloyd iterations on pixel samples: several images' in one call, clusters never mixed.

A dask-ml k-means call costs 10-25 ms whatever the data size (graph building, tokenizing, a
compute per iteration; ``KMeans.fit`` adds a NaN/inf pass and the inertia, which
:func:`_iteration` leaves out): for a 32 x 32 thumbnail that is more than the rest of its fit.
:func:`lloyd_samples` pays it once for several images: their samples, stacked, are one dask-ml
fit of all their clusters at once, each image's points and centres in a slab of their own,
along one extra coordinate, so far from the other images' that no point is ever nearer to
another image's centre than to one of its own. An image's fit is the same, to the bit, whatever
images share its call (or none: :func:`lloyd_sample`), so a job's stores do not depend on how
its images were batched.

Why clusters never mix. Coordinates are :func:`pipeline.quantize.fit.sample_points`, in a box
whose squared diagonal is at most :data:`REACH` (3 for RGB in [0, 1]; 1.48 for ``"oklab"``).
Image ``i`` of a call (from 0) gets the extra coordinate ``FIRST_SLAB + SLAB_SPACING * i``. A
point's squared distance to

* a centre of its own image - a point of its sample (a seed) or the mean of some (dask-ml's
  update), so in the box and in the same slab - is at most ``REACH = 3``;
* a centre of another image is at least ``SLAB_SPACING**2 = 4 = REACH + 1``;
* the centre of an empty cluster, which dask-ml sets to all zeros, extra coordinate included,
  is at least ``FIRST_SLAB**2 = 33,124``.

So each image keeps a non-empty cluster, whose mean stays in its slab, nearer to each of its
points than any other image's centre or any empty one. The margin, 1 in squared distance, dwarfs
rounding (next paragraph: 2**-37 per operation).

Why an image's fit does not depend on the others. scikit-learn computes the float32 distances in
float64 as ``|x|**2 - 2 x.c + |c|**2``: each of the three sums includes the extra coordinate's
``o**2`` (an integer, 33,124 to 59,536, all in [2**15, 2**16)), so each is rounded to a multiple
of 2**-37 whatever ``o`` is, ``o**2`` being one too; the final sum cancels ``o**2`` exactly. A
point's distances to its own centres are therefore the same for every slab, and with them its
nearest centre (measured on thumbnails and photos, alone and among 31 other images: identical).
dask-ml's update sums each cluster's float32 coordinates in the order of its points, the same
alone or stacked; the extra coordinate's sum is exact (integers, below 2**24 for
:data:`MOST_POINTS` points of at most 244). Stopping is decided per image (its own centres'
shift against ``tol``), one dask-ml iteration per call, and the last labels (only used to find
empty clusters, :func:`reseed_empty`) are each image's own exact nearest centres.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
from numpy.typing import NDArray
from threadpoolctl import ThreadpoolController

from pipeline.quantize.colours import nearest_centre_scattered

#: Extra coordinate of the first image's slab, and the spacing of the next ones (see the
#: module's text): the squares of 182 to 244 all lie in [2**15, 2**16).
FIRST_SLAB, SLAB_SPACING = 182, 2

#: Largest squared diagonal of the box holding the points' coordinates (RGB in [0, 1]).
REACH = 3.0

#: Most images in one call: their extra coordinates stay below 256.
MOST_IMAGES = 32

#: Most sample points of an image in one call with others (the sum of a cluster's extra
#: coordinates stays exact in float32); a larger sample is fitted alone.
MOST_POINTS = 1 << 16

#: Most distances one call computes per pass (all its points times all its centres), after
#: which no image is added: the call's cost grows with the square of its images. 32 x 32
#: thumbnails at 16 colours, one call for m of them against m calls, on this machine: 10.8
#: against 62.8 ms for 2, 32.6 against 168 ms for 16 (2**22 distances), 93.5 against 345 ms
#: for 32.
MOST_PAIRS = 1 << 22

Start = tuple[NDArray[np.float32], NDArray[np.float32]]


#: Held while a thread of this process imports dask-ml (and scikit-learn with it). A worker of
#: several threads that did not preload them (:mod:`pipeline.job.preload`) starts several
#: tasks at once, and two threads importing a package's modules in different orders can
#: deadlock: one importing ``dask_ml.cluster`` while another imported
#: ``dask_ml.cluster.k_means`` raised ``_DeadlockError`` in the first. The first thread that
#: needs them imports them whole; the others wait.
_IMPORTING = threading.Lock()


@functools.cache
def _import() -> tuple[Callable[..., Any], ThreadpoolController]:
    from dask_ml.cluster import k_means as module

    # dask-ml's one numba kernel (each cluster's sums, ``_centers_dense``) is compiled without
    # numba's on-disk cache: 0.4-0.6 s of every process's first fit, on the start-up of every
    # job and worker. Cached like the pipeline's own kernels, it loads in 5-7 ms: the same
    # machine code (numba keys its cache by the source file, the signature and the CPU).
    module._centers_dense.enable_caching()

    # Finding the loaded BLAS/OpenMP libraries costs ~5 ms: once per process, after dask-ml
    # (and with it scikit-learn's OpenMP runtime) is loaded.
    return module.k_means, ThreadpoolController()


def dask_ml_k_means() -> tuple[Callable[..., Any], ThreadpoolController]:
    """dask-ml's ``k_means`` and this process's thread pools, imported once, by one thread.

    Importing dask-ml imports scikit-learn too: call this before importing it elsewhere.
    """
    with _IMPORTING:
        return _import()


def thread_limit() -> contextlib.AbstractContextManager[object]:
    """A context in which BLAS and OpenMP use one thread: a fit is one task among many."""
    return dask_ml_k_means()[1].limit(limits=1)


def full(starts: Sequence[Start]) -> bool:
    """Whether a call for ``starts`` should take no more images (:data:`MOST_IMAGES`, ``PAIRS``)."""
    points = sum(len(points) for points, _ in starts)
    centres = sum(len(seeds) for _, seeds in starts)
    return len(starts) >= MOST_IMAGES or points * centres >= MOST_PAIRS


def _in_slab(values: NDArray[np.float32], slab: int) -> NDArray[np.float32]:
    """``values`` (n, d) with the extra coordinate of slab ``slab``."""
    extra = np.full((len(values), 1), FIRST_SLAB + SLAB_SPACING * slab, dtype=np.float32)
    return np.concatenate([values, extra], axis=1)


def _iteration(starts: Sequence[Start], random_state: int) -> list[NDArray[np.float32]]:
    """One dask-ml Lloyd iteration for every image of ``starts`` (points, centres), in one call.

    The call is ``dask_ml.cluster.k_means.k_means``, the function ``KMeans.fit`` runs, without
    what ``fit`` adds around it: a pass looking for NaN and infinite values (the points are
    8-bit colours scaled, never either) and the inertia, a second pass of distances over every
    point that nothing here reads (they were 40% of a call for 16 thumbnails at 16 colours).
    The centres are the same, to the bit.

    Returns each image's new centres, float32; an empty cluster's are zeros (dask-ml's).
    """
    k_means = dask_ml_k_means()[0]
    points = np.concatenate([_in_slab(p, i) for i, (p, _) in enumerate(starts)])
    centres = np.concatenate([_in_slab(c, i) for i, (_, c) in enumerate(starts)])
    with dask.config.set(scheduler="synchronous"), thread_limit():
        _, moved, _ = k_means(
            da.from_array(points, chunks=(len(points), -1)),
            len(centres),
            init=centres,
            n_init=1,
            max_iter=1,
            tol=0.0,  # stopping is decided per image, by the caller
            random_state=random_state,
        )
    moved = np.asarray(moved, dtype=np.float32)[:, :-1]
    ends = np.cumsum([len(c) for _, c in starts])
    return np.split(moved, ends[:-1])


def reseed_empty(
    sample: NDArray[np.float32], centres: NDArray[np.float32], assigned: NDArray[np.intp]
) -> NDArray[np.float32]:
    """``centres`` with those of empty clusters moved to the points farthest from their centres.

    ``assigned``: the cluster of each point of ``sample``. dask-ml leaves an empty cluster's
    centre at zero (black); here the first empty one goes to the point of ``sample`` farthest
    from its own centre, the next to the second farthest, and so on. ``centres`` is changed in
    place.
    """
    counts = np.bincount(assigned, minlength=len(centres))
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        dist = ((sample - centres[assigned]) ** 2).sum(axis=1)
        centres[empty] = sample[np.argsort(dist, kind="stable")[::-1][: len(empty)]]
    return centres


def lloyd_samples(
    starts: Sequence[Start], *, max_iter: int, tol: float, random_state: int
) -> list[tuple[NDArray[np.float32], int]]:
    """Lloyd iterations of ``dask_ml.cluster.KMeans`` on each image's sample, in shared calls.

    Each call is one iteration for every image still moving, on dask's synchronous scheduler (the
    samples are small, and the fit is part of one task of the job's graph). An image stops once
    its centres move by less than ``tol`` (squared shift, summed over its centres), keeping the
    centres it had; empty clusters are then re-seeded (:func:`reseed_empty`).

    Parameters
    ----------
    starts : sequence of (points, seeds)
        Each image's sample points (n_i, d) in :func:`~pipeline.quantize.fit.sample_points`'
        coordinates and its starting centres (k_i, d), float32, the same d for all; at most
        :data:`MOST_IMAGES` images, of at most :data:`MOST_POINTS` points each unless alone.
    max_iter, tol : int, float
        Lloyd iterations at most, and the shift below which an image stops.
    random_state : int
        Passed to dask-ml (its starting centres are given, so it draws nothing).

    Returns
    -------
    list of (centres, n_iter)
        Each image's centres (k_i, d) and its Lloyd iterations: the same whatever other images
        share the calls.
    """
    if len(starts) > 1 and (
        len(starts) > MOST_IMAGES or any(len(points) > MOST_POINTS for points, _ in starts)
    ):
        raise ValueError(f"one call takes {MOST_IMAGES} images of {MOST_POINTS} points at most")
    for points, _ in starts:
        if len(points) and float(((points.max(0) - points.min(0)) ** 2).sum()) > REACH:
            raise ValueError(f"sample points must lie in a box of squared diagonal {REACH}")
    centres = [np.array(seeds, dtype=np.float32) for _, seeds in starts]
    n_iter = [0] * len(starts)
    moving = list(range(len(starts)))
    for _ in range(max_iter):
        moved = _iteration([(starts[i][0], centres[i]) for i in moving], random_state)
        still = []
        for i, new in zip(moving, moved, strict=True):
            n_iter[i] += 1
            shift = float(((centres[i].astype(np.float64) - new) ** 2).sum())
            if shift >= tol:
                centres[i] = new
                still.append(i)
        moving = still
        if not moving:
            break
    return [
        (reseed_empty(points, c, nearest_centre_scattered(points.astype(np.float64), c)[0]), n)
        for (points, _), c, n in zip(starts, centres, n_iter, strict=True)
    ]


def lloyd_sample(
    sample: NDArray[np.float32],
    init: NDArray[np.float32],
    *,
    max_iter: int,
    tol: float,
    random_state: int,
) -> tuple[NDArray[np.float32], int]:
    """:func:`lloyd_samples` of one image: its centres (k, d) and Lloyd iterations.

    Centres of clusters that end up empty (dask-ml sets them to zero, i.e. black) are moved to
    the sample points farthest from their centres.
    """
    ((centres, n_iter),) = lloyd_samples(
        [(sample, init)], max_iter=max_iter, tol=tol, random_state=random_state
    )
    return centres, n_iter
