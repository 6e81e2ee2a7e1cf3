import dask
import dask.array as da
import numpy as np
import pytest
from dask.array.utils import assert_eq
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.job.graph import assign
from pipeline.quantize.assign import assign_block, distinct_keys, label_block, label_dtype
from pipeline.quantize.colours import histogram, nearest, pack, unpack
from pipeline.quantize.fit import Fit, fit_palette
from pipeline.quantize.sample import sample_positions
from tests.oracles import brute_force, oklab_brute_force


def fitted(image, k, random_state=0):
    rows, cols = sample_positions(image.shape[:2], 5000, random_state)
    keys, counts = histogram(image)
    return fit_palette(image[rows, cols], keys, counts, k, random_state=random_state)


@pytest.mark.parametrize("k", [16, 128])
def test_labels_equal_brute_force_on_real_photos_with_uneven_chunks(photo, k):
    fit = fitted(photo, k)
    image = da.from_array(photo, chunks=(97, 131, 3))
    labels = assign(image, fit, k)
    assert labels.chunks == image.chunks[:2]
    assert_eq(labels, brute_force(photo, fit.palette).astype(np.uint8))


def test_more_than_256_colours_gives_uint16_labels(china):
    fit = fitted(china, 300)
    labels = assign(da.from_array(china, chunks=(200, 256, 3)), fit, 300)
    assert labels.dtype == np.uint16
    assert_eq(labels, brute_force(china, fit.palette).astype(np.uint16))


def test_colours_missing_from_the_table_fall_back_to_exact_search(small_photo):
    fit = fitted(small_photo, 32)
    partial = Fit(fit.palette, fit.keys[::2], fit.labels[::2], fit.info)
    got = assign_block(small_photo, partial, np.dtype(np.uint8))
    assert np.array_equal(got, brute_force(small_photo, fit.palette))


def test_tables_released_and_reused_stay_exact(small_photo, china):
    # More fits than tables kept: tables are evicted, their memory cleared and reused, and
    # rebuilt when an evicted fit comes back; no entry of another palette may survive.
    fits = [fitted(small_photo, k) for k in (8, 16, 32)] + [fitted(china, 64)]
    for _ in range(2):
        for fit in fits:
            labels, error = label_block(china, fit, np.dtype(np.uint8))
            expected = brute_force(china, fit.palette)
            assert np.array_equal(labels, expected)
            assert error == ((china.astype(np.int64) - fit.palette[expected]) ** 2).sum()


@pytest.mark.parametrize(("colors", "dtype"), [(1, np.uint8), (256, np.uint8), (257, np.uint16)])
def test_label_dtype(colors, dtype):
    assert label_dtype(colors) == dtype


@st.composite
def images_palettes_chunks(draw):
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    levels = draw(st.sampled_from([2, 5, 256]))  # few levels: many repeated colours and ties
    image = draw(hnp.arrays(np.uint8, (h, w, 3), elements=st.integers(0, levels - 1)))
    palette = draw(hnp.arrays(np.uint8, st.tuples(st.integers(1, 20), st.just(3))))
    chunks = (draw(st.integers(1, h)), draw(st.integers(1, w)), 3)
    known = draw(st.floats(0, 1))  # share of the image's colours the fit's table knows
    return image, palette, chunks, known


@given(images_palettes_chunks())
@settings(max_examples=60, deadline=None)
def test_assign_is_exact_for_any_palette_image_and_chunking(case):
    image, palette, chunks, known = case
    keys, _ = histogram(image)
    keep = keys[: int(len(keys) * known)]
    fit = Fit(palette, keep, nearest(unpack(keep), palette).astype(np.uint16), {})
    labels = assign(da.from_array(image, chunks=chunks), fit, len(palette))
    expected = brute_force(image, palette)
    with dask.config.set(scheduler="synchronous"):
        assert_eq(labels, expected.astype(np.uint8))
    _, error = label_block(image, fit, np.dtype(np.uint8))
    assert error == ((image.astype(np.int64) - palette[expected]) ** 2).sum()


@pytest.mark.parametrize("k", [16, 128])
def test_oklab_labels_equal_brute_force_on_real_photos(photo, k):

    rows, cols = sample_positions(photo.shape[:2], 5000, 0)
    keys, counts = histogram(photo)
    fit = fit_palette(photo[rows, cols], keys, counts, k, random_state=0, space="oklab")
    labels, error = label_block(photo, fit, np.dtype(np.uint8))
    expected = oklab_brute_force(photo, fit.palette)
    assert np.array_equal(labels, expected)
    assert error == ((photo.astype(np.int64) - fit.palette[expected]) ** 2).sum()  # RGB error


@given(images_palettes_chunks())
@settings(max_examples=40, deadline=None)
def test_oklab_assign_is_exact_for_any_palette_image_and_chunking(case):
    """Colours the table lacks are labelled in the fit's space; the error stays in RGB."""

    image, palette, chunks, known = case
    keys, _ = histogram(image)
    keep = keys[: int(len(keys) * known)]
    labels = nearest(unpack(keep), palette, space="oklab").astype(np.uint16)
    fit = Fit(palette, keep, labels, {}, space="oklab")
    expected = oklab_brute_force(image, palette)
    with dask.config.set(scheduler="synchronous"):
        assert_eq(assign(da.from_array(image, chunks=chunks), fit, 20), expected.astype(np.uint8))
    _, error = label_block(image, fit, np.dtype(np.uint8))
    assert error == ((image.astype(np.int64) - palette[expected]) ** 2).sum()


@given(st.integers(0, 2**32 - 1), st.booleans())
@settings(max_examples=60, deadline=None)
def test_distinct_keys_equal_numpy_unique(seed, view):
    rng = np.random.default_rng(seed)
    height, width = (int(v) for v in rng.integers(1, 60, 2))
    # few colours repeated, or colours all over the cube (keys near 0 and 2**24 - 1 included)
    high = int(rng.choice([3, 256]))
    block = rng.integers(0, high, (height, 2 * width if view else width, 3)).astype(np.uint8)
    if view:
        block = block[:, ::2]  # a strided view, as a decoded image's chunks can be
    dtype = rng.choice([np.uint32, np.intp])
    positions = np.flatnonzero(rng.random(height * width) < rng.random()).astype(dtype)
    expected = np.unique(pack(block.reshape(-1, 3)[positions]))
    assert np.array_equal(distinct_keys(block, positions), expected)
