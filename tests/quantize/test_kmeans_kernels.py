"""The compiled k-means kernels against NumPy oracles: the same results to the last bit.

The oracles are the NumPy implementations the kernels replaced (one NumPy call per step: bincount
sums, boolean masks, stable argsorts, ``union1d``), kept here as the reference. Stores written by
the tool must not change with the kernels, so every comparison is exact.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.quantize.colours import (
    FEW_CENTRES,
    GUIDED_FROM,
    WIDEN,
    _nearest_all,
    _nearest_guided,
    axes_of,
    coordinates,
    histogram,
    nearest_centre,
    pack,
    unpack,
)
from pipeline.quantize.fit import EFFORT, EXACT_COLOURS, refine
from pipeline.quantize.kmeans import (
    Clusters,
    _split,
    cell_index,
    cluster_errors,
    per_cluster,
    split_merge,
)


def numpy_nearest_centre(points, centres, guess=None):
    """nearest_centre with its guided search's tables built by NumPy."""
    points = np.ascontiguousarray(points)
    centres64 = np.ascontiguousarray(centres, dtype=np.float64).reshape(-1, points.shape[1])
    if len(centres64) <= FEW_CENTRES or len(points) < GUIDED_FROM * len(centres64):
        return _nearest_all(points, centres64, axes_of(points))
    gaps = np.sqrt(((centres64[:, None, :] - centres64[None, :, :]) ** 2).sum(axis=2))
    neighbours = np.argsort(gaps, axis=1, kind="stable")
    spacing = np.take_along_axis(gaps, neighbours, axis=1)
    if guess is None:
        guess = np.full(len(points), -1, dtype=np.intp)
    guess = np.asarray(guess, dtype=np.intp)
    return _nearest_guided(
        points, centres64, neighbours, spacing, guess, 1.0 + WIDEN, axes_of(points)
    )


def numpy_per_cluster(labels, values, k):
    if values.ndim == 1:
        return np.bincount(labels, weights=values, minlength=k).astype(np.float64, copy=False)
    return np.stack(
        [np.bincount(labels, weights=values[:, c], minlength=k) for c in range(values.shape[1])],
        axis=1,
    )


def numpy_cluster_errors(mass, sums, squares):
    full = mass > 0
    errors = np.zeros_like(mass)
    errors[full] = squares[full] - (sums[full] ** 2).sum(axis=1) / mass[full]
    return errors


class NumpyClusters:
    """Clusters as NumPy calls."""

    def __init__(self, points, weights, centres):
        self.points = np.asarray(points, dtype=np.float64)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.wp = self.weights[:, None] * self.points
        self.wpp = self.weights * (self.points * self.points).sum(axis=1)
        self.centres = np.array(centres, dtype=np.float64)
        self.labels, self.dist = numpy_nearest_centre(self.points, self.centres)
        k = len(self.centres)
        self.mass = numpy_per_cluster(self.labels, self.weights, k)
        self.sums = numpy_per_cluster(self.labels, self.wp, k)
        self.squares = numpy_per_cluster(self.labels, self.wpp, k)

    @property
    def k(self):
        return len(self.centres)

    def inertia(self):
        return float(numpy_cluster_errors(self.mass, self.sums, self.squares).sum())

    def candidates(self, centres, moved):
        labels = self.labels.copy()
        dist = self.dist.copy()
        if len(moved) < len(centres):
            j, d = numpy_nearest_centre(self.points, centres[moved])
            better = d < dist
            labels[better] = moved[j[better]]
            dist[better] = d[better]
        flag = np.zeros(len(centres), dtype=bool)
        flag[moved] = True
        mine = np.flatnonzero(flag[self.labels])
        if len(mine):
            labels[mine], dist[mine] = numpy_nearest_centre(
                self.points[mine], centres, labels[mine]
            )
        return labels, dist

    def _sums_after(self, labels):
        changed = np.flatnonzero(labels != self.labels)
        old, new = self.labels[changed], labels[changed]

        def moved(total, values):
            values = values[changed]
            return (
                total
                + numpy_per_cluster(new, values, self.k)
                - numpy_per_cluster(old, values, self.k)
            )

        return (
            changed,
            moved(self.mass, self.weights),
            moved(self.sums, self.wp),
            moved(self.squares, self.wpp),
        )

    def trial_inertia(self, labels):
        return float(numpy_cluster_errors(*self._sums_after(labels)[1:]).sum())

    def _adopt(self, labels, dist):
        changed, self.mass, self.sums, self.squares = self._sums_after(labels)
        touched = np.union1d(self.labels[changed], labels[changed])
        self.labels, self.dist = labels, dist
        return touched

    def _recentre(self, touched):
        full = self.mass[touched] > 0
        idx = touched[full]
        means = self.sums[idx] / self.mass[idx, None]
        moved = idx[np.any(means != self.centres[idx], axis=1)]
        self.centres[idx] = means
        empty = touched[~full]
        if len(empty):
            worst = np.argsort(self.weights * self.dist, kind="stable")[::-1][: len(empty)]
            self.centres[empty[: len(worst)]] = self.points[worst]
            moved = np.union1d(moved, empty[: len(worst)])
        return moved

    def lloyd(self, max_iter, touched=None):
        if touched is None:
            touched = np.arange(self.k)
        for it in range(1, max_iter + 1):
            moved = self._recentre(touched)
            if not len(moved):
                return it
            touched = self._adopt(*self.candidates(self.centres, moved))
            if not len(touched):
                return it
        self._recentre(touched)
        return max_iter

    def try_centres(self, centres, moved, max_iter):
        labels, dist = self.candidates(centres, moved)
        if self.trial_inertia(labels) >= self.inertia():
            return False
        self.centres = centres.copy()
        touched = np.union1d(self._adopt(labels, dist), moved)
        self.lloyd(max_iter, touched)
        return True


