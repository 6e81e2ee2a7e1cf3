"""EXIF orientation kernels against Pillow's ``ImageOps.exif_transpose`` (the oracle)."""

import io

import dask.array as da
import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline.inputs.orientation import describe, orient, shown_shape, swaps_axes, valid

ORIENTATIONS = range(1, 9)


def pillow_shown(pixels, orientation):
    """What Pillow shows of ``pixels`` stored in a PNG whose EXIF says ``orientation``."""
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    data = io.BytesIO()
    image.save(data, "png", exif=exif)
    with Image.open(io.BytesIO(data.getvalue())) as opened:
        return np.asarray(ImageOps.exif_transpose(opened))


@pytest.fixture(scope="module")
def stored():
    """An asymmetric 37 x 53 RGB image: any wrong turn or mirror changes it."""
    return np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_orient_is_pillows_exif_transpose(stored, orientation):
    expected = pillow_shown(stored, orientation)
    turned = orient(stored, orientation)
    assert turned.shape == expected.shape == shown_shape(stored.shape, orientation)
    assert np.array_equal(turned, expected)
    assert swaps_axes(orientation) == (expected.shape[:2] != stored.shape[:2])
    assert np.shares_memory(turned, stored)  # a view: nothing copied


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_orient_gray_is_pillows_exif_transpose(stored, orientation):
    gray = np.ascontiguousarray(stored[:, :, 1])
    assert np.array_equal(orient(gray, orientation), pillow_shown(gray, orientation))


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_orient_on_dask_is_lazy_and_the_same(stored, orientation):
    lazy = da.from_array(stored, chunks=(16, 20, 3))
    turned = orient(lazy, orientation)
    assert isinstance(turned, da.Array)  # nothing computed
    assert turned.shape == shown_shape(stored.shape, orientation)
    assert turned.dask.keys() >= lazy.dask.keys()  # built on the chunks, not on a computed copy
    assert np.array_equal(turned.compute(), pillow_shown(stored, orientation))


def test_orientation_values_and_words():
    assert [valid(v) for v in (None, 0, 9, "6", 6.0, 3, 8)] == [1, 1, 1, 1, 1, 3, 8]
    assert describe(1) == ""
    assert describe(6) == "EXIF orientation 6 (rotated 90 clockwise)"
    assert describe(8) == "EXIF orientation 8 (rotated 90 counter-clockwise)"
    assert shown_shape((4, 9, 3), 5) == (9, 4, 3)
    assert shown_shape((4, 9), 4) == (4, 9)
