"""dask-ml Lloyd iterations shared by several images' samples (pipeline.quantize.lloyd)."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.quantize.fit import sample_points, seed
from pipeline.quantize.lloyd import (
    MOST_IMAGES,
    MOST_POINTS,
    full,
    lloyd_sample,
    lloyd_samples,
)


def start(colours, k, random_state=0):
    """An image's sample points (from uint8 colours) and its k-means++ seeds."""
    points = sample_points(np.asarray(colours, dtype=np.uint8), "rgb")
    return points, seed(points, k, random_state)


def alone(starts, **how):
    return [lloyd_sample(points, init, **how) for points, init in starts]


def assert_same(fits, reference):
    for (centres, n_iter), (expected, expected_iter) in zip(fits, reference, strict=True):
        assert n_iter == expected_iter
        assert np.array_equal(centres, expected)  # to the bit


@st.composite
def images(draw):
    """1 to 5 images: few levels per channel (many equal points, ties), 1 to 300 points, k 1-6."""
    found = []
    for _ in range(draw(st.integers(1, 5))):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        n = draw(st.integers(1, 300))
        levels = rng.choice(256, size=draw(st.integers(1, 6)), replace=False)
        colours = levels[rng.integers(0, len(levels), (n, 3))]
        found.append(start(colours, draw(st.integers(1, min(6, n)))))
    return found


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    starts=images(),
    max_iter=st.integers(1, 3),
    tol=st.sampled_from([0.0, 1e-4, 1e-2]),
)
def test_an_image_fit_is_the_same_whatever_images_share_its_calls(starts, max_iter, tol):
    how = {"max_iter": max_iter, "tol": tol, "random_state": 0}
    reference = alone(starts, **how)
    assert_same(lloyd_samples(starts, **how), reference)
    assert_same(lloyd_samples(starts[::-1], **how), reference[::-1])


def test_black_white_empty_clusters_k1_and_unequal_sizes_keep_to_their_own_points():
    rng = np.random.default_rng(0)
    black = start(np.zeros((50, 3)), 3)  # one point, three seeds: two clusters end empty
    white = start(np.full((2000, 3), 255), 4)
    one = start(rng.integers(0, 256, (1, 3)), 1)
    dark = start(rng.integers(0, 3, (5000, 3)), 1)  # k = 1, next to the black image
    light = start(rng.integers(250, 256, (7, 3)), 5)
    starts = [black, white, one, dark, light]
    for max_iter in (1, 4):
        fits = lloyd_samples(starts, max_iter=max_iter, tol=0.0, random_state=0)
        centres = [c for c, _ in fits]
        assert np.array_equal(centres[0], np.zeros((3, 3), np.float32))
        assert np.array_equal(centres[1], np.ones((4, 3), np.float32))
        assert np.array_equal(centres[2], one[0])
        for (points, init), own in zip(starts, centres, strict=True):
            assert own.shape == init.shape
            # each centre is a point or a mean of its own image's points: inside their box
            assert (own >= points.min(axis=0) - 1e-6).all()
            assert (own <= points.max(axis=0) + 1e-6).all()
        assert_same(fits, alone(starts, max_iter=max_iter, tol=0.0, random_state=0))


def test_calls_are_bounded():
    one = start(np.arange(30).reshape(10, 3), 2)
    many = [one] * (MOST_IMAGES + 1)
    with pytest.raises(ValueError, match="at most"):
        lloyd_samples(many, max_iter=1, tol=0.0, random_state=0)
    large = start(np.arange(3 * (MOST_POINTS + 1)).reshape(-1, 3) % 256, 2)
    with pytest.raises(ValueError, match="at most"):
        lloyd_samples([one, large], max_iter=1, tol=0.0, random_state=0)
    assert full(many[:MOST_IMAGES])
    assert not full(many[: MOST_IMAGES - 1])
    spread = np.array([[0, 0, 0], [2, 2, 2]], np.float32)  # not sample_points' coordinates
    with pytest.raises(ValueError, match="box"):
        lloyd_samples([(spread, spread)], max_iter=1, tol=0.0, random_state=0)


def test_dask_ml_kernel_is_loaded_from_numba_cache_by_a_new_process():
    """dask-ml's numba kernel is compiled once, then loaded from disk by every later process."""
    fit = (
        "import numpy as np\n"
        "from dask_ml.cluster import k_means\n"
        "from pipeline.quantize.lloyd import lloyd_sample\n"
        "points = np.linspace(0, 1, 96, dtype=np.float32).reshape(32, 3)\n"
        "lloyd_sample(points, points[:4].copy(), max_iter=1, tol=0.0, random_state=0)\n"
        "stats = k_means._centers_dense.stats\n"
        "print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))\n"
    )
    runs = [
        subprocess.run([sys.executable, "-c", fit], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    assert runs[1].stdout.split() == ["1", "0"], [run.stdout for run in runs]
