import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.quantize.colours import (
    FEW_CENTRES,
    GUIDED_FROM,
    NEIGHBOURS_KEPT,
    histogram,
    merge_histograms,
    nearest,
    nearest_centre,
    nearest_centre_scattered,
    pack,
    squared_errors,
    unpack,
)
from tests.oracles import brute_force

rgb = hnp.arrays(np.uint8, st.tuples(st.integers(1, 300), st.just(3)))
palettes = hnp.arrays(np.uint8, st.tuples(st.integers(1, 40), st.just(3)))


@given(rgb)
def test_pack_roundtrips(pixels):
    assert np.array_equal(unpack(pack(pixels)), pixels)


@given(pixels=rgb, palette=palettes)
@settings(max_examples=200, deadline=None)  # the first call compiles
def test_nearest_equals_integer_brute_force(pixels, palette):
    assert np.array_equal(nearest(pixels, palette), brute_force(pixels, palette))


@given(
    pixels=rgb,
    # few distinct values make exact ties between palette entries common
    palette=hnp.arrays(
        np.uint8,
        st.tuples(st.integers(2, 12), st.just(3)),
        elements=st.sampled_from([0, 1, 2, 254, 255]),
    ),
)
def test_nearest_ties_go_to_lowest_index(pixels, palette):
    assert np.array_equal(nearest(pixels, palette), brute_force(pixels, palette))


def test_nearest_extreme_distances_are_exact():
    """The largest possible distances (white vs black) stay exact in float32."""
    pixels = np.array([[255, 255, 255], [0, 0, 0], [255, 0, 255]], dtype=np.uint8)
    palette = np.array([[0, 0, 0], [255, 255, 254], [255, 254, 255], [1, 0, 0]], dtype=np.uint8)
    assert nearest(pixels, palette).tolist() == brute_force(pixels, palette).tolist()


@pytest.mark.parametrize(
    "palette",
    [
        np.repeat(np.arange(0, 256, 17, dtype=np.uint8)[:, None], 3, axis=1),  # on one line
        np.array([[9, 200, 30]] * 3 + [[10, 10, 10]] * 2, dtype=np.uint8),  # duplicates
        np.array([[0, 0, 0], [0, 0, 2], [0, 2, 0], [2, 0, 0]], dtype=np.uint8),  # same projection
    ],
)
def test_nearest_on_degenerate_palettes(china, palette):
    """Entries that share their projection on the search axis still tie to the lowest index."""
    pixels = np.concatenate([china.reshape(-1, 3)[::5], unpack(np.arange(0, 1 << 24, 4099))])
    assert np.array_equal(nearest(pixels, palette), brute_force(pixels, palette))


@given(rgb, st.integers(1, 5))
def test_merged_chunk_histograms_equal_whole_histogram(pixels, parts):
    pieces = np.array_split(pixels, parts)
    merged = merge_histograms(*(histogram(p) for p in pieces if len(p)))
    whole = histogram(pixels)
    assert np.array_equal(merged[0], whole[0])
    assert np.array_equal(merged[1], whole[1])
    assert merged[1].sum() == len(pixels)


@pytest.mark.parametrize("k", [1, 16, 128, 300])
def test_nearest_on_a_real_photo(china, k):
    pixels = china.reshape(-1, 3)[::7]
    palette = np.random.default_rng(k).integers(0, 256, (k, 3), dtype=np.uint8)
    assert np.array_equal(nearest(pixels, palette), brute_force(pixels, palette))


@pytest.mark.parametrize("dims", [1, 2, 6])
@pytest.mark.parametrize("k", [FEW_CENTRES, 40])
def test_nearest_centre_in_any_dimension_equals_brute_force(dims, k):
    """Integer coordinates in a small range: many exact ties, which go to the lowest index."""
    rng = np.random.default_rng(dims * 100 + k)
    centres = rng.integers(0, 6, (k, dims)).astype(np.float64)
    points = rng.integers(0, 6, (GUIDED_FROM * k + 7, dims)).astype(np.float64)
    labels, dist = nearest_centre(points, centres)
    d = ((points[:, None, :] - centres[None]) ** 2).sum(axis=2)
    assert np.array_equal(labels, d.argmin(axis=1))
    assert np.array_equal(dist, d.min(axis=1))


