import dask.array as da
import numpy as np
import pytest
from dask.array.utils import assert_eq

from pipeline.assign import assign, assign_block, label_dtype
from pipeline.colours import histogram
from pipeline.fit import Fit, fit_palette
from pipeline.sample import sample_positions
from tests.oracles import brute_force


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


@pytest.mark.parametrize(("colors", "dtype"), [(1, np.uint8), (256, np.uint8), (257, np.uint16)])
def test_label_dtype(colors, dtype):
    assert label_dtype(colors) == dtype