def numpy_split_merge(state, *, tries, max_iter=100):
    k = state.k
    if k < 3:
        return 0
    rejected = set()
    kept = 0
    for _ in range(tries):
        mass, sums, centres = state.mass, state.sums, state.centres
        error = numpy_cluster_errors(mass, sums, state.squares)
        gap = ((centres[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        np.fill_diagonal(gap, np.inf)
        partner = gap.argmin(axis=1)
        pm = mass[partner]
        merge_cost = mass * pm / np.maximum(mass + pm, 1e-12) * gap[np.arange(k), partner]
        move = next(
            (
                (int(i), int(j))
                for j in np.argsort(merge_cost, kind="stable")[:4]
                for i in np.argsort(-error, kind="stable")[:4]
                if error[i] > 0 and i not in (j, partner[j]) and (int(i), int(j)) not in rejected
            ),
            None,
        )
        if move is None:
            break
        i, j = move
        p = int(partner[j])
        trial = centres.copy()
        trial[p] = (sums[p] + sums[j]) / max(mass[p] + mass[j], 1e-12)
        members = state.labels == i
        trial[i], trial[j] = _split(state.points[members], state.weights[members])
        if state.try_centres(trial, np.array(sorted({i, j, p}), dtype=np.intp), max_iter):
            rejected.clear()
            kept += 1
        else:
            rejected.add(move)
    return kept


def numpy_cells(colours, points, counts, bits):
    weights = counts.astype(np.float64)
    if bits >= 8 or len(colours) <= EXACT_COLOURS:
        return points, weights
    coarse = (colours >> (8 - bits)).astype(np.uint8)
    _, inverse = np.unique(pack(coarse), return_inverse=True)
    n = int(inverse.max()) + 1
    mass = numpy_per_cluster(inverse, weights, n)
    return numpy_per_cluster(inverse, weights[:, None] * points, n) / mass[:, None], mass


def numpy_refine(colours, points, counts, centres, stages):
    info = {"refine_iter": 0, "search_kept": 0}
    for stage in stages:
        state = NumpyClusters(*numpy_cells(colours, points, counts, stage.bits), centres)
        info["refine_iter"] += state.lloyd(stage.lloyd)
        if stage.search:
            info["search_kept"] += numpy_split_merge(
                state, tries=stage.search, max_iter=stage.lloyd
            )
        centres = state.centres
    return centres, info


def assert_same_state(state, oracle):
    for name in ("centres", "labels", "dist", "mass", "sums", "squares"):
        assert np.array_equal(getattr(state, name), getattr(oracle, name)), name
    assert state.inertia() == oracle.inertia()


@given(st.integers(0, 2**32 - 1), st.integers(1, 7))
@settings(max_examples=60, deadline=None)
def test_cell_index_equals_unique(seed, bits):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 5000))
    # spread over the cube or crowded into a corner of it (few cells, many colours each)
    colours = rng.integers(0, int(rng.choice([4, 256])), (n, 3)).astype(np.uint8)
    _, inverse = np.unique(pack((colours >> (8 - bits)).astype(np.uint8)), return_inverse=True)
    index, occupied = cell_index(colours, bits)
    assert np.array_equal(index, inverse.ravel())
    assert occupied == inverse.max() + 1


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_per_cluster_equals_bincount(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(0, 3000)), int(rng.integers(1, 70))
    labels = rng.integers(0, k, n).astype(np.intp)
    values = (
        rng.standard_normal((n, int(rng.integers(1, 7)))) * 10.0 ** rng.integers(-6, 7, n)[:, None]
    )
    assert np.array_equal(per_cluster(labels, values, k), numpy_per_cluster(labels, values, k))
    column = values[:, 0]
    assert np.array_equal(per_cluster(labels, column, k), numpy_per_cluster(labels, column, k))
    counts = rng.integers(1, 100, n)
    assert np.array_equal(per_cluster(labels, counts, k), numpy_per_cluster(labels, counts, k))


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_cluster_errors_equal_numpy(seed):
    rng = np.random.default_rng(seed)
    k, dims = int(rng.integers(1, 70)), int(rng.choice([3, 6]))
    mass = rng.integers(0, 5, k) * rng.random(k) * 10.0 ** rng.integers(0, 6)
    sums = rng.standard_normal((k, dims)) * 300 * mass[:, None]
    squares = (sums**2).sum(axis=1) / np.maximum(mass, 1) * (1 + rng.random(k))
    assert np.array_equal(
        cluster_errors(mass, sums, squares), numpy_cluster_errors(mass, sums, squares)
    )


@pytest.mark.parametrize("dims", [3, 6])
@pytest.mark.parametrize("k", [FEW_CENTRES + 1, 40, 128])
def test_nearest_centre_equals_the_numpy_tables_one(dims, k):
    """Duplicate centres and arbitrary guesses: the guided search starts where it is told."""
    rng = np.random.default_rng(dims * 1000 + k)
    for levels in (3, 6, 256):
        centres = rng.integers(0, levels, (k, dims)).astype(np.float64)
        centres[rng.integers(0, k, k // 3)] = centres[rng.integers(0, k, k // 3)]
        points = rng.integers(0, levels, (GUIDED_FROM * k + 11, dims)).astype(np.float64)
        for guess in (None, rng.integers(0, k, len(points)), rng.integers(-1, k, len(points))):
            ours = nearest_centre(points, centres, guess)
            oracle = numpy_nearest_centre(points, centres, guess)
            assert np.array_equal(ours[0], oracle[0])
            assert np.array_equal(ours[1], oracle[1])


def random_problem(rng):
    """Colours with many duplicate coordinates and tied distances, and starting centres among
    them, some repeated and some far away (empty clusters)."""
    n = int(rng.choice([1, 2, 5, 30, 300, 1000, 5000]))
    dims = int(rng.choice([3, 6]))
    levels = int(rng.choice([2, 4, 16, 256]))
    points = rng.integers(0, levels, (n, dims)).astype(np.float64)
    if rng.random() < 0.3:
        points = points + rng.random((n, dims))
    weights = rng.integers(1, 50, n).astype(np.float64)
    k = int(rng.integers(1, 65))
    centres = points[rng.integers(0, n, k)].copy()
    if rng.random() < 0.5:
        centres[rng.integers(0, k, k // 4)] = centres[0]
    if rng.random() < 0.3:
        centres[rng.integers(0, k, k // 5 + 1)] = 1000.0
    if rng.random() < 0.3:
        centres = centres + 0.5
    return points, weights, centres


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=150, deadline=None)
def test_clusters_equal_the_numpy_oracle(seed):
    rng = np.random.default_rng(seed)
    points, weights, centres = random_problem(rng)
    state = Clusters(points, weights, centres)
    oracle = NumpyClusters(points, weights, centres)
    assert_same_state(state, oracle)
    max_iter = int(rng.integers(1, 40))
    assert state.lloyd(max_iter) == oracle.lloyd(max_iter)
    assert_same_state(state, oracle)
    tries = int(rng.integers(0, 12))
    assert split_merge(state, tries=tries, max_iter=max_iter) == numpy_split_merge(
        oracle, tries=tries, max_iter=max_iter
    )
    assert_same_state(state, oracle)


def photo_problem(image, k, space, seed):
    keys, counts = histogram(image)
    colours = unpack(keys)
    points = coordinates(colours, space)
    start = points[np.random.default_rng(seed).choice(len(points), k, replace=False)]
    return colours, points, counts, start + 0.25


@pytest.mark.parametrize("effort", [1, 2])
@pytest.mark.parametrize("space", ["rgb", "oklab"])
@pytest.mark.parametrize("k", [16, 128])
def test_refine_equals_the_numpy_oracle_on_a_photo(photo, effort, space, k):
    colours, points, counts, start = photo_problem(photo, k, space, seed=k)
    stages = EFFORT[effort][0]
    centres, info = refine(colours, points, counts, start, stages)
    oracle_centres, oracle_info = numpy_refine(colours, points, counts, start, stages)
    assert np.array_equal(centres, oracle_centres)
    assert info == oracle_info


@pytest.mark.parametrize("space", ["rgb", "oklab"])
def test_refine_equals_the_numpy_oracle_on_thumbnails(china, space):
    """32 x 32 crops of a photo at 16 colours: the small images the kernels are for."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        row, col = rng.integers(0, china.shape[0] - 96), rng.integers(0, china.shape[1] - 96)
        step = int(rng.integers(1, 4))
        thumb = np.ascontiguousarray(
            china[row : row + 32 * step : step, col : col + 32 * step : step]
        )
        colours, points, counts, start = photo_problem(thumb, 16, space, seed=row)
        for stages in (EFFORT[1][0], EFFORT[3][0]):
            centres, info = refine(colours, points, counts, start, stages)
            oracle_centres, oracle_info = numpy_refine(colours, points, counts, start, stages)
            assert np.array_equal(centres, oracle_centres)
            assert info == oracle_info
