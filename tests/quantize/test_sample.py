import dask.array as da
import numpy as np
import pytest

from pipeline.job.graph import sample_and_counts
from pipeline.quantize.sample import sample_positions


def test_positions_are_distinct_in_range_and_in_raster_order():
    rows, cols = sample_positions((37, 53), 500, random_state=3)
    flat = rows * 53 + cols
    assert len(np.unique(flat)) == 500
    assert np.all(np.diff(flat) > 0)
    assert rows.max() < 37
    assert cols.max() < 53


def test_positions_depend_on_seed_only():
    a = sample_positions((100, 100), 50, random_state=1)
    b = sample_positions((100, 100), 50, random_state=1)
    c = sample_positions((100, 100), 50, random_state=2)
    assert np.array_equal(a[0], b[0])
    assert not np.array_equal(a[0] * 100 + a[1], c[0] * 100 + c[1])


def test_sample_larger_than_image_takes_every_pixel():
    rows, _cols = sample_positions((4, 5), 1000, random_state=0)
    assert len(rows) == 20


def test_positions_cover_the_whole_image():
    rows, cols = sample_positions((1000, 1000), 20_000, random_state=0)
    # uniform: every 100x100 tile gets about 200 samples
    tiles = np.bincount((rows // 100) * 10 + cols // 100, minlength=100)
    assert tiles.min() > 120
    assert tiles.max() < 280


@pytest.mark.parametrize("size", [5000, 3])  # 3: most chunks hold no sampled pixel
@pytest.mark.parametrize("chunks", [(427, 640, 3), (100, 97, 3), (33, 640, 3)])
def test_sample_equals_numpy_indexing_whatever_the_chunks(china, chunks, size):
    image = da.from_array(china, chunks=chunks)
    got = sample_and_counts(image, size, 7, 10_000)[0].compute()
    rows, cols = sample_positions(china.shape[:2], size, random_state=7)
    assert np.array_equal(got, china[rows, cols])
