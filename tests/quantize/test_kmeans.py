import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.quantize.colours import coordinates, histogram, unpack
from pipeline.quantize.kmeans import Clusters, nearest_centre, plusplus, split_merge, update


def naive_lloyd(points, weights, centres, max_iter):
    """Reference: full reassignment and re-centring every iteration."""
    for _ in range(max_iter):
        d = ((points[:, None, :] - centres[None]) ** 2).sum(axis=2)
        labels = d.argmin(axis=1)
        new = update(points, weights, labels, centres)
        if np.array_equal(new, centres):
            break
        centres = new
    return centres


def weighted_colours(seed, n=400, dims=3):
    rng = np.random.default_rng(seed)
    points = rng.integers(0, 256, (n, dims)).astype(np.float64)
    weights = rng.integers(1, 50, n).astype(np.float64)
    return points, weights


@given(st.integers(0, 10_000), st.integers(2, 12), st.sampled_from([3, 6]))
@settings(max_examples=40, deadline=None)
def test_incremental_lloyd_equals_full_lloyd(seed, k, dims):
    """In any number of dimensions (colours' coordinates: 3 in RGB, 6 in "oklab")."""
    points, weights = weighted_colours(seed, dims=dims)
    start = points[:k] + 0.5  # distinct, off the integer grid: no exact distance ties
    state = Clusters(points, weights, start)
    state.lloyd(200)
    assert np.allclose(state.centres, naive_lloyd(points, weights, start, 200))
    full_labels, _ = nearest_centre(points, state.centres)
    assert np.array_equal(state.labels, full_labels)


@given(st.integers(0, 10_000))
@settings(max_examples=30, deadline=None)
def test_incremental_sums_match_a_recount(seed):
    points, weights = weighted_colours(seed)
    state = Clusters(points, weights, points[:8] + 0.25)
    state.lloyd(3)
    mass = np.bincount(state.labels, weights=weights, minlength=8)
    assert np.allclose(state.mass, mass)
    means = update(points, weights, state.labels, state.centres)
    expected = float((weights * ((points - means[state.labels]) ** 2).sum(axis=1)).sum())
    assert state.inertia() == pytest.approx(expected)


@pytest.mark.parametrize("space", ["rgb", "oklab"])
def test_split_merge_never_increases_the_error(small_photo, space):
    keys, counts = histogram(small_photo)
    colours = coordinates(unpack(keys), space)
    state = Clusters(colours, counts.astype(np.float64), colours[:: len(colours) // 32][:32])
    state.lloyd(100)
    before = state.inertia()
    kept = split_merge(state, tries=15)
    assert state.inertia() <= before
    assert (kept > 0) == (state.inertia() < before)


def test_empty_clusters_take_the_worst_point():
    points = np.array([[0, 0, 0], [10, 0, 0], [200, 200, 200]], dtype=np.float64)
    weights = np.ones(3)
    # two centres start on top of each other: one of them is left empty
    state = Clusters(points, weights, np.array([[5.0, 0, 0], [5.0, 0, 0], [200, 200, 200]]))
    state.lloyd(10)
    assert sorted(map(tuple, state.centres)) == sorted(map(tuple, points))


@pytest.mark.parametrize("dims", [3, 6])
def test_plusplus_takes_distinct_points_far_apart(dims):
    """Seeds on well separated groups of points: one seed per group, in any dimension."""
    rng = np.random.default_rng(4)
    groups = rng.permutation(np.eye(dims) * 1000)[: min(dims, 6)]
    points = np.concatenate([g + rng.random((50, dims)) for g in groups])
    chosen = plusplus(points, len(groups), random_state=0)
    assert sorted(set(chosen // 50)) == list(range(len(groups)))


def greedy_plusplus(points, k, random_state):
    """scikit-learn's greedy k-means++ in NumPy, with plusplus's draws: the oracle of its kernel."""
    rng = np.random.default_rng(random_state)
    first = int(rng.integers(len(points)))
    uniforms = rng.random((k - 1, 2 + int(np.log(k))))
    chosen = [first]
    closest = ((points - points[first]) ** 2).sum(axis=1)
    for draws in uniforms:
        candidates = np.minimum(
            np.searchsorted(np.cumsum(closest), draws * closest.sum()), len(points) - 1
        )
        trials = [np.minimum(closest, ((points - points[c]) ** 2).sum(axis=1)) for c in candidates]
        best = int(np.argmin([t.sum() for t in trials]))
        chosen.append(int(candidates[best]))
        closest = trials[best]
    return np.array(chosen)


@pytest.mark.parametrize("dims", [1, 3, 6])
@pytest.mark.parametrize(("n", "k"), [(5000, 128), (1023, 16), (37, 5)])
def test_plusplus_is_greedy_kmeans_plusplus(dims, n, k):
    """Random points (no exact ties between candidates): the oracle's seeds, in its order."""
    points = np.random.default_rng(dims * n + k).random((n, dims)).astype(np.float32)
    expected = greedy_plusplus(points.astype(np.float64), k, random_state=3)
    assert np.array_equal(plusplus(points, k, random_state=3), expected)
