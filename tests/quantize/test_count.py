"""Colour counts: every pixel up to a limit, a regular grid above it, whatever the chunking."""

import dask.array as da
import numpy as np
import pytest

from pipeline.job.graph import sample_and_counts
from pipeline.quantize.colours import histogram
from pipeline.quantize.count import grid_stride


@pytest.mark.parametrize("chunks", [(1024, 1024, 3), (97, 131, 3), (50, 640, 3)])
@pytest.mark.parametrize("limit", [10**9, 273_280, 50_000, 1_000, 1])
def test_counts_are_the_grid_histogram_whatever_the_chunking(china, chunks, limit):
    stride = grid_stride(china.shape[:2], limit)
    grid = china[::stride, ::stride]
    assert grid.shape[0] * grid.shape[1] <= limit
    assert stride == 1 or china[:: stride - 1, :: stride - 1, 0].size > limit  # smallest stride
    _, lazy = sample_and_counts(da.from_array(china, chunks=chunks), 100, 0, limit)
    keys, counts = lazy.compute()
    expected_keys, expected_counts = histogram(grid)
    assert np.array_equal(keys, expected_keys)
    assert np.array_equal(counts, expected_counts)