@pytest.mark.parametrize("dims", [1, 3, 6])
@pytest.mark.parametrize("k", [FEW_CENTRES, 40, 128])
def test_nearest_centre_of_scattered_points_equals_brute_force(dims, k):
    """Points in random order, ties included: the labels and distances of comparing every centre."""
    rng = np.random.default_rng(dims * 1000 + k)
    centres = rng.integers(0, 6, (k, dims)).astype(np.float64)
    points = rng.permutation(rng.integers(0, 6, (GUIDED_FROM * k + 7, dims)).astype(np.float64))
    labels, dist = nearest_centre_scattered(points, centres)
    d = ((points[:, None, :] - centres[None]) ** 2).sum(axis=2)
    assert np.array_equal(labels, d.argmin(axis=1))
    assert np.array_equal(dist, d.min(axis=1))
    assert all(len(a) == 0 for a in nearest_centre_scattered(points[:0], centres))


def test_nearest_centre_of_a_photo_sample_is_that_of_nearest_centre(china):
    """A random sample of a photo, as dask-ml's fit takes it: the same answer, not in order."""
    rng = np.random.default_rng(0)
    sample = china.reshape(-1, 3)[rng.choice(china.shape[0] * china.shape[1], 5000)] / 255
    centres = sample[rng.choice(len(sample), 128, replace=False)] + 0.01
    found = nearest_centre_scattered(sample, centres)
    expected = nearest_centre(sample, centres)
    assert all(np.array_equal(a, b) for a, b in zip(found, expected, strict=True))


@given(st.integers(0, 10_000), st.integers(1, 256))
@settings(max_examples=30, deadline=None)
def test_squared_errors_are_those_of_the_unpacked_colours(seed, k):
    rng = np.random.default_rng(seed)
    keys = np.unique(rng.integers(0, 1 << 24, 500, dtype=np.uint32))
    palette = rng.integers(0, 256, (k, 3), dtype=np.uint8)
    labels = rng.integers(0, k, len(keys)).astype(np.uint16)
    diff = unpack(keys).astype(np.int64) - palette[labels]
    assert np.array_equal(squared_errors(keys, labels, palette), (diff * diff).sum(axis=1))
    assert np.array_equal(
        squared_errors(keys, labels.astype(np.intp), palette), (diff * diff).sum(axis=1)
    )


def test_nearest_centre_far_from_every_centre_compares_them_all():
    """Points whose scan would pass a centre's kept neighbours: the brute force's answer."""
    rng = np.random.default_rng(5)
    k = 4 * NEIGHBOURS_KEPT
    centres = rng.random((k, 3)) * 10  # packed together, far from the points
    points = 200 + rng.random((GUIDED_FROM * k, 3)) * 50
    labels, dist = nearest_centre(points, centres, guess=np.zeros(len(points), dtype=np.intp))
    d = ((points[:, None, :] - centres[None]) ** 2).sum(axis=2)
    assert np.array_equal(labels, d.argmin(axis=1))
    assert np.array_equal(dist, d.min(axis=1))


def test_nearest_centre_takes_the_first_of_equal_centres_whatever_the_guess():
    """A palette holding one colour twice: its pixels go to the first, even guessed the second."""
    rng = np.random.default_rng(6)
    centres = rng.integers(0, 256, (40, 3)).astype(np.float64)
    centres[30] = centres[7]
    points = np.repeat(centres[7:8], GUIDED_FROM * 40, axis=0) + rng.integers(-2, 3, (640, 3))
    labels, _ = nearest_centre(points, centres, guess=np.full(len(points), 30, dtype=np.intp))
    d = ((points[:, None, :] - centres[None]) ** 2).sum(axis=2)
    assert np.array_equal(labels, d.argmin(axis=1))
    assert 7 in labels
    assert 30 not in labels
